"""Patch sweep: what is pending on every node and container (check), and applying it safely
(apply: approval, maintenance window, snapshot, canaries, batches, rollback, reboots).

The runbook, step by step; its steps in flows/patch_steps.py, SSH and Proxmox calls in tasks/,
decisions in labops/patching/plan.py (the window in windows.py), report rows in
labops/patching/rollout.py, each tool's commands and their parsing in labops/patching/<tool>.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from blocks.context import LabContext
from flows import patch_steps as steps
from flows.patch_overlap import check_overlaps
from labops.flow_params import ConfigPath, HostList
from labops.limits import SlotBusy, maintenance_slot
from labops.patching import plan, windows
from labops.patching.report import PatchReport
from labops.patching.rollout import window_stop
from labops.reports import Failure
from tasks.prefect_admin import finish_after_expired_pause
from tasks.publish import publish_report

NOTE_MAX = 500
"""Longest approval note the Resume form accepts (characters)."""


class PatchApproval(RunInput):
    """The operator's answer to a patch plan (the Resume form in the Prefect UI)."""

    approve: bool = Field(False, description="Apply the plan (unticked: reject it).")
    exclude_hosts: list[str] = Field(default_factory=list, description="Leave these hosts out.")
    security_only: bool = Field(
        False,
        description="Apply only security updates (narrows only: a plan of security updates "
        "only is never widened to all updates).",
    )
    canaries_only: bool = Field(
        False, description="Apply the canary step only (the rest waits for a later run)."
    )
    # Free text from the form or a Telegram name: bounded here, refused by the form beyond it,
    # and escaped wherever the report shows it.
    note: str = Field("", max_length=NOTE_MAX, description="Why (kept in the report).")


@flow(
    name="patch-check",
    task_runner=ThreadPoolTaskRunner(max_workers=4),  # type: ignore[arg-type]
)
def patch_check(
    config: ConfigPath | None = None,
    refresh: bool | None = None,
    hosts: HostList | None = None,
) -> PatchReport | State:
    """Check pending updates on every Proxmox node and running container. Reads only, except
    with ``patching.stopped_containers: start-check-stop``, which CHANGES THE LAB for the check:
    a stopped container is started, checked and stopped again. ``refresh`` updates the hosts'
    package lists (apt-get/apk update), nothing else.

    Per host: optionally refresh the package lists (waiting for a held apt lock), then one
    combined command: upgradable packages with versions and suites (security = a ``-security``
    suite), held packages, reboot-required and its packages, ``needrestart -b``, os-release
    (end-of-life releases flagged). Unreachable hosts, refused host keys and failed logins are
    reported as such, never as up to date. With ``patching.cves``: the CVEs each pending update
    fixes (OSV, Debian tracker, CISA KEV), ranked known-exploited first, then severity x
    exposure (Traefik routers).

    Args:
        config: labops config path (None: LABOPS_CONFIG or ./labops.yaml).
        refresh: refresh package lists first (None: ``patching.refresh``).
        hosts: check only these hosts (None: all).

    Returns:
        The PatchReport (compliance table, metrics, notification).
    """
    ctx = LabContext.load(config)
    report = PatchReport(operation="patch_check", mode="check")
    do_refresh = ctx.config.patching.refresh if refresh is None else refresh
    steps.check(ctx, report, do_refresh, hosts)
    steps.cves(ctx, report)  # CVEs fixed by the pending updates, KEV flags, exposure
    return publish_report(report, ctx.delivery())


# -- apply ----------------------------------------------------------------------------------------


def _run_key() -> str:
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
        return str(run.id).split("-")[0] if run else datetime.now(UTC).strftime("%Y%m%d%H%M")
    except Exception:
        return datetime.now(UTC).strftime("%Y%m%d%H%M")


def _is_scheduled() -> bool:
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
        return bool(run and run.auto_scheduled)
    except Exception:
        return False


def now() -> datetime:
    """The flow's clock (the maintenance window is asked against it; tests replace it)."""
    return datetime.now(UTC)


