"""Restore drill: prove that a guest's latest backup restores and runs.

Runbook: pick a guest (given, or the one whose restore was tested longest ago) -> restore its
newest good backup to a scratch vmid that does not exist -> take it off the production network
(restore_drill.network, default isolate: every interface link_down=1, read back before the start)
-> start it -> check it runs (and answers the configured command or port) -> destroy the scratch
guest -> record the result and duration.
The original guest is never touched: PVE refuses to restore onto an existing vmid, the drill
refuses a scratch vmid that exists, and it destroys only the vmid it restored. A restore keeps the
backed-up interfaces (bridge, VLAN, static address; only the MACs are new), so a scratch guest
started as restored would take the original's address.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger
from prefect.states import State

from blocks.context import LabContext
from blocks.proxmox import ProxmoxCredentials
from labops.config.policies.backups import RestoreDrillPolicy
from labops.config.systems import ProxmoxNode
from labops.errors import ConfigError, LabopsError
from labops.flow_params import ConfigPath, NodeName, StorageId, Vmid
from labops.models.backups import BackupGuest
from labops.planners.backups import default_storage
from labops.planners.restore_drill import (
    DrillRefused,
    choose_guest,
    choose_scratch_vmid,
    network_changes,
    network_done,
    network_intent,
    network_problems,
)
from labops.reports import Failure
from labops.reports_backups import DrillHistory, DrillResult, RestoreDrillReport
from labops.ssh import SshTarget
from tasks.publish import publish_report
from tasks.pve import (
    destroy_guest,
    guest_config,
    guest_running,
    list_guests,
    list_nodes,
    power_guest,
    restore_backup,
    scan_backups,
    set_guest_network,
    used_vmids,
)

STATE_KEY = "restore-drills"


def node_target(ctx: LabContext, node: str) -> SshTarget:
    """Where ``node`` answers SSH: the inventory's node entry, else systems.proxmox.nodes."""
    for host in ctx.config.inventory.hosts:
        if host.name == node and host.kind == "node":
            return SshTarget(name=node, address=host.address or host.name, port=host.port)
    pve = ctx.config.systems.proxmox
    override = pve.nodes.get(node, ProxmoxNode()) if pve else ProxmoxNode()
    return SshTarget(name=node, address=override.ssh_host or node, port=override.ssh_port)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Name the drill step an API error happened in."""
    try:
        yield
    except LabopsError as exc:
        raise DrillRefused(f"{name} failed: {exc}") from exc


def port_answers(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


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

    Args:
        config: Path of the labops config (default: LABOPS_CONFIG or ./labops.yaml).
        dry_run: Show which guest, backup, node and scratch vmid would be used; change nothing.
        vmid: The guest to drill (default: the one drilled longest ago).
        scratch_vmid: The vmid to restore to (refused when it exists; default: the first free
            one of backups.restore_drill's range).
        node: Node to restore on (default: restore_drill.node, else the guest's node).
        storage: Storage for the scratch guest's disks (default: restore_drill.storage).
    """
    log = get_run_logger()
    ctx = LabContext.load(config)
    policy = ctx.config.backups
    drill = policy.restore_drill
    report = RestoreDrillReport(dry_run=dry_run, lab=ctx.config.lab.name)
    report.skipped += ctx.skipped("proxmox")
    if not ctx.configured("proxmox"):
        return publish_report(report, ctx)
    block = ctx.pve_block()
    history = ctx.state.load(STATE_KEY, DrillHistory) or DrillHistory()

    nodes = list_nodes(block)
    online = sorted(n.node for n in nodes if n.online)
    guests = list_guests(block)
    try:
        storage_name = default_storage(policy, ctx.config.systems.pbs)
    except ConfigError as exc:
        report.failures.append(Failure(entity="config", reason=str(exc)))
        return publish_report(report, ctx)
    copies, problems = scan_backups(block, [storage_name, *policy.scan_storages], online)
    report.failures += problems
    target = node or drill.node
    try:
        choice = choose_guest(
            guests, copies, policy, history, vmid, usable_nodes=None if target else online
        )
        scratch = choose_scratch_vmid(
            used_vmids(block), drill.scratch_vmid_min, drill.scratch_vmid_max, scratch_vmid
        )
    except DrillRefused as exc:
        report.failures.append(Failure(entity="restore drill", reason=str(exc)))
        return publish_report(report, ctx)
    guest, backup = choice.guest, choice.backup
    target = target or guest.node
    report.vmid, report.name, report.volid = guest.vmid, guest.name, backup.volid
    report.backup_time, report.scratch_vmid = backup.ctime, scratch
    report.node, report.storage = target, storage or drill.storage
    report.reason = choice.reason
    if target not in online:
        report.failures.append(Failure(entity=f"node {target}", reason="offline: cannot restore"))
        return publish_report(report, ctx)
    if dry_run:
        report.steps.append(
            f"would restore {backup.volid} as {scratch} on {target}/{report.storage}, "
            f"{network_intent(drill.network, drill.replace_nets)}, start it, check it and "
            "destroy it"
        )
        return publish_report(report, ctx)

    started = time.monotonic()
    restored = False
    try:
        log.info("restoring %s (%s) as %d on %s", guest.label, backup.volid, scratch, target)
        restored = True  # from here on the scratch vmid may exist: clean it up whatever happens
        with step("restore"):
            result = restore_backup(
                block, target, guest.type, scratch, backup.volid, report.storage, drill.timeout
            )
        report.steps.append(f"restore {backup.volid} -> {scratch}: {result.exitstatus}")
        if result.status == "error":
            raise DrillRefused(f"restore failed: {result.exitstatus}")
        with step("network"):
            _prepare_network(block, report, drill, target, guest, scratch)
        with step("start"):
            result = power_guest(block, target, guest.type, scratch, "start")
        report.steps.append(f"start {scratch}: {result.exitstatus}")
        if result.status == "error":
            raise DrillRefused(f"start failed: {result.exitstatus}")
        status = guest_running(block, target, guest.type, scratch, drill.start_wait)
        report.checks["running"] = status == "running"
        if status != "running":
            raise DrillRefused(f"not running {drill.start_wait:g}s after start ({status})")
        _run_checks(ctx, report, target, scratch, guest.type)
    except (DrillRefused, LabopsError) as exc:
        report.failures.append(Failure(entity=guest.label, reason=str(exc), system="proxmox"))
    finally:
        if restored:
            _clean_up(block, report, target, guest.type, scratch)
    report.duration_s = time.monotonic() - started
    report.ok = not report.failures
    history.last[guest.vmid] = DrillResult(
        vmid=guest.vmid,
        name=guest.name,
        ok=report.ok,
        when=time.time(),
        duration_s=report.duration_s,
        volid=backup.volid,
        reason="; ".join(f.reason for f in report.failures),
    )
    ctx.state.save(STATE_KEY, history)
    return publish_report(report, ctx)


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


