"""Running a command in a VM through PVE's QEMU guest agent: start it, poll until it exited,
within a timeout and an output limit.

The agent runs argv without a shell, so a command line goes as ``["/bin/sh", "-c", line]``.
A VM whose agent is not configured, not enabled or not answering raises
:class:`AgentNotRunning` (callers report "could not check", never "up to date").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from labops.errors import ApiError, CommandTimeout
from labops.models.pve_agent import AgentExecStarted, AgentExecStatus, AgentResult

NOT_RUNNING = "guest agent not running"

# PVE's messages when the agent cannot be used (PVE::QemuServer::Agent::agent_available).
_UNAVAILABLE = (
    "guest agent is not running",
    "no qemu guest agent configured",
    "is not running",
)


class AgentNotRunning(ApiError):
    """The VM's guest agent cannot run commands (not configured, disabled, VM stopped)."""


class AgentApi(Protocol):
    """The part of :class:`labops.proxmox.PveClient` this module uses."""

    name: str

    def agent_exec(self, node: str, vmid: int, argv: Sequence[str]) -> AgentExecStarted: ...

    def agent_exec_status(self, node: str, vmid: int, pid: int) -> AgentExecStatus: ...


def shell_argv(command: str) -> list[str]:
    """A shell command line as the agent's argv."""
    return ["/bin/sh", "-c", command]


def _unavailable(exc: ApiError) -> bool:
    return any(m in str(exc).lower() for m in _UNAVAILABLE)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[:limit].decode(errors="ignore"), True


def run_command(
    api: AgentApi,
    node: str,
    vmid: int,
    argv: Sequence[str],
    *,
    timeout_s: float,
    poll_s: float = 0.5,
    max_output: int = 4 * 1024 * 1024,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> AgentResult:
    """Run ``argv`` in VM ``vmid`` and wait until it exited (CommandTimeout after ``timeout_s``;
    the process is left running in the guest, the agent has no kill). Output beyond
    ``max_output`` bytes per stream is cut and ``truncated`` set."""
    try:
        started = api.agent_exec(node, vmid, argv)
    except ApiError as exc:
        if _unavailable(exc):
            raise AgentNotRunning(api.name, f"VM {vmid}: {NOT_RUNNING} ({exc})") from exc
        raise
    deadline = clock() + timeout_s
    while True:
        status = api.agent_exec_status(node, vmid, started.pid)
        if status.exited:
            break
        if clock() >= deadline:
            raise CommandTimeout(
                api.name, f"VM {vmid}: command still running after {timeout_s:g} s"
            )
        sleep(poll_s)
    out, out_cut = _cut(status.out_data, max_output)
    err, err_cut = _cut(status.err_data, max_output)
    return AgentResult(
        exit_code=status.exitcode,
        signal=status.signal,
        stdout=out,
        stderr=err,
        truncated=out_cut or err_cut or status.out_truncated or status.err_truncated,
    )
