"""Applying updates to one host, and rebooting a node, for the patch sweep. CHANGES HOSTS.

Used by the patch-apply flow: snapshot (containers and VMs), upgrade, post-check, roll back on
failure (:func:`patch_host`); reboot a node and wait until it and its guests are back
(:func:`reboot_node`). A guest's reboot is PVE's own (``tasks.pve.power_guest``). A VM without
SSH is upgraded through its QEMU guest agent (``access.via`` agent): the same steps over
:class:`labops.guest_agent.AgentRunner`, its upgrade detached as a node's. Both tasks take the
blocks and a plain job value: nothing here reads the config or resolves secrets.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.proxmox import ProxmoxCredentials
from blocks.ssh import SshCredentials
from labops.backups.models import BackupCopy
from labops.config.policies.patching import HealthCheck
from labops.patching import gate, plan
from labops.patching.apt import failure_reason
from labops.patching.detached import (
    POLL_COMMAND,
    Detached,
    parse_poll,
    start_command,
    where_to_look,
)
from labops.patching.report import HostApply
from labops.patching.rollout import apply_row
from labops.state import StateStore
from tasks.health import probe_url
from tasks.pve import client, create_snapshot, guest_lock, node_activity, rollback_snapshot
from tasks.ssh import (
    CheckOptions,
    HostAccess,
    HostCommand,
    HostRun,
    Runner,
    check_many,
    run_one,
    runners,
)

SNAPSHOT_BOOK = "patch-snapshots"
_BOOK_LOCK = threading.Lock()  # patch_host threads update the same state file


def failure_of(run: HostRun) -> str:
    if run.state != "ok" or run.result is None:
        return f"{run.state}: {run.detail}"
    text = run.result.stdout + "\n" + run.result.stderr
    return f"exit {run.result.exit_status}: {failure_reason(text)}"


class Detach(BaseModel):
    """A node's upgrade runs detached on the host (see ``labops.patching.detached``)."""

    job: str = Field(..., description="The run starting it (kept on the host).")
    systemd: bool = Field(False, description="Start it as a transient unit (else nohup).")


class DetachedRun(BaseModel):
    state: Literal["ok", "failed", "still-running"]
    detail: str = ""
    adopted: str | None = Field(None, description="The earlier run whose upgrade was adopted.")


class NodeWait(BaseModel):
    """How long a busy node is waited for before it is left out."""

    wait_s: float = 0.0
    poll_s: float = 15.0


class PatchJob(BaseModel):
    """Everything :func:`patch_host` needs to patch one host, as plain values."""

    host: plan.PlanHost
    step: plan.Step = Field(..., description="The rollout step (its hosts are not needed).")
    access: HostAccess
    manager: str | None = Field(None, description="apt | apk (the check's answer).")
    upgrade: str = Field(..., description="The upgrade command.")
    snapshot: str | None = Field(
        None, description="Snapshot name (containers and VMs), None: none."
    )
    detach: Detach | None = Field(
        None, description="Run the upgrade detached (nodes, VMs through their guest agent)."
    )
    upgrade_timeout_s: float
    upgrade_poll_s: float
    check_timeout_s: float
    rollback_on_failure: bool = True
    health: HealthCheck = Field(default_factory=HealthCheck)
    busy: NodeWait = Field(default_factory=NodeWait)
    state_dir: Path = Field(..., description="Where the snapshot book is kept.")
    backup: BackupCopy | None = Field(
        None,
        description="The guest's backup that passed the backup gate: its rollback point when no "
        "snapshot is taken (or none can be).",
    )