@flow(
    name="patch-apply",
    task_runner=ThreadPoolTaskRunner(max_workers=16),  # type: ignore[arg-type]
)
def patch_apply(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    security_only: bool | None = None,
    hosts: HostList | None = None,
) -> PatchReport | State:
    """Apply pending updates after approval, inside a maintenance window (CHANGES HOSTS).

    Checks every host, plans the rollout (canaries, then batches with at most N containers per node,
    then the nodes one at a time), publishes the plan (table artifact ``labops-<lab>-patch-plan-
    table`` and a summary) and pauses for approval (approve, narrow or reject; scheduled runs may be
    pre-approved by policy). On approval the hosts are checked again and only what the plan showed
    is applied. The window is asked again after approval and before every step and reboot. Per host:
    skip if being backed up (containers) or busy (nodes: backup, restore, migration, a locked
    guest), LXC snapshot named for the run, upgrade (nodes: dist-upgrade, detached on the node and
    polled, with pending ``exclusions.packages`` held for its duration), post-check, roll back on
    failure. Stops past the failure limit; reboots by policy; deletes snapshots of healthy hosts
    after the configured time.

    A dry run changes nothing: no package-list refresh, no start of a stopped container, no
    snapshot, no deletion; each host runs the simulation of the very command apply would run
    (``apt-get -s`` / ``apk upgrade -s``, holds simulated by pinning the installed version).

    Args:
        config: labops config path.
        dry_run: plan and simulate only.
        security_only: only security updates (None: ``patching.security_only``).
        hosts: limit the run to these hosts.
    """
    ctx = LabContext.load(config)
    policy = ctx.config.patching
    report = PatchReport(operation="patch_apply", mode="apply", dry_run=dry_run)
    window = windows.WindowGuard(policy.windows, lambda: now())
    # 0. never outside the maintenance window (a dry run may look at any time)
    if not dry_run and _refused_outside_window(report, window):
        return publish_report(report, ctx.delivery())
    run_key = _run_key()
    snap = plan.snapshot_name(run_key) if policy.snapshot_before else None
    # 1. check every host (a dry run refreshes no package list and starts nothing)
    targets = steps.check(ctx, report, policy.refresh and not dry_run, hosts, dry_run)
    steps.cves(ctx, report)  # the plan names the CVEs it fixes (reads only)
    steps.housekeep_snapshots(ctx, report, snap or "", dry_run)
    sec_only = policy.security_only if security_only is None else security_only
    by_name = {t.name: t for t in targets}
    # 2. plan: canaries, batches of containers, then the nodes one at a time
    rollout = steps.build_rollout(ctx, report.hosts, sec_only, set())
    # never together with a backup of a node being patched; other jobs in the window listed
    window.closed()  # remembers the end of the open window
    rollout = check_overlaps(ctx, report, rollout, now(), window.end)
    if not rollout.steps:
        report.approval = "nothing to apply"
        return publish_report(report, ctx.delivery())
    if dry_run:
        steps.simulate(ctx, report, rollout, by_name, sec_only)
        return publish_report(report, ctx.delivery())
    # 3. approval: the plan is published first, so the operator judges what will be done
    if policy.preapproved_scheduled and _is_scheduled():
        report.approval = "pre-approved (scheduled run, patching.preapproved_scheduled)"
    else:
        approved = _approved_rollout(ctx, report, rollout, by_name, sec_only, window)
        if approved is None:
            return publish_report(report, ctx.delivery())
        rollout, sec_only = approved
    # 4. apply, step by step, never while backups run (one maintenance slot per lab)
    log = get_run_logger()
    log.info("rollout:\n%s", rollout.describe())
    wait = ctx.config.platform.maintenance_wait_minutes
    try:
        with maintenance_slot(ctx.config.lab.name, wait, "patch apply", log):
            steps.execute(ctx, report, rollout, by_name, snap, sec_only, window, run_key)
    except SlotBusy as exc:
        report.failures.append(Failure(entity="patch apply", reason=str(exc)))
    return publish_report(report, ctx.delivery())


def _refused_outside_window(report: PatchReport, window: windows.WindowGuard) -> bool:
    """True (and the report says why) when no maintenance window is open now."""
    if not window.closed():
        return False
    opening = windows.next_opening(window.windows, now())
    when = opening.isoformat(timespec="minutes") if opening else "never (check the windows)"
    report.failures.append(
        Failure(
            entity="patch apply",
            reason=f"refused: outside the maintenance window (next opens {when})",
        )
    )
    return True


