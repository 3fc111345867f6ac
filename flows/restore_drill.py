"""Restore drill: prove that a guest's latest backup restores and runs.

Runbook: one drill per lab at a time (a Prefect concurrency slot; a second drill does not wait,
it reports that it could not run) -> pick a guest (given, or the one whose restore was tested
longest ago) and a free vmid of the scratch range -> check that the token holds what the drill
needs -> restore the guest's newest good backup to that vmid, into restore_drill.pool -> tag the
restored guest with this run (read back) -> take it off the production network
(restore_drill.network, default isolate: every interface link_down=1, read back before the
start) -> start it -> check it runs -> prove from inside it that it serves (a healthy boot, then the
guest's tcp/http/command checks; pct exec or the QEMU guest agent) -> destroy it -> record the
result and its recovery time, compared with the guest's recent drills -> report the rotation
(guests drilled within the period, the next due).

The drill destroys a guest only when this run's restore task (its UPID) was seen to succeed, the
guest carries this run's tag read back just before, and its vmid is in the scratch range; in
every other case it destroys nothing and reports what it left and why. The original guest is
never touched: PVE refuses to restore onto an existing vmid, and the drill refuses a scratch
vmid outside the range or one that exists. A restore keeps the backed-up interfaces (bridge,
VLAN, static address; only the MACs are new), so a scratch guest started as restored would take
the original's address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from prefect import flow, get_run_logger
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.states import State

from blocks.context import LabContext
from blocks.proxmox import ProxmoxCredentials
from labops.backups.drill import (
    DrillRefused,
    Need,
    RestoreSeen,
    choose_guest,
    choose_scratch_vmid,
    destroy_refusal,
    drill_scope,
    missing_privileges,
    network_changes,
    network_done,
    network_intent,
    network_problems,
    run_tag,
    scratch_needs,
    source_needs,
)
from labops.backups.drill_proof import (
    check_script,
    coverage,
    guest_checks,
    healthy_boot_script,
    rto_regression,
)
from labops.backups.drill_record import remember
from labops.backups.models import BackupCopy, BackupGuest
from labops.backups.namespaces import location_label, pbs_locations
from labops.backups.plan import backup_storages, default_storage
from labops.backups.report import DrillHistory, RestoreDrillReport
from labops.config.policies.backups import RestoreDrillPolicy
from labops.errors import ApiError, ConfigError, LabopsError
from labops.flow_params import ConfigPath, NodeName, StorageId, Vmid
from labops.limits import LEASE_S, ensure_limit, limit_name
from labops.reports import Failure
from labops.ssh_targets import node_target
from tasks.guest_exec import GuestRun, run_in_guest
from tasks.health import port_open
from tasks.progress import Progress
from tasks.publish import publish_report
from tasks.pve import (
    destroy_guest,
    guest_config,
    guest_running,
    list_guests,
    list_nodes,
    power_guest,
    scan_backups,
    set_guest_network,
    set_guest_tags,
    start_restore,
    storage_configs,
    token_privileges,
    used_vmids,
    wait_for_task,
)

STATE_KEY = "restore-drills"
# Progress: discover, choose, privileges (a dry run ends there), restore, tag and isolate,
# start, prove it serves, clean up, record.
DRILL_STEPS, DRY_RUN_STEPS = 9, 3
PRIVILEGES_DOC = "docs/production.md, section 8"


@contextmanager
def step(name: str) -> Iterator[None]:
    """Name the drill step an API error happened in."""
    try:
        yield
    except LabopsError as exc:
        raise DrillRefused(f"{name} failed: {exc}") from exc


@flow(name="restore-drill", log_prints=False)
def restore_drill(
    config: ConfigPath | None = None,
    dry_run: bool = False,
    vmid: Vmid | None = None,
    scratch_vmid: Vmid | None = None,
    node: NodeName | None = None,
    storage: StorageId | None = None,
) -> RestoreDrillReport | State:
    """Restore a guest's newest good backup to a scratch guest, start it, check it, destroy it.
    CHANGES THE LAB (creates and destroys the scratch guest; the dry run only reads).

    Args:
        config: Path of the labops config (default: LABOPS_CONFIG or ./labops.yaml).
        dry_run: Show which guest, backup, node, scratch vmid, tag and pool would be used and
            whether the token holds what the drill needs; change nothing.
        vmid: The guest to drill (default: the one drilled longest ago).
        scratch_vmid: The vmid to restore to (refused outside backups.restore_drill's scratch
            range or when it exists; default: the first free one of the range).
        node: Node to restore on (default: restore_drill.node, else the guest's node).
        storage: Storage for the scratch guest's disks (default: restore_drill.storage).
    """
    ctx = LabContext.load(config)
    drill = ctx.config.backups.restore_drill
    report = RestoreDrillReport(
        dry_run=dry_run, lab=ctx.config.lab.name, tag=run_tag(str(flow_run.id)), pool=drill.pool
    )
    report.skipped += ctx.skipped("proxmox")
    if not ctx.configured("proxmox"):
        return publish_report(report, ctx.delivery())
    with ExitStack() as held:
        busy = None if dry_run else _take_slot(held, ctx.config.lab.name)
        if busy:
            report.failures.append(Failure(entity="restore drill", reason=busy))
        else:
            _drill(ctx, report, vmid, scratch_vmid, node, storage)
    return publish_report(report, ctx.delivery())


def _take_slot(held: ExitStack, lab: str) -> str | None:
    """Hold the lab's one restore-drill slot for the rest of the run; None when taken, else why
    the drill does not run. A second drill does not queue behind a running one (a drill can
    take the restore timeout): it reports and leaves the next scheduled run to try again."""
    name = limit_name("drill", "slot", lab=lab)
    try:
        ensure_limit(name, 1)
        held.enter_context(
            concurrency(name, occupy=1, strict=True, max_retries=0, lease_duration=LEASE_S)
        )
    except ConcurrencySlotAcquisitionError as exc:
        status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
        if status == 423:
            return (
                f"not run: another restore drill of lab {lab} is running (concurrency limit "
                f"{name} is full); two drills never overlap"
            )
        return f"not run: the concurrency slot {name} could not be taken ({exc})"
    except (LabopsError, OSError, TimeoutError) as exc:
        return f"not run: the concurrency slot {name} could not be taken ({exc})"
    return None


def _drill(
    ctx: LabContext,
    report: RestoreDrillReport,
    vmid: int | None,
    scratch_vmid: int | None,
    node: str | None,
    storage: str | None,
) -> None:
    policy = ctx.config.backups
    drill = policy.restore_drill
    block = ctx.pve_block()
    history = ctx.state.load(STATE_KEY, DrillHistory) or DrillHistory()
    steps = DRY_RUN_STEPS if report.dry_run else DRILL_STEPS
    done = Progress(ctx.config.lab.name, "restore_drill", steps, "drill steps")
    # 1. discover: nodes, guests, their backups
    nodes = list_nodes(block)
    online = sorted(n.node for n in nodes if n.online)
    guests = list_guests(block)
    try:
        storage_name = default_storage(policy, ctx.config.systems.pbs)
    except ConfigError as exc:
        report.failures.append(Failure(entity="config", reason=str(exc)))
        return
    # every storage whose backups count, as the backups flow reads them: a guest whose backups
    # are in a PBS namespace is found only through the PVE storage that names that namespace
    storages = backup_storages(policy, storage_name)
    copies, problems = scan_backups(block, storages, online)
    report.failures += problems
    done.advance(note="discovered")
    # 2. choose the guest (drilled longest ago), its newest good backup and a free scratch vmid
    target = node or drill.node
    try:
        choice = choose_guest(
            guests, copies, policy, history, vmid, usable_nodes=None if target else online
        )
        scratch = choose_scratch_vmid(
            used_vmids(block), drill.scratch_vmid_min, drill.scratch_vmid_max, scratch_vmid
        )
    except DrillRefused as exc:
        # PVE hides guests and backups the token may not see: say so when that is why.
        lacking = _lacking(block, source_needs(vmid, storage_name))
        hint = f"; permission: {_permission_text(block, lacking)}" if lacking else ""
        report.failures.append(Failure(entity="restore drill", reason=f"{exc}{hint}"))
        return
    guest, backup = choice.guest, choice.backup
    target = target or guest.node
    done.advance(note=f"chose {guest.label}")
    report.vmid, report.name, report.volid = guest.vmid, guest.name, backup.volid
    report.backup_location = _location(block, backup)
    report.backup_time, report.scratch_vmid = backup.ctime, scratch
    report.node, report.storage = target, storage or drill.storage
    report.reason = choice.reason
    if target not in online:
        report.failures.append(Failure(entity=f"node {target}", reason="offline: cannot restore"))
        return
    # 3. the token must hold what the drill needs, before anything is restored
    needs = source_needs(guest.vmid, backup.storage)
    needs += scratch_needs(report.storage, drill.pool, scratch, drill.network)
    lacking = _lacking(block, needs, report)
    if lacking:
        reason = f"permission: {_permission_text(block, lacking)}; nothing was restored"
        report.failures.append(Failure(entity="restore drill", reason=reason, system="proxmox"))
        return
    done.advance(note="privileges checked")
    if report.dry_run:
        report.steps.append(
            f"would restore {backup.volid} from {report.backup_location} as {scratch} on "
            f"{target}/{report.storage}"
            f"{f' into pool {drill.pool}' if drill.pool else ''}, tag it {report.tag}, "
            f"{network_intent(drill.network, drill.replace_nets)}, start it, check it and "
            "destroy it"
        )
        report.coverage = coverage(
            drill_scope(guests, policy), history.when(), time.time(), drill.period
        )
        return
    # 4. restore, tag, isolate, start, prove it serves, destroy
    _restore_and_check(ctx, report, block, guest, backup, scratch, target, done)
    # 5. its recovery time against its recent drills; remember it; the rotation
    past = history.rtos.get(guest.vmid, [])
    if report.ok and report.times.rto_s is not None:
        report.rto_baseline_s, report.rto_regression = rto_regression(
            report.times.rto_s, past, drill.rto_regression, drill.rto_baseline
        )
    now = time.time()
    ctx.state.save(STATE_KEY, remember(history, report, guest, backup.volid, now))
    done.advance(note="recorded")
    report.coverage = coverage(drill_scope(guests, policy), history.when(), now, drill.period)


def _location(block: ProxmoxCredentials, backup: BackupCopy) -> str:
    """Where ``backup`` is: its storage, for PBS with the datastore and namespace PVE's storage
    config names (the volume id does not); the storage alone when the configs are unreadable."""
    try:
        return location_label(backup.storage, pbs_locations(storage_configs(block)))
    except LabopsError:
        return backup.storage


def _lacking(
    block: ProxmoxCredentials, needs: list[Need], report: RestoreDrillReport | None = None
) -> list[str]:
    """The needs the token does not meet (PVE's own dump of the token's privileges)."""
    try:
        held = token_privileges(block, [p for need in needs for p in need.paths])
    except LabopsError as exc:
        if report is not None:
            report.steps.append(
                f"privileges not checked beforehand ({exc}): PVE refuses what is missing"
            )
        return []
    return missing_privileges(needs, held)


def _permission_text(block: ProxmoxCredentials, lacking: list[str]) -> str:
    return f"token {block.settings.token_id} lacks {'; '.join(lacking)}; see {PRIVILEGES_DOC}"


def _restore_and_check(
    ctx: LabContext,
    report: RestoreDrillReport,
    block: ProxmoxCredentials,
    guest: BackupGuest,
    backup: BackupCopy,
    scratch: int,
    target: str,
    done: Progress,
) -> None:
    drill = ctx.config.backups.restore_drill
    wait = ctx.config.backups.lost_answer_wait  # a lost answer: watch the task list this long
    seen = RestoreSeen(vmid=scratch, node=target, kind=guest.type)
    tag = report.tag or ""
    started = time.monotonic()
    try:
        get_run_logger().info(
            "restoring %s (%s) as %d on %s", guest.label, backup.volid, scratch, target
        )
        _restore(block, report, seen, backup, drill, wait)
        report.times.restore_s = time.monotonic() - started
        done.advance(note="restored")
        with step("tag"):
            _mark(block, report, seen, tag)
        with step("network"):
            _prepare_network(block, report, drill, target, guest, scratch)
        done.advance(note="tagged and isolated")
        booting = time.monotonic()
        with step("start"):
            result = power_guest(
                block,
                target,
                guest.type,
                scratch,
                "start",
                lost_answer_wait_s=wait,
            )
        report.steps.append(f"start {scratch}: {result.exitstatus}")
        if result.status == "error":
            raise DrillRefused(f"start failed: {result.exitstatus}")
        status = guest_running(block, target, guest.type, scratch, drill.start_wait)
        report.checks["running"] = status == "running"
        if status != "running":
            raise DrillRefused(f"not running {drill.start_wait:g}s after start ({status})")
        done.advance(note="running")
        _prove(ctx, report, guest, target, scratch, booting)
        _run_checks(ctx, report)
        done.advance(note="checked")
        if not report.not_checked:
            report.times.rto_s = time.monotonic() - started
    except (DrillRefused, LabopsError) as exc:
        report.failures.append(Failure(entity=guest.label, reason=str(exc), system="proxmox"))
    finally:
        _clean_up(block, report, seen, drill, tag, wait)
        done.advance(note="cleaned up")
    report.duration_s = time.monotonic() - started
    report.ok = not report.failures and not report.not_checked


def _restore(
    block: ProxmoxCredentials,
    report: RestoreDrillReport,
    seen: RestoreSeen,
    backup: BackupCopy,
    drill: RestoreDrillPolicy,
    wait: float,
) -> None:
    """Restore ``backup`` to ``seen.vmid`` and follow the task; ``seen`` records the UPID PVE
    answered and how the task ended (the only proof that a guest there is this run's)."""
    storage = report.storage or drill.storage
    try:
        seen.upid = start_restore(
            block,
            seen.node,
            seen.kind,
            seen.vmid,
            backup.volid,
            storage,
            drill.pool,
            lost_answer_wait_s=wait,
        )
    except LabopsError as exc:
        seen.state, seen.detail = "refused", str(exc)
        holder = _holder(block, seen.vmid)
        taken = (
            f"; vmid {seen.vmid} is now used by {holder}; this run has no restore task for it, "
            "so it leaves it alone"
            if holder
            else ""
        )
        raise DrillRefused(f"restore refused: {exc}{taken}") from exc
    seen.state = "running"
    try:
        result = wait_for_task(block, seen.node, seen.upid, drill.timeout)
    except LabopsError as exc:
        seen.detail = str(exc)
        raise DrillRefused(f"restore task {seen.upid} not seen to end: {exc}") from exc
    report.steps.append(f"restore {backup.volid} -> {seen.vmid}: {result.exitstatus}")
    if result.status == "error":
        seen.state, seen.detail = "failed", result.exitstatus
        raise DrillRefused(f"restore failed: {result.exitstatus}")
    seen.state = "ok"


def _holder(block: ProxmoxCredentials, vmid: int) -> str | None:
    """Which guest uses ``vmid`` now (None: none, or the cluster could not be asked)."""
    try:
        found = [g for g in list_guests(block) if g.vmid == vmid]
    except LabopsError:
        return None
    return f"{found[0].label} on {found[0].node}" if found else None


def _mark(
    block: ProxmoxCredentials, report: RestoreDrillReport, seen: RestoreSeen, tag: str
) -> None:
    """Tag the restored guest with this run (replacing the backed-up tags, which describe the
    original), then read the tag back: only a guest carrying it is ever destroyed."""
    conf = guest_config(block, seen.node, seen.kind, seen.vmid)
    set_guest_tags(block, seen.node, seen.kind, seen.vmid, [tag], conf.digest)
    now = guest_config(block, seen.node, seen.kind, seen.vmid).tags
    if tag not in now:
        raise DrillRefused(f"tag {tag} is not on {seen.vmid} after setting it (tags: {now})")
    was = ";".join(conf.tags) or "none"
    report.steps.append(f"tag {seen.vmid}: {tag} (backed-up tags {was} replaced; read back)")


def _prepare_network(
    block: ProxmoxCredentials,
    report: RestoreDrillReport,
    drill: RestoreDrillPolicy,
    node: str,
    guest: BackupGuest,
    scratch: int,
) -> None:
    """Give the scratch guest the network ``drill.network`` asks for; refuse to start it unless
    the config read back shows it."""
    conf = guest_config(block, node, guest.type, scratch)
    changes = network_changes(conf.nets, drill.network, drill.replace_nets, guest.type)
    if changes:
        set_guest_network(block, node, guest.type, scratch, changes, conf.digest)
        conf = guest_config(block, node, guest.type, scratch)
    problems = network_problems(conf.nets, drill.network, drill.replace_nets)
    if problems:
        raise DrillRefused(
            f"network {drill.network} not in place, {scratch} not started: {'; '.join(problems)}"
        )
    done = network_done(conf.nets, drill.network, drill.replace_nets, guest.label, conf.ipconfigs)
    report.steps.append(done)
    if drill.network == "keep":
        get_run_logger().warning("%s", done)


def _prove(
    ctx: LabContext,
    report: RestoreDrillReport,
    guest: BackupGuest,
    node: str,
    scratch: int,
    booting: float,
) -> None:
    """Prove the scratch guest serves, from inside it: a healthy boot (waited for up to
    boot_wait from the start), then each per-guest check. A check that could not run is "could
    not check", never passed; a failed one fails the drill after every check has run."""
    drill = ctx.config.backups.restore_drill
    ssh = ctx.ssh_block() if ctx.configured("ssh") else None
    target = node_target(ctx.config, node) if ssh is not None else None

    def run(script: str, timeout_s: float) -> GuestRun:
        return run_in_guest(
            ctx.pve_block(), ssh, target, node, guest.type, scratch, script, timeout_s
        )

    if drill.healthy_boot:
        with step("healthy boot"):
            boot = _healthy_boot(run, booting + drill.boot_wait)
        report.steps.append(f"check healthy boot: {boot.state} {boot.output}".strip())
        if boot.state == "unreachable" or boot.exit_status == 3:
            report.not_checked.append(f"healthy boot ({boot.detail or boot.output})")
            return
        report.checks["healthy boot"] = boot.state == "ok"
        if boot.state != "ok":
            raise DrillRefused(f"not a healthy boot: {boot.output or boot.exit_status}")
    report.times.boot_s = time.monotonic() - booting
    failed = []
    for check in guest_checks(guest, drill.checks, drill.check_command):
        with step(f"check {check.label}"):
            ran = run(check_script(check, drill.start_wait), max(5.0, drill.start_wait))
        report.steps.append(f"check {check.label}: {ran.state} {ran.output}".strip())
        if ran.state == "unreachable":
            report.not_checked.append(f"{check.label} ({ran.detail})")
            continue
        report.checks[check.label] = ran.state == "ok"
        if ran.state != "ok":
            failed.append(f"{check.label} (exit {ran.exit_status}: {ran.output or 'no output'})")
    if failed:
        raise DrillRefused(f"in-guest check(s) failed: {'; '.join(failed)}")


def _healthy_boot(run: Callable[[str, float], GuestRun], deadline: float) -> GuestRun:
    """Run the healthy-boot script until the guest answers (a container's pct exec or a VM's
    agent may not answer yet right after the start) or ``deadline`` passes."""
    while True:
        left = deadline - time.monotonic()
        ran = run(healthy_boot_script(max(1.0, left)), max(5.0, left))
        if ran.state != "unreachable" or not ran.retry or left <= 1.0:
            return ran
        time.sleep(min(2.0, left / 4))


def _run_checks(ctx: LabContext, report: RestoreDrillReport) -> None:
    """The check from labops's side: restore_drill.check_port on check_host (network: replace
    or keep)."""
    drill = ctx.config.backups.restore_drill
    if drill.check_port:
        host = drill.check_host
        if host is None:
            report.skipped.append("check port: restore_drill.check_host not set")
            return
        ok = port_open(host, drill.check_port, max(1.0, drill.start_wait))
        report.checks[f"port {host}:{drill.check_port}"] = ok
        report.steps.append(f"check port {host}:{drill.check_port}: {'ok' if ok else 'closed'}")
        if not ok:
            raise DrillRefused(f"port {host}:{drill.check_port} does not answer")


def _clean_up(
    block: ProxmoxCredentials,
    report: RestoreDrillReport,
    seen: RestoreSeen,
    drill: RestoreDrillPolicy,
    tag: str,
    wait: float,
) -> None:
    """Destroy the scratch guest when it is provably this run's (see destroy_refusal); else
    destroy nothing and report what is left, and why, for the operator."""
    vmid = seen.vmid
    if seen.upid is None:
        report.steps.append(f"destroy {vmid}: nothing to destroy, this run created no guest")
        return
    tags: list[str] | None
    try:
        tags = guest_config(block, seen.node, seen.kind, vmid).tags
    except ApiError as exc:
        if "does not exist" in str(exc):
            report.steps.append(f"destroy {vmid}: nothing to destroy, {vmid} does not exist")
            return
        tags = None
    except LabopsError:
        tags = None
    refusal = destroy_refusal(seen, tags, tag, drill.scratch_vmid_min, drill.scratch_vmid_max)
    if refusal:
        report.steps.append(f"destroy {vmid}: refused, {refusal}")
        report.left.append(f"guest {vmid} on {seen.node}: not destroyed, {refusal}")
        report.failures.append(
            Failure(
                entity=f"scratch guest {vmid}",
                system="proxmox",
                reason=f"left in place: {refusal}; check it and remove it by hand if it is the "
                "drill's",
            )
        )
        return
    try:
        result = destroy_guest(block, seen.node, seen.kind, vmid, lost_answer_wait_s=wait)
        report.steps.append(f"destroy {vmid}: {result.exitstatus}")
        problem = None if result.status != "error" else result.exitstatus
    except LabopsError as exc:
        problem = str(exc)
    if problem:
        report.left.append(f"guest {vmid} on {seen.node} (tag {tag}): destroy failed, {problem}")
        report.failures.append(
            Failure(
                entity=f"scratch guest {vmid}",
                system="proxmox",
                reason=f"not destroyed ({problem}): remove it by hand",
            )
        )
