"""Off-site copies per guest, pure: which PBS sync job copies a guest's backup group where
(group filters, namespaces, pull or push), how its last run ended (a sync that "finished" with
``sync failed with some errors.`` names the groups that failed), and each guest's newest copy on
each off-site target against its off-site RPO."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from pydantic import BaseModel, Field

from labops.backups.models import BackupGuest
from labops.backups.plan import human_age
from labops.config.policies.backups import OffsitePolicy
from labops.models.pbs import PbsSyncJob

_FAILED_GROUP = re.compile(r"sync group (?P<group>(?:vm|ct|host)/\S+?) failed - (?P<why>.*)$")
PARTIAL = "sync failed with some errors."


def group_of(guest: BackupGuest) -> str:
    """The guest's PBS backup group, ``ct/101`` or ``vm/100``."""
    return f"{'ct' if guest.type == 'lxc' else 'vm'}/{guest.vmid}"


def _matches(rule: str, group: str) -> bool:
    kind, _, value = rule.partition(":")
    if kind == "type":
        return group.split("/", 1)[0] == value
    if kind == "group":
        return group == value
    if kind == "regex":
        try:
            return re.search(value, group) is not None
        except re.error:
            return False  # a filter PBS would refuse matches nothing here either
    return False


def filter_allows(filters: Sequence[str], group: str) -> bool:
    """PBS's group-filter rule: with include filters a group must match one of them; then any
    matching ``exclude:`` filter drops it. No filter: every group."""
    includes = [f for f in filters if not f.startswith("exclude:")]
    excludes = [f.removeprefix("exclude:") for f in filters if f.startswith("exclude:")]
    if includes and not any(_matches(f, group) for f in includes):
        return False
    return not any(_matches(f, group) for f in excludes)


def _path(store: str, ns: str | None) -> str:
    return f"{store}/{ns}" if ns else store


def target_of(job: PbsSyncJob, on: str | None = None) -> str:
    """Where a job's copies land, as the policy names targets: a push job's
    ``remote:store[/ns]``, a pull job's local ``store[/ns]``, or ``on:store[/ns]`` for a pull
    job that runs on the off-site PBS named ``on``."""
    if job.sync_direction == "push":
        return f"{job.remote}:{_path(job.remote_store, job.remote_ns)}"
    return f"{on}:{_path(job.store, job.ns)}" if on else _path(job.store, job.ns)


def offsite_pulls(jobs: Iterable[PbsSyncJob], name: str, home_remote: str) -> list[PbsSyncJob]:
    """The pull jobs of the off-site PBS ``name`` that copy from the home PBS (its remote
    ``home_remote``), their ids prefixed ``name/`` to keep them apart from the home PBS's."""
    return [
        j.model_copy(update={"id": f"{name}/{j.id}"})
        for j in jobs
        if j.sync_direction != "push" and j.remote == home_remote
    ]


def parse_target(target: str) -> tuple[str | None, str, str | None]:
    """``remote:store/ns`` -> (remote, store, ns); a target on this PBS has no remote, the root
    namespace is None."""
    remote, sep, path = target.partition(":")
    if not sep:
        remote, path = "", target
    store, _, ns = path.partition("/")
    return remote or None, store, ns or None


def source_of(job: PbsSyncJob) -> str:
    """What a job copies from: a push job's local ``store[/ns]``, a pull job's remote one."""
    if job.sync_direction == "push":
        return _path(job.store, job.ns)
    prefix = f"{job.remote}:" if job.remote else ""
    return prefix + _path(job.remote_store, job.remote_ns)


def _in_namespace(source: str, primary: str, max_depth: int | None) -> bool:
    """A job reading ``source`` sees the guest's backups at ``primary`` (the same namespace,
    or one below it within ``max_depth``; PBS's default depth is unlimited)."""
    if source == primary:
        return True
    if not primary.startswith(source + "/"):
        return False
    depth = primary[len(source) + 1 :].count("/") + 1
    return max_depth is None or depth <= max_depth