def _approved_rollout(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    by_name: dict[str, plan.Target],
    sec_only: bool,
    window: windows.WindowGuard,
) -> tuple[plan.RolloutPlan, bool] | None:
    """Ask the operator; the rollout as approved (narrowed, re-checked) and whether it is
    security only, or None when nothing is to be applied (rejected, unanswered, too late)."""
    answer = _ask_approval(ctx, report, rollout, sec_only, window)
    if answer is None:
        return None
    # the plan shown is the plan applied: the answer narrows it (never rebuilt from the checks,
    # where a host the plan refused would come back), and never widens it
    narrow = answer.security_only and not sec_only
    rollout = plan.narrowed(rollout, answer.exclude_hosts, narrow)
    sec_only = sec_only or answer.security_only
    if answer.canaries_only:
        rollout, waiting = plan.canaries_only(rollout)
        report.skipped += [f"{name}: waits (canaries only approved)" for name in waiting]
    closed = window.closed()
    if closed:  # an approval is for the window it was asked in, never the next one
        report.approval = f"{report.approval}, too late ({closed}): nothing applied"
        get_run_logger().warning("approved after the window: %s; nothing applied", closed)
        window_stop(report, rollout.steps, f"approved after the end: {closed}")
        return None
    needs = plan.plan_length(rollout, ctx.config.patching.step_estimate_s)
    if window.end is not None and now() + needs > window.end:  # approved late: say so
        late = (
            f"window: closes at {window.end:%H:%M}, the plan needs about "
            f"{needs.total_seconds() / 60:.0f} min: the steps past it will not run"
        )
        report.plan_changes.append(late)
        get_run_logger().warning("%s", late)
    return steps.recheck_approved(ctx, report, rollout, by_name), sec_only


def _ask_approval(
    ctx: LabContext,
    report: PatchReport,
    rollout: plan.RolloutPlan,
    sec_only: bool,
    window: windows.WindowGuard,
) -> PatchApproval | None:
    """Publish the plan and pause for the operator's answer (None: nothing is to be applied)."""
    policy = ctx.config.patching
    window.closed()  # remembers the end of the open window
    guards = steps.protections(ctx, rollout, report)
    needs = plan.plan_length(rollout, policy.step_estimate_s)
    no_cves = steps.no_cve_lookup(ctx, report)
    table = plan.plan_table(rollout, report.hosts, guards, sec_only, no_cves)
    summary = plan.approval_summary(rollout, report.hosts, guards, sec_only, window.end, needs)
    link = steps.publish_plan(table, summary, ctx.config.lab.name, ctx.ui_url())
    shown = plan.approval_summary(rollout, report.hosts, guards, sec_only, window.end, needs, link)
    description = (
        shown
        + f"\n\n```\n{rollout.describe()}\n```\nApprove, narrow (exclude hosts, security only) "
        "or reject."
    )
    from flows.patch_phone import PhoneApproval  # apply only: a patch check never loads it

    phone = PhoneApproval(ctx, shown)  # the same summary on the phone
    phone.ask(rollout, sec_only, policy.approval_timeout_s)
    try:
        answer = pause_flow_run(
            wait_for_input=PatchApproval.with_initial_data(
                description=description, security_only=sec_only
            ),
            timeout=int(policy.approval_timeout_s),
            poll_interval=2,
        )
    except Exception as exc:  # not answered in time (or an invalid answer): nothing applied
        report.failures.append(
            Failure(entity="patch apply", reason=f"no approval: {type(exc).__name__}: {exc}")
        )
        phone.close(f"No decision: the approval expired ({type(exc).__name__})", False)
        finish_after_expired_pause("approval expired: nothing applied, the report follows")
        return None
    phone.close(
        f"{'Approved' if answer.approve else 'Rejected'} in the Prefect UI",
        "from Telegram by" in answer.note,
    )
    if not answer.approve:
        report.approval = f"rejected{': ' + answer.note if answer.note else ''}"
        report.skipped.append("apply: rejected by the operator")
        return None
    # the form is input from outside: only names the plan showed are echoed as they are
    excluded, unknown = plan.split_exclusions(rollout, answer.exclude_hosts)
    answer = answer.model_copy(update={"exclude_hosts": excluded})
    if excluded:
        report.narrowed.append(f"hosts excluded: {', '.join(excluded)}")
        report.skipped += [f"{name}: excluded at approval" for name in excluded]
    if unknown:
        report.narrowed.append(unknown)
        get_run_logger().warning("approval: %s", unknown)
    if answer.canaries_only:
        report.narrowed.append("canaries only")
    if answer.security_only and not sec_only:
        report.narrowed.append("security updates only")
    wider = plan.widening(sec_only, answer.security_only)
    if wider:  # the operator approved what was shown, not more
        report.widening_refused.append(wider)
        get_run_logger().warning("approval asked beyond the plan shown, refused: %s", wider)
    report.approval = (
        "approved"
        + (" (narrowed)" if report.narrowed else "")
        + (" (widening refused)" if report.widening_refused else "")
        + (f": {answer.note}" if answer.note else "")
    )
    return answer
