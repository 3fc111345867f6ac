"""Patch apply of VMs without SSH, through their QEMU guest agent: the runner without I/O, then
approve -> snapshot -> detached upgrade through the agent -> reboot -> report on the sandbox, a
dry run that sends no write, and a retry that never sends the detached start twice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from labops.errors import ApiError, CommandTimeout, ConfigError
from labops.guest_agent import AgentRunner
from labops.models.pve_agent import AgentExecStarted, AgentExecStatus
from labops.patching import plan
from labops.patching.packages import PendingUpdate
from labops.patching.report import HostCheck
from labops.ssh import SshTarget
from tasks.ssh import HostAccess, HostCommand, Runners, run_one
from tests.fixtures.sandbox import wait_task
from tests.journal_rules import mutating
from tests.patching.helpers import apply_approved, derived_config, guest, pending_of, report_of

VM = "haos"


class FakeAgent:
    """PVE's agent endpoints for one VM: every exec answers after ``polls`` polls."""

    name = "proxmox"

    def __init__(self, final: dict[str, Any], polls: int = 1, fail: str | None = None) -> None:
        self.final = final
        self.polls = polls
        self.fail = fail
        self.sent: list[tuple[str, int, list[str]]] = []
        self.asked = 0

    def agent_exec(self, node: str, vmid: int, argv: Sequence[str]) -> AgentExecStarted:
        if self.fail:
            raise ApiError("proxmox", self.fail, 500)
        self.sent.append((node, vmid, list(argv)))
        return AgentExecStarted(pid=len(self.sent))

    def agent_exec_status(self, node: str, vmid: int, pid: int) -> AgentExecStatus:
        self.asked += 1
        if self.asked < self.polls:
            return AgentExecStatus.model_validate({"exited": 0})
        return AgentExecStatus.model_validate({"exited": 1, **self.final})


def _access() -> HostAccess:
    return HostAccess(name=VM, ssh=SshTarget(name=VM, address="pve2"), vmid=800, via="agent")


def test_agent_runner_has_the_ssh_interface() -> None:
    """A session of the node runs ``sh -c`` in the VM by vmid and answers a CommandResult; a
    signal is 128+N as a shell says; the node itself is never a target."""
    agent = FakeAgent({"exitcode": 0, "out-data": "ok\n"}, polls=2)
    runner = AgentRunner(agent, poll_s=0, sleep=lambda s: None)
    with runner.session(SshTarget(name=VM, address="pve2")) as s:
        r = s.run_in_guest(800, "echo ok", timeout=5)
        with pytest.raises(ConfigError):
            s.run("echo on the node")
    assert agent.sent == [("pve2", 800, ["/bin/sh", "-c", "echo ok"])]
    assert r.ok and r.stdout == "ok\n" and r.host == VM and r.command == "echo ok"
    killed = AgentRunner(FakeAgent({"signal": 9}), sleep=lambda s: None)
    with killed.session(SshTarget(name=VM, address="pve2")) as s:
        assert s.run_in_guest(800, "sleep 1").exit_status == 137


def test_runner_rows_timeout_agent_down_and_no_proxmox() -> None:
    """Through the SSH steps' own ``run_one``: a command past its timeout is a timeout row, an
    agent that is not running an unreachable one, a VM without Proxmox configured an error."""
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    hanging = AgentRunner(FakeAgent({}, polls=10**6), poll_s=1, clock=lambda: now[0], sleep=sleep)
    job = HostCommand(access=_access(), command="apt-get -y dist-upgrade", timeout_s=3)
    assert run_one(Runners(None, hanging), job).state == "timeout"
    down = AgentRunner(FakeAgent({}, fail="POST /x: QEMU guest agent is not running"))
    row = run_one(Runners(None, down), job)
    assert row.state == "unreachable" and "guest agent not running" in row.detail
    assert run_one(Runners(None, None), job).state == "error"
    with pytest.raises(CommandTimeout), hanging.session(SshTarget(name=VM, address="pve2")) as s:
        s.run_in_guest(800, "sleep 9", timeout=2)


def test_agent_vms_are_planned_and_the_table_says_how_they_are_reached() -> None:
    row = HostCheck(
        host=VM,
        kind="vm",
        node="pve2",
        vmid=800,
        access="agent",
        state="updates",
        package_manager="apt",
        packages=[PendingUpdate(name="openssl", to_version="3.0.17-1", security=True)],
    )
    planned = plan.plan_host(row, security_only=False)
    assert planned is not None and planned.packages == ["openssl"]
    rollout = plan.plan_rollout([planned], [], 0, 5, 2)
    assert plan.protection(planned, True, None, 26) == "snapshot"
    table = plan.plan_table(rollout, [row], {VM: "snapshot"}, security_only=False)
    assert table[0]["access"] == "agent" and table[0]["protection"] == "snapshot"