@task(name="patch-host", cache_policy=NO_CACHE)
def patch_host(ssh: SshCredentials, pve: ProxmoxCredentials | None, job: PatchJob) -> HostApply:
    """Patch one host: snapshot (containers and VMs), upgrade, post-check, roll back on failure.
    CHANGES THE HOST. A guest being backed up is skipped for now; a node is upgraded only
    while no backup, restore or migration runs on it and none of its guests is locked, and its
    upgrade runs detached (``job.detach``; a VM through its guest agent too): a poll timeout
    reports it still running, never kills it. ``pve`` None: Proxmox is not configured (no
    snapshot, a node counts as busy, no VM is reached through its agent)."""
    host = job.host
    result = apply_row(host, job.step, started=datetime.now(UTC))
    is_guest = host.kind in ("container", "vm") and host.vmid is not None and host.node is not None
    guest_pve = pve if is_guest else None
    kind: Literal["lxc", "qemu"] = "qemu" if host.kind == "vm" else "lxc"
    if guest_pve is not None and host.node and host.vmid is not None:
        lock = guest_lock(guest_pve, host.node, host.vmid, kind)
        if lock == "backup":
            result.outcome, result.detail = "skipped", "being backed up (PVE lock backup)"
            return result
        if job.snapshot:
            _book(job.state_dir, host, job.snapshot)
            try:
                create_snapshot(
                    guest_pve,
                    host.node,
                    host.vmid,
                    job.snapshot,
                    f"labops patch run before: {', '.join(host.packages[:8])}",
                    kind,
                )
                result.snapshot = job.snapshot
            except Exception as exc:
                if job.backup is None:  # no rollback point at all: never patched
                    raise
                # a bind mount or storage without snapshots: the gate's backup is the way back
                result.detail = f"no snapshot ({exc})"
    result.rollback_point = gate.rollback_point(result.snapshot, job.backup)
    if host.kind == "node" and host.node:
        busy = wait_until_idle(pve, host.node, job.busy)
        if busy:
            result.outcome, result.detail = "skipped", f"node busy: {'; '.join(busy)}"
            return result
    runner = runners(ssh, pve if job.access.via == "agent" else None)
    try:
        problem = _upgrade(runner, job, result)
        if result.outcome == "still-running":
            return result
        if not problem:
            problem = post_check(runner, job)
    finally:
        runner.close()
    if not problem:
        result.outcome, result.upgraded = "patched", list(host.packages)
    else:
        result.outcome = "failed"
        result.detail = "; ".join(x for x in (result.detail, problem) if x)
        if not result.snapshot and job.backup is not None and host.vmid is not None:
            node = host.node or "<node>"
            result.restore = gate.restore_hint(kind, node, host.vmid, job.backup)
        if guest_pve is not None and result.snapshot and job.snapshot and job.rollback_on_failure:
            assert host.node is not None and host.vmid is not None
            try:
                rollback_snapshot(guest_pve, host.node, host.vmid, job.snapshot, kind)
                result.outcome, result.rolled_back = "rolled-back", True
                result.detail = f"{problem}; rolled back to {job.snapshot}"
            except Exception as exc:
                result.detail = f"{problem}; ROLLBACK FAILED: {exc}"
    result.finished = datetime.now(UTC)
    return result


def _book(state_dir: Path, host: plan.PlanHost, name: str) -> None:
    """Book the snapshot before it exists: a killed run leaves a trace."""
    assert host.node is not None and host.vmid is not None
    state = StateStore(state_dir)
    with _BOOK_LOCK:
        book = state.load(SNAPSHOT_BOOK, plan.SnapshotBook) or plan.SnapshotBook()
        book.upsert(
            plan.SnapshotRecord(
                host=host.name,
                node=host.node,
                vmid=host.vmid,
                name=name,
                created=datetime.now(UTC),
                kind="qemu" if host.kind == "vm" else "lxc",
            )
        )
        state.save(SNAPSHOT_BOOK, book)


def _upgrade(runner: Runner, job: PatchJob, result: HostApply) -> str:
    """Run the upgrade; "" when it succeeded, else why not (``result`` notes an adopted or a
    still running upgrade)."""
    if job.detach is None:
        command = HostCommand(
            access=job.access, command=job.upgrade, timeout_s=job.upgrade_timeout_s
        )
        run = run_one(runner, command)
        return "" if run.state == "ok" and run.result and run.result.ok else failure_of(run)
    done = run_detached(runner, job)
    if done.state == "still-running":
        result.outcome, result.detail = "still-running", done.detail
        result.finished = datetime.now(UTC)
        return done.detail
    if done.adopted:
        result.detail = f"adopted the running upgrade of {done.adopted}"
    return done.detail if done.state == "failed" else ""


