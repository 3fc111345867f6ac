"""The sandbox's QEMU guest agent endpoints, as PVE serves them (through proxmoxer)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from proxmoxer import ResourceException

from tests.fixtures.sandbox import SandboxHandle

VM = 800  # haos on pve2, Debian 12 in the sandbox


def _agent(private_clean: SandboxHandle) -> Any:
    return private_clean.pve().nodes("pve2").qemu(VM).agent


def _wait(agent: Any, pid: int) -> dict[str, Any]:
    for _ in range(200):
        status: dict[str, Any] = agent("exec-status").get(pid=pid)
        if status["exited"]:
            return status
        time.sleep(0.02)
    raise AssertionError("never exited")


def test_ping_answers_an_empty_result(private_clean: SandboxHandle) -> None:
    assert _agent(private_clean).ping.post() == {"result": {}}


def test_exec_runs_argv_against_the_vms_os_state(private_clean: SandboxHandle) -> None:
    agent = _agent(private_clean)
    started = agent.exec.post(command=["cat", "/etc/os-release"])
    assert set(started) == {"pid"} and isinstance(started["pid"], int)
    status = _wait(agent, started["pid"])
    assert status["exitcode"] == 0 and "ID=debian" in status["out-data"]
    assert "out-truncated" not in status
    # The agent forgets a process once it reported it exited.
    with pytest.raises(ResourceException) as err:
        agent("exec-status").get(pid=started["pid"])
    assert err.value.status_code == 500


def test_exec_takes_a_shell_line_only_through_sh(private_clean: SandboxHandle) -> None:
    agent = _agent(private_clean)
    pid = agent.exec.post(command=["/bin/sh", "-c", "echo one; echo two >&2; exit 3"])["pid"]
    status = _wait(agent, pid)
    assert status["exitcode"] == 3
    assert status["out-data"] == "one\n" and status["err-data"] == "two\n"


def test_output_beyond_the_agents_buffer_is_truncated(private_clean: SandboxHandle) -> None:
    private_clean.set_faults("pve", extra={"agent_output_limit": 10})
    agent = _agent(private_clean)
    pid = agent.exec.post(command=["cat", "/etc/os-release"])["pid"]
    status = _wait(agent, pid)
    assert status["out-truncated"] == 1 and len(status["out-data"]) == 10


def test_agent_not_running_is_an_error(private_clean: SandboxHandle) -> None:
    private_clean.set_faults("pve", extra={"agent_down": [VM]})
    with pytest.raises(ResourceException) as err:
        _agent(private_clean).ping.post()
    assert err.value.status_code == 500
    assert "QEMU guest agent is not running" in str(err.value)


def test_a_container_has_no_agent(private_clean: SandboxHandle) -> None:
    with pytest.raises(ResourceException) as err:
        private_clean.pve().nodes("pve1").qemu(100).agent.ping.post()
    assert "does not exist" in str(err.value)


def test_exec_requires_a_command(private_clean: SandboxHandle) -> None:
    with pytest.raises(ResourceException) as err:
        _agent(private_clean).exec.post()
    assert err.value.status_code == 400