# -- on the sandbox ------------------------------------------------------------------------------


def _vm_snapshots(sandbox: Any, node: str, vmid: int) -> list[str]:
    snaps = sandbox.pve().nodes(node).qemu(vmid).snapshot.get()
    return [s["name"] for s in snaps if s["name"] != "current"]


def _starts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The detached upgrade starts a VM ran (systemd-run, or the nohup'ed script)."""
    return [
        e
        for e in entries
        if e["kind"] == "exec"
        and e.get("host") == VM
        and (e["argv"][0] == "systemd-run" or e["argv"][:1] == ["nohup"])
    ]


@pytest.mark.usefixtures("prefect_server")
def test_approved_vm_snapshot_upgrade_through_agent_reboot_report(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """Approved: the VM is snapshotted through PVE (qemu), upgraded detached through its agent,
    post-checked, rebooted by PVE's own reboot task (its kernel asked for it), its snapshot
    deleted (keep time 0) and the report says so."""
    sb = sandbox_clean
    node, vmid = guest(sb, VM)
    sb.pve().nodes(node).qemu(vmid).agent.ping.post()  # its OS exists from the first agent call
    sb.control(
        "fleet",
        "set_pending",
        host=VM,
        packages=[{"name": "linux-image-amd64"}, {"name": "openssl", "security": True}],
        held=[],
    )
    mark = sb.journal_mark()
    report = apply_approved(sb, tmp_path, [VM], reboot="when-required")
    assert not report.failures, report.failures
    (done,) = report.applied
    assert done.host == VM and done.kind == "vm" and done.outcome == "patched", done.detail
    assert done.snapshot and done.snapshot.startswith("labops-patch-")
    assert done.rebooted and sorted(done.upgraded) == ["linux-image-amd64", "openssl"]
    assert pending_of(sb, VM) == []
    assert not sb.control("fleet", "state", host=VM)["reboot_required"]
    assert _vm_snapshots(sb, node, vmid) == []  # deleted at once (keep time 0)
    assert f"{VM}: {done.snapshot}" in report.deleted_snapshots
    entries = sb.journal(mark)
    (start,) = _starts(entries)  # one detached start
    calls = [
        (e["method"], e["path"].split(f"/qemu/{vmid}/", 1)[1])
        for e in entries
        if e["kind"] == "http" and f"/qemu/{vmid}/" in e["path"]
    ]
    writes = [c for c in calls if not c[1].startswith("agent/")]
    assert writes == [
        ("POST", "snapshot"),
        ("POST", "status/reboot"),
        ("DELETE", f"snapshot/{done.snapshot}"),
    ], writes
    snapped = next(
        e["seq"] for e in entries if e["kind"] == "http" and e["path"].endswith(f"/{vmid}/snapshot")
    )
    assert snapped < start["seq"]  # the snapshot before the upgrade
    assert VM in report.markdown()


@pytest.mark.usefixtures("prefect_server")
def test_failed_vm_upgrade_rolled_back_to_its_snapshot(sandbox_clean: Any, tmp_path: Path) -> None:
    sb = sandbox_clean
    node, vmid = guest(sb, VM)
    sb.pve().nodes(node).qemu(vmid).agent.ping.post()
    sb.control("fleet", "set_pending", host=VM, packages=[{"name": "openssl"}], held=[])
    sb.set_faults("pve", extra={"failing_upgrade_hosts": [VM]})
    report = apply_approved(sb, tmp_path, [VM])
    (done,) = report.applied
    assert done.outcome == "rolled-back" and done.rolled_back, done.detail
    assert f"rolled back to {done.snapshot}" in done.detail
    assert pending_of(sb, VM) == ["openssl"]  # the OS as it was before the upgrade
    assert sb.pve().nodes(node).qemu(vmid).status.current.get()["status"] == "running"
    assert _vm_snapshots(sb, node, vmid) == [done.snapshot]  # kept for the operator
    upid = sb.pve().nodes(node).qemu(vmid).snapshot(done.snapshot).delete()  # the session's lab
    assert wait_task(sb.pve(), node, upid)["exitstatus"] == "OK"


@pytest.mark.usefixtures("prefect_server")
def test_dry_run_through_the_agent_sends_no_write(sandbox_clean: Any, tmp_path: Path) -> None:
    """A dry run reaches the VM through its agent with read commands only (the sandbox's journal
    of everything it received says so) and simulates the very upgrade apply would run."""
    from flows.patching import patch_apply

    sb = sandbox_clean
    node, vmid = guest(sb, VM)
    sb.pve().nodes(node).qemu(vmid).agent.ping.post()
    sb.control("fleet", "set_pending", host=VM, packages=[{"name": "openssl"}], held=[])
    cfg = derived_config(sb, tmp_path, refresh=False)
    snapshots = _vm_snapshots(sb, node, vmid)
    mark = sb.journal_mark()
    report = report_of(patch_apply(config=cfg, dry_run=True, hosts=[VM], return_state=True))
    (sim,) = report.applied
    assert sim.host == VM and sim.outcome == "simulated", sim.detail
    assert "Inst openssl" in (sim.simulation or "")
    entries = sb.journal(mark)
    assert mutating(entries) == []
    ran = [" ".join(e["argv"]) for e in entries if e["kind"] == "exec" and e.get("host") == VM]
    assert any(line.startswith("apt-get") and " -s " in line for line in ran), ran
    assert pending_of(sb, VM) == ["openssl"] and _vm_snapshots(sb, node, vmid) == snapshots


def _vm_job(sb: Any, tmp_path: Path, run: str, before: str = "") -> tuple[Runners, Any]:
    """The agent runner of the sandbox's PVE and a PatchJob upgrading openssl in the VM
    detached for run ``run`` (``before``: shell words run before the upgrade)."""
    from labops.config import load_config
    from labops.config.secrets import resolve_secret
    from labops.proxmox import PveClient
    from tasks.patch_host import Detach, PatchJob

    node, vmid = guest(sb, VM)
    sb.pve().nodes(node).qemu(vmid).agent.ping.post()
    sb.control("fleet", "set_pending", host=VM, packages=[{"name": "openssl"}], held=[])
    system = load_config(str(sb.config_path)).systems.proxmox
    assert system is not None
    runner = Runners(
        None, AgentRunner(PveClient(system, resolve_secret(system.token_secret)), poll_s=0.05)
    )
    upgrade = plan.decide_upgrade("vm", "apt", ["openssl"]).command(30)
    job = PatchJob(
        host=plan.PlanHost(name=VM, kind="vm", node=node, vmid=vmid, packages=["openssl"]),
        step=plan.Step(phase="batch", index=1, hosts=[]),
        access=HostAccess(name=VM, ssh=SshTarget(name=VM, address=node), vmid=vmid, via="agent"),
        manager="apt",
        upgrade=before + upgrade,
        detach=Detach(job=run, systemd=True),
        upgrade_timeout_s=120,
        upgrade_poll_s=0.05,
        check_timeout_s=30,
        state_dir=tmp_path,
    )
    return runner, job


def test_retry_never_sends_the_detached_start_twice(sandbox_clean: Any, tmp_path: Path) -> None:
    """The upgrade of a VM runs detached through its agent. A retry of the same run (its first
    try gave up while the upgrade ran, or after it ended) polls first and takes that upgrade's
    end as its result: the start is sent once, whatever the timing."""
    from labops.patching.detached import POLL_COMMAND, parse_poll
    from tasks.patch_host import run_detached

    sb = sandbox_clean
    runner, job = _vm_job(sb, tmp_path, "retry-run", "sleep 2; ")  # real seconds in the sandbox
    access = job.access
    job = job.model_copy(update={"upgrade_timeout_s": 0})  # the first try gives up at once
    mark = sb.journal_mark()
    first = run_detached(runner, job)
    assert first.state in ("still-running", "ok"), first  # "ok" only on a very slow machine
    patient = job.model_copy(update={"upgrade_timeout_s": 120.0})
    retry = run_detached(runner, patient)
    assert retry.state == "ok" and retry.adopted in (None, "retry-run"), retry
    again = run_detached(runner, patient)  # a retry after it ended: its end, nothing new
    assert again.state == "ok" and again.adopted == "retry-run", again
    assert len(_starts(sb.journal(mark))) == 1
    assert pending_of(sb, VM) == []
    poll = run_one(runner, HostCommand(access=access, command=POLL_COMMAND, timeout_s=30))
    assert poll.result is not None and parse_poll(poll.result.stdout).job == "retry-run"


def test_killed_runs_upgrade_adopted_before_this_runs_starts(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """An upgrade a killed run left running in the VM is waited for through the agent, never
    doubled; this run's starts only once it ended."""
    from labops.patching.detached import start_command
    from tasks.patch_host import run_detached

    sb = sandbox_clean
    runner, job = _vm_job(sb, tmp_path, "new-run")
    mark = sb.journal_mark()
    killed = HostCommand(
        access=job.access, command=start_command("killed-run", "sleep 2", True), timeout_s=30
    )
    assert run_one(runner, killed).state == "ok"
    done = run_detached(runner, job)
    assert done.state == "ok", done
    # adopted while it ran (the usual case), or found ended already on a very slow machine
    assert done.adopted in ("killed-run (ended with status 0)", None), done
    starts = _starts(sb.journal(mark))
    assert len(starts) == 2  # the killed run's and this run's, once each
    ended = [
        e["seq"]
        for e in sb.journal(mark)
        if e["kind"] == "exec" and e.get("host") == VM and e["argv"][:1] == ["mv"]
    ]
    assert ended and ended[0] < starts[1]["seq"]  # ours began after the adopted one ended
    assert pending_of(sb, VM) == []


def test_exec_answered_500_after_it_ran_is_not_sent_again(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """PVE answers the agent's exec 500 after the command began (its error came after the
    work): the command ran once, is never sent again, and the host's row says it failed and
    that the command may have run. The polls (GETs) of a command are still retried."""
    sb = sandbox_clean
    runner, job = _vm_job(sb, tmp_path, "once-run")
    access = job.access
    marker = "/tmp/labops-ran-once"
    sb.set_faults("pve", extra={"error_after": {"/agent/exec": "got timeout"}})
    mark = sb.journal_mark()
    row = run_one(runner, HostCommand(access=access, command=f"touch {marker}", timeout_s=30))
    entries = sb.journal(mark)
    posts = [e for e in entries if e["kind"] == "http" and e["path"].endswith("/agent/exec")]
    ran = [e for e in entries if e["kind"] == "exec" and e.get("host") == VM]
    assert len(posts) == 1, posts  # the old policy sent it 4 times
    assert [e["argv"] for e in ran if e["argv"][0] == "touch"] == [["touch", marker]], ran
    assert row.state != "ok" and row.result is None, row
    assert "500 got timeout" in row.detail and "may have been" in row.detail, row.detail

    # a read answered 500 twice is retried and the command's end is still seen
    sb.set_faults("pve", extra={"error_after": None, "fail_first": {"/agent/exec-status": 2}})
    mark = sb.journal_mark()
    row = run_one(runner, HostCommand(access=access, command="echo polled", timeout_s=30))
    assert row.state == "ok" and row.result is not None, row
    assert row.result.stdout.strip() == "polled"
    assert sb.state()["faults"]["pve"]["extra"]["fail_first"] == {"/agent/exec-status": 0}
    assert len([e for e in sb.journal(mark) if e["kind"] == "http"]) == 1


@pytest.mark.usefixtures("prefect_server")
def test_vm_whose_agent_is_down_asked_once_reported_could_not_check(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """PVE's 500 "QEMU guest agent is not running" cannot be fixed by asking again: the exec is
    sent once and the VM is reported "could not check" with that reason."""
    from flows.patching import patch_check

    sb = sandbox_clean
    _node, vmid = guest(sb, VM)
    cfg = derived_config(sb, tmp_path, check_timeout_s=10)
    sb.set_faults("pve", extra={"agent_down": [vmid]})
    mark = sb.journal_mark()
    report = report_of(patch_check(config=cfg, hosts=[VM], return_state=True))
    (row,) = [h for h in report.hosts if h.host == VM]
    assert not row.known and "could not check: guest agent not running" in row.detail, row
    posts = [
        e
        for e in sb.journal(mark)
        if e["kind"] == "http" and e["path"].endswith(f"/qemu/{vmid}/agent/exec")
    ]
    assert len(posts) == 1, posts


@pytest.mark.usefixtures("prefect_server")
def test_vm_start_whose_answer_is_lost_is_adopted_from_its_status(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """A VM started again (after a drain's shutdown, a rollback) whose start answer is lost
    after it was acted on, while the node's task list cannot be read: the VM's own status shows
    it running, so the start is taken as done (never sent twice). A reboot's lost answer is not
    taken as done: the status cannot tell one happened."""
    from blocks.context import LabContext
    from labops.errors import MaybeApplied
    from tasks.pve import power_guest

    sb = sandbox_clean
    node, vmid = guest(sb, VM)
    block = LabContext.load(derived_config(sb, tmp_path)).pve_block()
    assert power_guest.fn(block, node, "qemu", vmid, "shutdown").status == "ok"
    mark = sb.journal_mark()
    sb.set_faults("pve", extra={"drop_answer": ["/status/start"], "tasks_unreadable": True})
    done = power_guest.fn(block, node, "qemu", vmid, "start", lost_answer_wait_s=60)
    assert done.status == "ok" and "the guest is running now" in done.exitstatus
    assert sb.pve().nodes(node).qemu(vmid).status.current.get()["status"] == "running"
    starts = [
        e
        for e in sb.journal(mark, system="pve")
        if e["method"] == "POST" and e["path"].endswith(f"/qemu/{vmid}/status/start")
    ]
    assert len(starts) == 1, starts
    sb.set_faults("pve", extra={"drop_answer": ["/status/reboot"], "tasks_unreadable": True})
    with pytest.raises(MaybeApplied):
        power_guest.fn(block, node, "qemu", vmid, "reboot", lost_answer_wait_s=1)