def wait_until_idle(pve: ProxmoxCredentials | None, node: str, wait: NodeWait) -> list[str]:
    """Why ``node`` is busy, after waiting up to ``wait.wait_s`` for it to become idle ([] when
    it is idle). A node whose activity cannot be read counts as busy: unknown is never idle."""
    if pve is None:
        return ["cannot tell whether it is busy: proxmox is not configured"]
    deadline = time.monotonic() + wait.wait_s
    while True:
        try:
            tasks, guests = node_activity(pve, node)
            why = plan.node_busy(node, tasks, [plan.PveGuestInfo.of(g) for g in guests])
        except Exception as exc:
            why = [f"cannot tell whether it is busy: {exc}"]
        left = deadline - time.monotonic()
        if not why or left <= 0:
            return why
        time.sleep(min(wait.poll_s, left))


def _poll(runner: Runner, access: HostAccess) -> Detached | None:
    run = run_one(runner, HostCommand(access=access, command=POLL_COMMAND, timeout_s=30))
    if run.state != "ok" or run.result is None:
        return None
    state = parse_poll(run.result.stdout)
    return state if state.complete else None


def _wait_detached(
    runner: Runner, access: HostAccess, deadline: float, poll_s: float
) -> Detached | None:
    """Poll until the detached command ended (finished or lost) or ``deadline`` passes; returns
    the last state seen (None: no poll answered)."""
    last = None
    while True:
        state = _poll(runner, access)
        last = state or last
        if state is not None and (state.finished or state.lost):
            return state
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        time.sleep(min(poll_s, left))


def run_detached(runner: Runner, job: PatchJob) -> DetachedRun:
    """Run the job's upgrade detached on the host and poll it until it ends (CHANGES THE HOST).

    The host is polled first, and the start is never sent beside an upgrade it shows: one
    running there (a killed run's, or this task's before a retry) is adopted and waited for,
    never doubled; one this very run started (``detach.job``) is not started again either,
    running or finished: its end is this host's result (a retry after the start was sent). Only
    another run's upgrade, once it ended, is followed by this run's. Past ``upgrade_timeout_s``
    the result is "still running" with where to look; nothing is ever killed."""
    assert job.detach is not None
    access, detach = job.access, job.detach
    deadline = time.monotonic() + job.upgrade_timeout_s
    look = where_to_look(detach.systemd)
    still = f"still running after {job.upgrade_timeout_s:g}s (not stopped): {look}"
    adopted = None
    first = _poll(runner, access)
    ours = first is not None and first.job == detach.job
    if first is not None and first.running:
        adopted = first.job or "an earlier run"
        state = _wait_detached(runner, access, deadline, job.upgrade_poll_s)
        if state is None or not (state.finished or state.lost):
            why = f"the upgrade started by {adopted} is {still}"
            return DetachedRun(state="still-running", detail=why, adopted=adopted)
        if ours:  # this run's own upgrade (sent before a retry): its end is the result
            return _ended(state, look, adopted)
        adopted += f" (ended with status {state.status})" if state.finished else " (ended)"
    elif first is not None and ours and first.finished:
        return _ended(first, look, first.job)  # this run's upgrade ended before the retry
    start = run_one(
        runner,
        HostCommand(
            access=access,
            command=start_command(detach.job, job.upgrade, detach.systemd),
            timeout_s=60,
        ),
    )
    if start.state != "ok" or start.result is None or not start.result.ok:
        return DetachedRun(state="failed", detail=f"start: {failure_of(start)}", adopted=adopted)
    state = _wait_detached(runner, access, deadline, job.upgrade_poll_s)
    if state is None or not (state.finished or state.lost):
        return DetachedRun(state="still-running", detail=f"upgrade {still}", adopted=adopted)
    return _ended(state, look, adopted)


