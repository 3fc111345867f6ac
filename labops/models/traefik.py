"""Traefik routers (``/api/http/routers`` items) and the host names their rules match.

Pure: no I/O. A rule is Traefik's matcher language: ``Host(`a`)``, ``Host(`a`, `b`)`` (v2),
``Host(`a`) || Host(`b`)``, ``HostSNI(`x`)`` (TCP), combined with ``&&``, ``||``, ``!`` and
other matchers (``PathPrefix(...)``). Only literal host names can be probed: ``HostRegexp``,
``HostSNI(`*`)`` and negated hosts are left out.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_MATCHER = re.compile(r"(!?)\s*(HostSNI|Host)\s*\(([^)]*)\)")
_ARG = re.compile(r"`([^`]*)`|\"([^\"]*)\"")


class RouterTls(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    options: str | None = None
    cert_resolver: str | None = Field(None, alias="certResolver")


class TraefikRouter(BaseModel):
    """One router as the API lists it (unknown fields ignored: v2 and v3 differ)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    rule: str = ""
    service: str | None = None
    status: str = "enabled"
    provider: str | None = None
    entry_points: list[str] = Field(default_factory=list, alias="entryPoints")
    tls: RouterTls | None = None

    @property
    def probed(self) -> bool:
        """TLS routers that Traefik actually serves (a disabled router has no certificate)."""
        return self.tls is not None and self.status != "disabled"


def rule_hosts(rule: str) -> list[str]:
    """Literal host names a rule matches, in order, without duplicates."""
    out: list[str] = []
    for negated, _kind, args in _MATCHER.findall(rule):
        if negated:
            continue
        for m in _ARG.finditer(args):
            host = (m.group(1) if m.group(1) is not None else m.group(2)).strip().lower()
            if host and host != "*" and not any(c in host for c in "*{}^$|") and host not in out:
                out.append(host)
    return out


def parse_routers(items: list[dict[str, object]]) -> list[TraefikRouter]:
    """Validate the API's router objects; a malformed item raises naming the router."""
    routers = []
    for i, item in enumerate(items):
        try:
            routers.append(TraefikRouter.model_validate(item))
        except ValueError as exc:
            name = item.get("name", f"#{i}") if isinstance(item, dict) else f"#{i}"
            raise ValueError(f"traefik router {name}: {exc}") from None
    return routers


def tls_hosts(routers: list[TraefikRouter]) -> list[tuple[str, str]]:
    """(host, router name) for every host of every served TLS router."""
    return [(h, r.name) for r in routers if r.probed for h in rule_hosts(r.rule)]
