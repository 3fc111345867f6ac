"""One lab's names on a Prefect server, a VictoriaMetrics and an MQTT bus shared with other labs.

Everything a run leaves where another lab could see it is named through :func:`scoped_name`
(Prefect artifact keys, variables, global concurrency limits) or :func:`lab_slug` (an MQTT topic
level, a deployment's name); metrics carry the lab's own name as the ``lab`` label, and the lab's
deployments and flow runs the tag :func:`lab_tag`. Two labs never share a name, so they never
read each other's results, hold each other's slots or replace each other's deployments.

The slug is what all of them accept (Prefect keys and variable names: lowercase letters, digits
and dashes; an MQTT topic level without ``/``, ``+`` or ``#``). A lab name that is already a
slug is used as it is; any other gets a short hash of the exact name appended, so two names
that slug the same ("Home Lab", "home-lab") still never collide.
"""

from __future__ import annotations

import hashlib
import re

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
PREFIX = "labops"


def lab_slug(lab: str) -> str:
    """``homelab`` -> ``homelab``; ``Home Lab`` -> ``home-lab-<6 hex>``; at most 47 characters."""
    if _SLUG.match(lab):
        return lab
    base = _NOT_SLUG.sub("-", lab.lower()).strip("-")[:40].strip("-") or "lab"
    digest = hashlib.sha256(lab.encode()).hexdigest()[:6]
    return f"{base}-{digest}"


def _part(text: str) -> str:
    return _NOT_SLUG.sub("-", text.lower()).strip("-") or "x"


def scoped_name(lab: str, *parts: str, prefix: str = PREFIX) -> str:
    """``labops-<lab>-<part>-...``: an artifact key, variable or concurrency-limit name of one
    lab. ``scoped_name("homelab", "backups", "table")`` -> ``labops-homelab-backups-table``."""
    return "-".join([_part(prefix), lab_slug(lab), *(_part(p) for p in parts)])


def slug_prefix(slug: str, prefix: str = PREFIX) -> str:
    """``labops-<slug>-``: how every :func:`scoped_name` of the lab with this slug begins."""
    return f"{_part(prefix)}-{slug}-"


def artifact_key(lab: str, operation: str, view: str) -> str:
    """The key of one view of an operation's report (``table``, ``summary``): what
    ``tasks.publish`` writes and the security digest reads back, for this lab only."""
    return scoped_name(lab, operation, view)


def deployment_name(lab: str) -> str:
    """The name of every deployment of one lab: ``backups/homelab`` is the lab ``homelab``'s
    deployment of the flow ``backups``. Prefect keys a deployment by flow and name, so two labs
    deploying to one server keep a deployment each (a slug has none of Prefect's banned
    ``/ % & > <``)."""
    return lab_slug(lab)


def lab_tag(lab: str) -> str:
    """``lab:<slug>``: the tag of the lab's deployments and of every flow run they (or
    ``labops run``) start; the bridge and housekeeping tell the lab's runs apart by it."""
    return f"lab:{lab_slug(lab)}"


TAG_PREFIX = "lab:"


def labs_of_tags(tags: list[str] | set[str]) -> set[str]:
    """The lab slugs a run's (or deployment's) tags name; empty for a run of no lab."""
    return {t.removeprefix(TAG_PREFIX) for t in tags if t.startswith(TAG_PREFIX)}
