"""Patch check of VMs through the QEMU guest agent: the polling core without I/O, then the
whole check against the sandbox's agent endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pytest

from labops.errors import ApiError, CommandTimeout
from labops.guest_agent import AgentApi, AgentNotRunning, AgentRunner, run_command
from labops.models.pve_agent import AgentExecStarted, AgentExecStatus
from labops.proxmox import PveClient
from labops.ssh import SshTarget
from tasks.ssh import CheckedHost, CheckOptions, HostAccess, Runners, check_many
from tests.fixtures.sandbox import SandboxHandle

TODAY = date(2026, 12, 5)


def check_vm(
    api: AgentApi, node: str, vmid: int, today: date, *, timeout_s: float, poll_s: float = 0.5
) -> CheckedHost:
    """VM ``vmid`` checked as the patch check flow checks every host: its one check path and
    runner (``tasks.ssh.check_many``), the VM reached through its guest agent."""
    access = HostAccess(name="vm", ssh=SshTarget(name="vm", address=node), vmid=vmid, via="agent")
    runner = Runners(None, AgentRunner(api, poll_s=poll_s))
    opts = CheckOptions(check_timeout_s=timeout_s)
    (checked,) = check_many(runner, [access], opts, 1, today)
    return checked


class FakeAgent:
    name = "proxmox"

    def __init__(self, answers: list[AgentExecStatus], fail: str | None = None) -> None:
        self.answers = answers
        self.fail = fail
        self.polls = 0

    def agent_exec(self, node: str, vmid: int, argv: Sequence[str]) -> AgentExecStarted:
        if self.fail:
            raise ApiError("proxmox", self.fail, 500)
        return AgentExecStarted(pid=7)

    def agent_exec_status(self, node: str, vmid: int, pid: int) -> AgentExecStatus:
        self.polls += 1
        return self.answers[min(self.polls - 1, len(self.answers) - 1)]


def _status(**kw: object) -> AgentExecStatus:
    return AgentExecStatus.model_validate(kw)


def test_polls_until_exited_and_limits_output() -> None:
    agent = FakeAgent([_status(exited=0), _status(exited=1, exitcode=0, **{"out-data": "x" * 9})])
    result = run_command(
        agent, "pve2", 800, ["true"], timeout_s=5, max_output=4, sleep=lambda s: None
    )
    assert agent.polls == 2 and result.stdout == "xxxx" and result.truncated
    assert result.exit_code == 0


def test_times_out_on_a_fake_clock() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    agent = FakeAgent([_status(exited=False)])
    with pytest.raises(CommandTimeout):
        run_command(
            agent,
            "pve2",
            800,
            ["sleep"],
            timeout_s=2,
            poll_s=0.5,
            clock=lambda: now[0],
            sleep=sleep,
        )
    assert agent.polls == 5


def test_agent_not_running_is_its_own_error() -> None:
    with pytest.raises(AgentNotRunning):
        run_command(
            FakeAgent([], fail="POST /x: QEMU guest agent is not running"),
            "n",
            1,
            ["x"],
            timeout_s=1,
        )


def test_truncated_check_output_is_never_up_to_date() -> None:
    agent = FakeAgent([_status(exited=1, exitcode=0, **{"out-truncated": True})])
    facts = check_vm(agent, "pve2", 800, TODAY, timeout_s=1).facts
    assert facts is not None and facts.problem is not None
    assert facts.problem.startswith("could not check")


def _client(private_clean: SandboxHandle) -> PveClient:
    from labops.config import load_config
    from labops.config.secrets import resolve_secret

    system = load_config(str(private_clean.config_path)).systems.proxmox
    assert system is not None
    quick = system.retry.model_copy(update={"attempts": 1, "backoff_s": 0.01})
    return PveClient(
        system.model_copy(update={"retry": quick}), resolve_secret(system.token_secret)
    )


def test_vm_checked_through_the_agent_with_the_same_parser(private_clean: SandboxHandle) -> None:
    facts = check_vm(_client(private_clean), "pve2", 800, TODAY, timeout_s=20, poll_s=0.05).facts
    assert facts is not None and facts.problem is None
    assert facts.package_manager == "apt" and facts.os.id == "debian"


def test_vm_without_a_running_agent_could_not_be_checked(private_clean: SandboxHandle) -> None:
    private_clean.set_faults("pve", extra={"agent_down": [800]})
    checked = check_vm(_client(private_clean), "pve2", 800, TODAY, timeout_s=20, poll_s=0.05)
    assert checked.run.detail == "could not check: guest agent not running"
    assert checked.run.state == "error" and checked.facts is None  # no pending list: unknown


def test_hanging_command_times_out_as_could_not_check(private_clean: SandboxHandle) -> None:
    private_clean.set_faults("pve", extra={"agent_hanging": [800]})
    checked = check_vm(_client(private_clean), "pve2", 800, TODAY, timeout_s=0.3, poll_s=0.05)
    assert checked.run.state == "timeout" and "still running" in checked.run.detail


def test_a_refused_agent_call_names_the_privilege() -> None:
    from labops.proxmox import _PVE_PRIVILEGES, _privilege_hint

    hint = _privilege_hint(_PVE_PRIVILEGES, "nodes/pve2/qemu/800/agent/exec")
    assert hint.startswith("VM.GuestAgent.Unrestricted on /vms/<vmid>")