def _run_checks(
    ctx: LabContext, report: RestoreDrillReport, node: str, scratch: int, kind: str
) -> None:
    drill = ctx.config.backups.restore_drill
    if drill.check_command:
        if kind != "lxc":
            report.steps.append("check command skipped: pct exec works on containers only")
        elif not ctx.configured("ssh"):
            report.skipped.append("check command: ssh not configured")
        else:
            from tasks.ssh import HostAccess, HostCommand, run_command

            job = HostCommand(
                access=HostAccess(
                    name=f"scratch {scratch}", ssh=node_target(ctx, node), vmid=scratch
                ),
                command=drill.check_command,
                timeout_s=max(5.0, drill.start_wait),
            )
            run = run_command(ctx.ssh_block(), job)
            ok = run.state == "ok" and run.result is not None and run.result.ok
            report.checks[f"command {drill.check_command!r}"] = ok
            report.steps.append(f"check command: {'ok' if ok else run.detail or 'failed'}")
            if not ok:
                detail = run.detail or (run.result.stderr.strip()[:200] if run.result else "")
                raise DrillRefused(f"check command failed: {detail or run.state}")
    if drill.check_port:
        host = drill.check_host
        if host is None:
            report.skipped.append("check port: restore_drill.check_host not set")
            return
        ok = port_answers(host, drill.check_port, max(1.0, drill.start_wait))
        report.checks[f"port {host}:{drill.check_port}"] = ok
        report.steps.append(f"check port {host}:{drill.check_port}: {'ok' if ok else 'closed'}")
        if not ok:
            raise DrillRefused(f"port {host}:{drill.check_port} does not answer")


def _clean_up(
    block: ProxmoxCredentials, report: RestoreDrillReport, node: str, kind: str, scratch: int
) -> None:
    """Destroy the scratch guest if it exists (only the vmid this drill restored)."""
    try:
        if scratch not in used_vmids(block):
            report.steps.append(f"scratch {scratch} gone already: nothing to destroy")
            return
        result = destroy_guest(block, node, kind, scratch)
        report.steps.append(f"destroy {scratch}: {result.exitstatus}")
        if result.status == "error":
            report.failures.append(
                Failure(
                    entity=f"scratch guest {scratch}",
                    system="proxmox",
                    reason=f"not destroyed ({result.exitstatus}): remove it by hand",
                )
            )
    except LabopsError as exc:
        report.failures.append(
            Failure(
                entity=f"scratch guest {scratch}",
                system="proxmox",
                reason=f"not destroyed ({exc}): remove it by hand",
            )
        )