class SyncRun(BaseModel):
    """How a sync job's last run ended."""

    job: str
    target: str
    state: str = Field(..., description="ok | partial | failed | never")
    detail: str = ""
    failed_groups: dict[str, str] = Field(default_factory=dict, description="group -> why")


def sync_run(job: PbsSyncJob, log: Iterable[str] = (), on: str | None = None) -> SyncRun:
    """Judge a job's last run from its state and task log (``on``: the off-site PBS a pull job
    runs on). ``sync failed with some errors.`` is PBS's end of a run where some groups synced
    and others did not: each failed group is named in the log (``sync group vm/100 failed -
    ...``), pull or push alike."""
    target = target_of(job, on)
    state = job.last_run_state
    if state is None or job.last_run_endtime is None:
        return SyncRun(job=job.id, target=target, state="never", detail="never ran")
    failed: dict[str, str] = {}
    for line in log:
        m = _FAILED_GROUP.search(line.strip())
        if m:
            failed[m.group("group")] = m.group("why")
    if state == "OK" or state.startswith("WARNINGS"):
        return SyncRun(job=job.id, target=target, state="ok", detail=state)
    if state.strip() == PARTIAL or failed:
        return SyncRun(
            job=job.id, target=target, state="partial", detail=state, failed_groups=failed
        )
    return SyncRun(job=job.id, target=target, state="failed", detail=state)


class OffsiteStatus(StrEnum):
    OK = "ok"
    STALE = "stale"  # newest copy older than the off-site RPO
    NO_COPY = "no-copy"  # covered, but the target holds no copy of the group
    NO_JOB = "no-job"  # no sync job copies the group to the target
    SYNC_FAILED = "sync-failed"  # the last run of a job covering it failed (for its group)
    DISABLED = "disabled"  # the job that copies it is disabled (PVE storage replication)
    UNKNOWN = "unknown"  # could not check


class OffsiteRow(BaseModel):
    """One guest on one off-site target."""

    vmid: int
    name: str = ""
    target: str
    rpo_s: float
    newest: float | None = None
    age_s: float | None = None
    jobs: list[str] = Field(default_factory=list, description="Sync jobs covering the guest.")
    problem: str | None = None
    unknown: str | None = Field(None, description="Why the copy could not be checked.")
    status: OffsiteStatus = OffsiteStatus.OK

    @property
    def label(self) -> str:
        return f"guest {self.vmid} ({self.name})" if self.name else f"guest {self.vmid}"


def offsite_rpo(guest: BackupGuest, policy: OffsitePolicy) -> float:
    """The guest's off-site RPO: its own entry, else the shortest of its tags', else default."""
    if guest.vmid in policy.guests:
        return policy.guests[guest.vmid]
    tagged = [s for tag, s in policy.tier_tags.items() if tag.lower() in guest.tags]
    return min(tagged) if tagged else policy.rpo


