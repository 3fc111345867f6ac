"""The backup gate of a patch run (``patching.require_backup``): before a step's guests are
upgraded, each must have a recent enough good backup; labops backs up the others now, within the
backups' per-node/per-storage limits, and waits. A guest still without one is skipped and
reported, never patched. Decisions in ``labops/patching/gate.py``; vzdump through the backups'
own runner (``labops/backups/limits.py``) and task (``tasks.pve.backup_guests``).

CHANGES THE LAB (writes backups), except in a dry run, which only says what it would back up.
"""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from blocks.context import LabContext
from blocks.proxmox import ProxmoxCredentials
from labops.backups.limits import Submit, Tell, run_backups
from labops.backups.models import BackupCopy, BackupOutcome, GuestPlan, PlanAction
from labops.backups.plan import default_storage, policy_for
from labops.backups.vzdump_job import VzdumpSettings
from labops.errors import ConfigError, LabopsError
from labops.patching import gate, plan
from labops.patching.report import PatchReport
from labops.patching.rollout import apply_row
from labops.reports import Failure
from tasks.pve import backup_guests, list_guests, list_nodes, scan_backups

Verdicts = dict[str, gate.GateVerdict]


def gated(
    ctx: LabContext, report: PatchReport, step: plan.Step, dry_run: bool = False
) -> tuple[plan.Step, Verdicts]:
    """The step less the guests the gate refuses (each reported as skipped and as a failure),
    and the verdict of every guest it let through (its backup is the rollback point)."""
    policy = ctx.config.patching.require_backup
    guests = [h for h in step.hosts if h.kind in ("container", "vm") and h.vmid is not None]
    if not policy.enabled or not guests:
        return step, {}
    verdicts, refused = _verdicts(ctx, report, guests, dry_run)
    for h in guests:
        if h.name in refused:
            reason = f"backup gate: {refused[h.name]}"
            report.applied.append(apply_row(h, step, outcome="skipped", detail=reason))
            report.failures.append(
                Failure(entity=f"host {h.name}", reason=f"not patched: {reason}")
            )
    kept = [h for h in step.hosts if h.name not in refused]
    return step.model_copy(update={"hosts": kept}), verdicts


def _verdicts(
    ctx: LabContext, report: PatchReport, guests: list[plan.PlanHost], dry_run: bool
) -> tuple[Verdicts, dict[str, str]]:
    """(verdicts of the guests that pass, why each other guest is refused)."""
    if not ctx.configured("proxmox"):
        return {}, {h.name: "cannot list backups: proxmox is not configured" for h in guests}
    policy = ctx.config.patching.require_backup
    try:
        storage = policy.storage or default_storage(ctx.config.backups, ctx.config.systems.pbs)
    except ConfigError as exc:
        return {}, {h.name: str(exc) for h in guests}
    pve = ctx.pve_block()
    copies, why_not = _backups(pve, storage)
    if why_not:  # unknown is never "fine": nobody is patched on a backup nobody could see
        return {}, {h.name: f"cannot list the backups on {storage}: {why_not}" for h in guests}
    now = time.time()
    first = {h.name: gate.judge(h.vmid or 0, copies, policy, now) for h in guests}
    needs = [h for h in guests if first[h.name].state == "needs-backup"]
    tried: dict[str, str] = {}
    if needs and dry_run:
        report.gate_backups += [f"{h.name}: would back up to {storage} now" for h in needs]
    elif needs:
        outcomes = _back_up(ctx, pve, needs, storage)
        for h in needs:
            done = outcomes.get(h.vmid or 0)
            ok = done is not None and done.status in ("ok", "warning", "fresh")
            reason = done.reason if done is not None and done.reason else "no outcome"
            report.gate_backups.append(
                f"{h.name}: vzdump to {storage}: " + (done.status if ok and done else reason)
            )
            if not ok:
                tried[h.name] = reason
        copies, why_not = _backups(pve, storage)
    now = time.time()
    verdicts: Verdicts = {}
    refused: dict[str, str] = {}
    for h in guests:
        if dry_run and first[h.name].state == "needs-backup":
            verdicts[h.name] = first[h.name]
            continue
        v = gate.judge(h.vmid or 0, copies, policy, now, tried.get(h.name))
        if v.state == "needs-backup":  # backed up, yet not listed: not a rollback point
            v = v.model_copy(
                update={"state": "refused", "reason": f"{v.reason}; the new backup is not listed"}
            )
        if v.passed:
            verdicts[h.name] = v
        else:
            refused[h.name] = v.reason
    get_run_logger().info("backup gate: %d guests pass, %d refused", len(verdicts), len(refused))
    return verdicts, refused


def _backups(pve: ProxmoxCredentials, storage: str) -> tuple[list[BackupCopy], str]:
    """The backups on ``storage`` (as every online node lists it), or why they could not be
    listed."""
    try:
        online = sorted(n.node for n in list_nodes(pve) if n.online)
        copies, problems = scan_backups(pve, [storage], online)
    except LabopsError as exc:
        return [], str(exc)
    return copies, "; ".join(p.reason for p in problems)


def _back_up(
    ctx: LabContext, pve: ProxmoxCredentials, needs: list[plan.PlanHost], storage: str
) -> dict[int, BackupOutcome]:
    """vzdump every guest of ``needs`` to ``storage`` now and wait (CHANGES THE LAB), within
    the backups policy's per-node and per-storage limits."""
    backups = ctx.config.backups
    wanted = {h.vmid for h in needs}
    todo = []
    for g in list_guests(pve):
        if g.vmid in wanted:
            gp = policy_for(g, backups, storage).model_copy(update={"storage": storage})
            todo.append(
                GuestPlan(guest=g, action=PlanAction.BACKUP, reason="patching gate", policy=gp)
            )
    return run_backups(todo, backups, ctx.config.lab.name, time.time(), _submitter(pve))


def _submitter(block: ProxmoxCredentials) -> Submit:
    def submit(
        jobs: list[tuple[GuestPlan, VzdumpSettings]], tell: Tell
    ) -> PrefectFuture[list[BackupOutcome]]:
        first = jobs[0][1]
        return backup_guests.submit(
            block, jobs[0][0].guest.node, first.storage, [(p.guest, s) for p, s in jobs], tell
        )

    return submit
