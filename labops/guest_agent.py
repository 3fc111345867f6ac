"""Running a command in a VM through PVE's QEMU guest agent: start it, poll until it exited,
within a timeout and an output limit; and :class:`AgentRunner`, the same with the interface of
the SSH runner, through which patch apply reaches VMs without SSH.

The agent runs argv without a shell, so a command line goes as ``["/bin/sh", "-c", line]``.
A VM whose agent is not configured, not enabled or not answering raises
:class:`AgentNotRunning` (callers report "could not check", never "up to date").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from labops.errors import ApiError, CommandTimeout, ConfigError
from labops.models.pve_agent import AgentExecStarted, AgentExecStatus, AgentResult
from labops.ssh import CommandResult, SshTarget

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


# -- the runner of patch apply (the SSH runner's interface) ---------------------------------------


class AgentSession:
    """Commands in the VMs of one PVE node, through their guest agents, with the interface of
    :class:`labops.ssh.SshSession`: :meth:`run_in_guest` runs a shell command line in VM
    ``vmid`` and answers a :class:`labops.ssh.CommandResult`. There is no connection to hold:
    every command is one ``exec`` and the polls of its ``exec-status``."""

    def __init__(self, runner: AgentRunner, node: str, name: str) -> None:
        self.runner = runner
        self.node = node
        self.name = name

    def __enter__(self) -> AgentSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Refused: the agent runs commands inside a VM, never on the node itself."""
        raise ConfigError(f"{self.name}: the guest agent runs commands in a VM only (no vmid)")

    def run_in_guest(self, vmid: int, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` (``sh -c``) in VM ``vmid`` and wait until it exited; a non-zero exit
        is in the result, a command still running after ``timeout`` raises CommandTimeout (it
        is left running: the agent has no kill). A command ended by a signal exits 128+signal,
        as a shell says."""
        r = self.runner
        started = r.clock()
        result = run_command(
            r.api,
            self.node,
            vmid,
            shell_argv(command),
            timeout_s=timeout if timeout is not None else r.timeout_s,
            poll_s=r.poll_s,
            max_output=r.max_output,
            clock=r.clock,
            sleep=r.sleep,
        )
        code = result.exit_code if result.exit_code is not None else 128 + (result.signal or 0)
        return CommandResult(
            host=self.name,
            command=command,
            exit_status=code,
            stdout=result.stdout,
            stderr=result.stderr,
            truncated=result.truncated,
            duration_s=round(r.clock() - started, 3),
        )


class AgentRunner:
    """Runs commands in VMs through PVE's QEMU guest agent with the interface of
    :class:`labops.ssh.SshRunner`, so that the steps of patch apply (the check, the detached
    upgrade and its polls, the post-check) run unchanged on a VM without SSH: ``session(target)``
    takes the VM's node as ``target.address``, and the session runs in the VM by vmid."""

    def __init__(
        self,
        api: AgentApi,
        *,
        timeout_s: float = 120.0,
        poll_s: float = 0.5,
        max_output: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.max_output = max_output
        self.clock = clock
        self.sleep = sleep

    def session(self, target: SshTarget) -> AgentSession:
        """The VMs of node ``target.address`` (``target.name`` names the host in results)."""
        return AgentSession(self, target.address, target.name)

    def close(self) -> None:
        """Nothing to close: the PVE client is shared."""