def _ended(state: Detached, look: str, adopted: str | None) -> DetachedRun:
    """The result of a detached upgrade that ended (finished, or lost without a status)."""
    if state.status == 0:
        return DetachedRun(state="ok", adopted=adopted)
    if state.status is None:
        why = f"the upgrade ended without an exit status (killed, or a reboot): see {look}"
    else:
        why = f"exit {state.status}: {failure_reason(state.log_tail)}"
    return DetachedRun(state="failed", detail=why, adopted=adopted)


def post_check(runner: Runner, job: PatchJob) -> str:
    """ "" when the host is healthy after its upgrade, else why not."""
    host, access, health = job.host, job.access, job.health
    after = check_many(runner, [access], CheckOptions(check_timeout_s=job.check_timeout_s), 1)
    c = after[0]
    if c.run.state != "ok" or c.facts is None or c.facts.problem:
        return f"post-check: {c.run.state} {c.run.detail or (c.facts.problem if c.facts else '')}"
    still = sorted({p.name for p in c.facts.pending} & set(host.packages))
    if still:
        return f"post-check: still pending: {', '.join(still[:10])}"
    # the upgrade command unholds what it held; a failed unhold would keep them back for good
    stuck = sorted(set(host.hold) & set(c.facts.held))
    if stuck:
        return f"post-check: still held after the upgrade (apt-mark unhold): {', '.join(stuck)}"
    mgr: Literal["apt", "apk"] = "apk" if job.manager == "apk" else "apt"
    if health.services:
        command = plan.services_command(mgr, health.services)
        run = run_one(
            runner, HostCommand(access=access, command=command, timeout_s=health.timeout_s)
        )
        if run.state != "ok" or run.result is None or not run.result.ok:
            return f"post-check: services not active ({', '.join(health.services)})"
    if health.command:
        run = run_one(
            runner, HostCommand(access=access, command=health.command, timeout_s=health.timeout_s)
        )
        if run.state != "ok" or run.result is None or not run.result.ok:
            return f"post-check: health command failed ({failure_of(run)})"
    if health.url:
        why = probe_url(health.url.replace("{host}", host.name), health.timeout_s)
        if why:
            return f"post-check: {why}"
    return ""


@task(name="reboot-node", task_run_name="reboot-{access.name}", cache_policy=NO_CACHE)
def reboot_node(
    ssh: SshCredentials,
    pve: ProxmoxCredentials | None,
    access: HostAccess,
    node: str,
    boot_timeout_s: float,
) -> str:
    """Reboot a node (CHANGES THE LAB); wait until it is back (a new boot id over SSH, online in
    PVE) and every guest that ran on it runs again. Returns "" or why not."""
    boot_id = HostCommand(
        access=access, command="cat /proc/sys/kernel/random/boot_id", timeout_s=15
    )
    runner = ssh.get_client()
    try:
        first = run_one(runner, boot_id)
        before = first.result.stdout.strip() if first.result else ""
        running: list[int] = []
        if pve is not None:
            guests = client(pve).guests()
            running = [g.vmid for g in guests if g.node == node and g.status == "running"]
        run_one(runner, HostCommand(access=access, command="reboot", timeout_s=30))
        deadline = time.monotonic() + boot_timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            probe = run_one(runner, boot_id)
            if probe.result is None or not probe.result.ok:
                continue
            if probe.result.stdout.strip() == before:
                continue
            if pve is not None and not _back_in_pve(pve, node, running):
                continue
            return ""
    finally:
        runner.close()
    return f"node did not come back within {boot_timeout_s:g}s"


def _back_in_pve(pve: ProxmoxCredentials, node: str, running: list[int]) -> bool:
    """The node is online again and every guest that ran on it runs again."""
    try:
        api = client(pve)
        nodes, guests = api.nodes(), api.guests()
    except Exception:  # the API is not back either: not yet
        return False
    if not any(n.node == node and n.online for n in nodes):
        return False
    status = {g.vmid: g.status for g in guests}
    return all(status.get(v) == "running" for v in running)