def offsite_rows(
    guests: Sequence[BackupGuest],
    primary: str,
    jobs: Sequence[PbsSyncJob],
    runs: Mapping[str, SyncRun],
    newest: Mapping[str, Mapping[str, float]],
    policy: OffsitePolicy,
    now: float,
    unreadable: Mapping[str, str] | None = None,
    where: Mapping[int, Sequence[str]] | None = None,
    on: Mapping[str, str] | None = None,
    jobs_unread: Mapping[str, str] | None = None,
) -> list[OffsiteRow]:
    """Every watched guest on every off-site target. ``primary``: where its backups live
    (``store[/ns]``), unless ``where`` names a guest's own places (its PBS storages' datastore
    and namespace: a job reading any of them covers it); ``newest``: target -> group -> newest
    copy time on that target (a target missing from it could not be read: no age is claimed;
    ``unreadable`` says why); ``on``: job id -> the off-site PBS it runs on (its pull jobs);
    ``jobs_unread``: off-site PBS name -> why its sync jobs could not be read (its targets
    without a job are then unknown, not uncovered). A copy older than the guest's RPO, no copy,
    no job covering the guest, or a last run that failed for its group (or failed outright) is
    a problem."""
    hosts = on or {}

    def lands(j: PbsSyncJob) -> str:
        return target_of(j, hosts.get(j.id))

    targets = list(policy.targets) or sorted({lands(j) for j in jobs})
    out: list[OffsiteRow] = []
    for g in guests:
        if g.template or any(t in g.tags for t in policy.exclude_tags):
            continue
        group, rpo = group_of(g), offsite_rpo(g, policy)
        places = (where or {}).get(g.vmid) or [primary]
        for target in targets:
            covering = [
                j
                for j in jobs
                if lands(j) == target
                and any(
                    _in_namespace(source_of(j).rpartition(":")[2], place, j.max_depth)
                    for place in places
                )
                and filter_allows(j.group_filter, group)
            ]
            row = OffsiteRow(
                vmid=g.vmid, name=g.name, target=target, rpo_s=rpo, jobs=[j.id for j in covering]
            )
            seen = newest.get(target)
            when = seen.get(group) if seen is not None else None
            if when is not None:
                row.newest, row.age_s = when, now - when
            failed = [_failed_for(runs[j.id], group) for j in covering if j.id in runs]
            failed = [f for f in failed if f]
            unread = (jobs_unread or {}).get(parse_target(target)[0] or "")
            if not covering and unread is not None:  # its jobs could not be read: unknown
                row.unknown = f"sync jobs copying to {target} could not be read: {unread}"
                row.status = OffsiteStatus.UNKNOWN
            elif not covering:
                row.problem = f"no sync job copies {group} to {target}"
                row.status = OffsiteStatus.NO_JOB
            elif seen is None:  # could not check: neither fresh nor stale
                why = (unreadable or {}).get(target)
                row.unknown = f"{target} could not be read" + (f": {why}" if why else "")
                row.status = OffsiteStatus.UNKNOWN
            elif row.age_s is None:
                row.problem, row.status = f"no copy of {group} on {target}", OffsiteStatus.NO_COPY
            elif row.age_s > rpo:
                row.problem = (
                    f"newest copy on {target} is {human_age(row.age_s)} old "
                    f"(off-site RPO {human_age(rpo)})"
                )
                row.status = OffsiteStatus.STALE
            if failed:  # known even when the target is not: named beside any other problem
                row.problem = "; ".join(p for p in (row.problem, failed[0]) if p)
                row.status = OffsiteStatus.SYNC_FAILED
            out.append(row)
    return out


def _failed_for(run: SyncRun, group: str) -> str | None:
    """Why ``run`` failed for ``group``: the group's own line of a partial run, or the whole
    run's failure; None when it synced the group (or its failed groups are not named)."""
    if group in run.failed_groups:
        return f"sync job {run.job} failed for {group}: {run.failed_groups[group]}"
    if run.state == "failed":
        return f"sync job {run.job} failed: {run.detail}"
    return None


def unchecked_rows(
    guests: Sequence[BackupGuest], policy: OffsitePolicy, reason: str
) -> list[OffsiteRow]:
    """Every watched guest's off-site copies when the sync jobs could not be read: unknown on
    each configured target (on one row named ``?`` when the policy names none), never fine."""
    out: list[OffsiteRow] = []
    for g in guests:
        if g.template or any(t in g.tags for t in policy.exclude_tags):
            continue
        out += [
            OffsiteRow(
                vmid=g.vmid,
                name=g.name,
                target=target,
                rpo_s=offsite_rpo(g, policy),
                unknown=reason,
                status=OffsiteStatus.UNKNOWN,
            )
            for target in policy.targets or ["?"]
        ]
    return out
