"""The jobs that run inside a patch window: every PVE backup job, PBS verify, prune, sync and
garbage collection job (GC: the datastore's ``gc-schedule``) and
labops schedule whose run overlaps [now, window end) is listed in the report; a PVE backup job
touching a node being patched refuses that node and its guests (a job whose schedule cannot be
read counts as touching it). Decisions in ``labops/patching/overlap.py``. Reads only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from blocks.context import LabContext
from labops.config.policies.platform import run_minutes
from labops.flow_params import CHANGES_LAB
from labops.patching import plan
from labops.patching.overlap import Job, JobKind, JobOverlap, overlaps
from labops.patching.report import PatchReport
from labops.patching.rollout import apply_row
from labops.reports import Failure
from tasks.pve import client as pve_client

_PATCH_RUNS = {"patch-apply", "patch_apply"}


def jobs_of(ctx: LabContext, start: datetime, end: datetime, report: PatchReport) -> list[Job]:
    """Every scheduled job that could run in the window; a system whose jobs cannot be listed
    is a failure of the run (unknown is never "no overlap")."""
    jobs: list[Job] = []
    if ctx.configured("proxmox"):
        try:
            pve = pve_client(ctx.pve_block())
            homes = {g.vmid: g.node for g in pve.guests()}
            for j in pve.backup_jobs():
                if not j.enabled or not j.schedule:
                    continue
                nodes = [j.node] if j.node else None
                if nodes is None and j.vmid and not j.all:
                    wanted = {int(v) for v in j.vmid.split(",") if v.strip().isdigit()}
                    nodes = sorted({homes[v] for v in wanted if v in homes})
                jobs.append(Job(kind="pve-backup", name=j.id, schedule=j.schedule, nodes=nodes))
        except Exception as exc:
            report.failures.append(
                Failure(entity="backup jobs", reason=f"overlap check: {exc}", system="proxmox")
            )
    if ctx.configured("pbs"):
        try:
            pbs = ctx.pbs_block().get_client()
            listed: list[tuple[JobKind, str, str | None]] = [
                *(("pbs-verify", j.id, j.schedule) for j in pbs.verify_jobs()),
                *(("pbs-prune", j.id, j.schedule) for j in pbs.prune_jobs()),
                # pull and push sync jobs of every datastore
                *(("pbs-sync", j.id, j.schedule) for j in pbs.sync_jobs()),
                # garbage collection is no job of its own: its schedule is the datastore's
                *(("pbs-gc", d.name, d.gc_schedule) for d in pbs.datastore_configs()),
            ]
            jobs += [Job(kind=k, name=n, schedule=s) for k, n, s in listed if s]
        except Exception as exc:
            report.failures.append(
                Failure(entity="PBS jobs", reason=f"overlap check: {exc}", system="pbs")
            )
    jobs += _labops_jobs(ctx, start, end)
    return jobs


def _labops_jobs(ctx: LabContext, start: datetime, end: datetime) -> list[Job]:
    """The lab's own lab-changing schedules (patch apply itself left out)."""
    from prefect.server.schemas.schedules import CronSchedule

    platform = ctx.config.platform
    out = []
    for name, sched in sorted(platform.schedules.items()):
        if not sched.enabled or name not in CHANGES_LAB or name in _PATCH_RUNS:
            continue
        minutes = run_minutes(platform, name)
        cron = CronSchedule(cron=sched.cron, timezone=ctx.config.lab.timezone)
        since = start - timedelta(minutes=minutes)
        starts = list(cron._get_dates_generator(n=100, start=since, end=end))
        out.append(
            Job(kind="labops", name=name, schedule=sched.cron, minutes=minutes, starts=starts)
        )
    return out


def refused_nodes(found: list[JobOverlap], nodes: list[str]) -> dict[str, str]:
    """node -> the backup job overlapping the window that refuses it."""
    out: dict[str, str] = {}
    for o in found:
        if o.refused:
            for n in o.job.nodes if o.job.nodes is not None else nodes:
                out.setdefault(n, o.line())
    return out


def check_overlaps(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    start: datetime,
    end: datetime | None,
) -> plan.RolloutPlan:
    """List the jobs running while the apply is expected to run (from ``start`` for the plan's
    length, at most to the window's ``end``) in the report; the rollout less the hosts of nodes
    a backup job runs on then (each reported as skipped and as a failure)."""
    # the span the apply is expected to run: from now for the plan's length, within the window
    span = start + plan.plan_length(rollout, ctx.config.patching.step_estimate_s)
    end = min(end, span) if end is not None else span
    # PVE and PBS read their calendar events in local time: the lab's zone
    zone = ZoneInfo(ctx.config.lab.timezone)
    start, end = start.astimezone(zone), end.astimezone(zone)
    nodes = sorted({h.node or h.name for h in rollout.hosts})
    found = overlaps(jobs_of(ctx, start, end, report), start, end, nodes)
    if ctx.config.patching.overlaps == "list":  # named, never refused
        found = [o.model_copy(update={"refused": False}) for o in found]
    report.overlaps = [o.line() for o in found]
    refused = refused_nodes(found, nodes)
    if not refused:
        return rollout
    steps = []
    for s in rollout.steps:
        keep = []
        for h in s.hosts:
            why = refused.get(h.node or h.name)
            if why is None:
                keep.append(h)
                continue
            report.applied.append(apply_row(h, s, outcome="skipped", detail=why))
            report.failures.append(Failure(entity=f"host {h.name}", reason=f"not patched: {why}"))
        if keep:
            steps.append(s.model_copy(update={"hosts": keep}))
    return plan.RolloutPlan(steps=steps)
