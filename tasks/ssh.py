"""SSH tasks over ``labops.ssh.SshRunner``, batched: one task runs a command on many hosts.

A task run costs 10-30 ms of Prefect bookkeeping; for a sweep over hundreds of hosts that would be
more than the work itself, so one task takes a batch and fans out on its own bounded thread pool.
Each host keeps its own result: an unreachable host, a refused host key or a failed login is a
row with that state, never an exception that hides the other hosts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.proxmox import ProxmoxCredentials
from blocks.ssh import SshCredentials
from labops.errors import (
    AuthFailed,
    CommandTimeout,
    ConfigError,
    HostKeyRejected,
    LabopsError,
    Unreachable,
)
from labops.gctune import fewer_collections
from labops.guest_agent import NOT_RUNNING, AgentNotRunning, AgentRunner
from labops.patching import apt
from labops.patching.hostcheck import CHECK_COMMAND, HostFacts, parse_check_output, refresh_command
from labops.ssh import CommandResult, SshRunner, SshTarget

RunState = Literal["ok", "unreachable", "host-key-rejected", "auth-failed", "timeout", "error"]


class HostAccess(BaseModel):
    """How to run a command on one host: SSH to ``ssh``, and inside guest ``vmid`` through
    ``pct exec`` when it is set (``ssh`` is then the guest's node); with ``via`` agent, inside VM
    ``vmid`` through its QEMU guest agent (``ssh.address`` is then the VM's PVE node, never
    connected to)."""

    name: str
    ssh: SshTarget
    vmid: int | None = None
    via: Literal["ssh", "agent"] = "ssh"


class Runners:
    """The runner of each way a host is reached: SSH (``pct exec`` too) and the guest agent.
    One object for the steps of patch apply, so that a step reads the same for every host."""

    def __init__(self, ssh: SshRunner | None, agent: AgentRunner | None = None) -> None:
        self.ssh = ssh
        self.agent = agent

    def session(self, access: HostAccess) -> Any:
        """A session for ``access`` (an SSH or an agent session: the same methods)."""
        if access.via == "agent":
            if self.agent is None or access.vmid is None:
                raise ConfigError(f"{access.name}: the guest agent needs proxmox and a vmid")
            return self.agent.session(access.ssh)
        if self.ssh is None:
            raise ConfigError(f"{access.name}: SSH is not configured")
        return self.ssh.session(access.ssh)

    def close(self) -> None:
        if self.ssh is not None:
            self.ssh.close()


Runner = SshRunner | Runners


def _session(runner: Runner, access: HostAccess) -> Any:
    if isinstance(runner, Runners):
        return runner.session(access)
    return Runners(runner).session(access)


def runners(ssh: SshCredentials, pve: ProxmoxCredentials | None) -> Runners:
    """SSH and, when Proxmox is configured, the guest agents of its VMs."""
    agent = None
    if pve is not None:
        # only here: a sweep of SSH hosts alone never imports the Proxmox tasks (~0.1 s)
        from tasks.pve import client

        agent = AgentRunner(client(pve))
    return Runners(ssh.get_client(), agent)


class HostRun(BaseModel):
    """The result of one command on one host (``result`` is None unless ``state`` is ok)."""

    host: str
    state: RunState
    detail: str = ""
    result: CommandResult | None = None
    duration_s: float = 0.0


class HostCommand(BaseModel):
    """A host and the command to run on it (commands may differ per host)."""

    access: HostAccess
    command: str
    timeout_s: float = Field(120.0, gt=0)


def _state_of(exc: Exception) -> RunState:
    if isinstance(exc, AgentNotRunning):  # the VM's way in is down, as a refused SSH port
        return "unreachable"
    if isinstance(exc, HostKeyRejected):
        return "host-key-rejected"
    if isinstance(exc, AuthFailed):
        return "auth-failed"
    if isinstance(exc, CommandTimeout):
        return "timeout"
    if isinstance(exc, Unreachable):
        return "unreachable"
    return "error"


def _describe(exc: Exception) -> str:
    """labops errors carry a message naming the host and the fix; others get their type."""
    message = getattr(exc, "message", None) if isinstance(exc, LabopsError) else None
    return str(message or f"{type(exc).__name__}: {exc}")


def run_one(runner: Runner, job: HostCommand) -> HostRun:
    """Run one command on one host; every failure becomes the row's state."""
    started = time.monotonic()
    access = job.access
    try:
        with _session(runner, access) as s:
            if access.vmid is not None:
                result = s.run_in_guest(access.vmid, job.command, timeout=job.timeout_s)
            else:
                result = s.run(job.command, timeout=job.timeout_s)
    except Exception as exc:  # one host's failure must never stop the others
        return HostRun(
            host=access.name,
            state=_state_of(exc),
            detail=_describe(exc),
            duration_s=round(time.monotonic() - started, 3),
        )
    return HostRun(
        host=access.name,
        state="ok",
        result=result,
        duration_s=round(time.monotonic() - started, 3),
    )


def run_many(
    runner: Runner,
    jobs: Sequence[HostCommand],
    parallel: int,
    on_done: Callable[[HostRun], None] | None = None,
) -> list[HostRun]:
    """Run every job with at most ``parallel`` hosts at once; results in the jobs' order."""
    if not jobs:
        return []
    workers = max(1, min(parallel, len(jobs)))
    with (
        fewer_collections(),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labops-ssh") as pool,
    ):
        futures = [pool.submit(run_one, runner, job) for job in jobs]
        results = []
        for fut in futures:
            run = fut.result()
            if on_done is not None:
                on_done(run)
            results.append(run)
    return results


@task(name="ssh-run-batch", cache_policy=NO_CACHE)
def run_batch(
    ssh: SshCredentials,
    jobs: list[HostCommand],
    parallel: int = 50,
    pve: ProxmoxCredentials | None = None,
) -> list[HostRun]:
    """Run commands on a batch of hosts over SSH (``pct exec`` for guests reached via their node;
    VMs whose access is ``agent`` through their guest agent, which needs ``pve``).

    Changes hosts only if the commands do: the patch flow passes read-only check commands in
    check mode. At most ``parallel`` connections at once; each host gets its own row.

    Args:
        ssh: the SSH credentials block.
        jobs: host + command + timeout for each host.
        parallel: hosts worked on at the same time.
        pve: the Proxmox credentials (None: a VM reached through its agent fails as an error).

    Returns:
        One ``HostRun`` per job, in the jobs' order.
    """
    runner = runners(ssh, pve)
    try:
        return run_many(runner, jobs, parallel)
    finally:
        runner.close()


@task(name="ssh-run", cache_policy=NO_CACHE)
def run_command(ssh: SshCredentials, job: HostCommand) -> HostRun:
    """Run one command on one host (used for the steps of apply mode, one host at a time).

    Whether it changes the host depends on the command; the patch flow names it in the run name.
    """
    runner = ssh.get_client()
    try:
        return run_one(runner, job)
    finally:
        runner.close()


# -- patch check ---------------------------------------------------------------------------------


class CheckOptions(BaseModel):
    """How the check runs on each host."""

    refresh: bool = False
    lock_wait_s: float = Field(120.0, ge=0)
    refresh_timeout_s: float = Field(300.0, gt=0)
    check_timeout_s: float = Field(120.0, gt=0)


def _refresh(session: Any, access: HostAccess, opts: CheckOptions) -> str:
    """Refresh the package lists, waiting for a held apt lock; returns a note ("" when fine).

    ``apt-get update`` takes ``/var/lib/apt/lists/lock``, which ``DPkg::Lock::Timeout`` does not
    cover, so a held lock is waited for here, polling until ``lock_wait_s`` has passed.
    """

    def run(cmd: str) -> CommandResult:
        if access.vmid is not None:
            return session.run_in_guest(access.vmid, cmd, timeout=opts.refresh_timeout_s)
        return session.run(cmd, timeout=opts.refresh_timeout_s)

    deadline = time.monotonic() + opts.lock_wait_s
    waited = False
    while True:
        r = run(refresh_command("apt", int(opts.lock_wait_s)))
        text = r.stdout + "\n" + r.stderr
        if r.exit_status == 127 or "not found" in r.stderr:
            r = run(refresh_command("apk", 0))
            return "" if r.ok else f"apk update failed: {apt.failure_reason(r.stderr or r.stdout)}"
        if r.ok:
            return "waited for the apt lock" if waited else ""
        holder = apt.lock_holder(text)
        if holder is None:
            return f"apt-get update failed: {apt.failure_reason(text)}"
        if time.monotonic() >= deadline:
            return f"lists not refreshed: {holder} for more than {opts.lock_wait_s:g}s"
        waited = True
        time.sleep(min(2.0, max(deadline - time.monotonic(), 0.1)))


def check_one(runner: Runner, access: HostAccess, opts: CheckOptions) -> tuple[HostRun, str]:
    """Refresh (optional) and run the combined check command on one host, in one connection.

    Returns the run of the check command and the refresh note.
    """
    started = time.monotonic()
    note = ""
    try:
        with _session(runner, access) as s:
            if opts.refresh:
                note = _refresh(s, access, opts)
            if access.vmid is not None:
                result = s.run_in_guest(access.vmid, CHECK_COMMAND, timeout=opts.check_timeout_s)
            else:
                result = s.run(CHECK_COMMAND, timeout=opts.check_timeout_s)
    except AgentNotRunning:  # unknown, never "up to date": said as every check says it
        run = HostRun(host=access.name, state="error", detail=f"could not check: {NOT_RUNNING}")
        run.duration_s = round(time.monotonic() - started, 3)
        return run, note
    except Exception as exc:  # one host's failure must never stop the others
        run = HostRun(host=access.name, state=_state_of(exc), detail=_describe(exc))
        run.duration_s = round(time.monotonic() - started, 3)
        return run, note
    run = HostRun(host=access.name, state="ok", result=result)
    run.duration_s = round(time.monotonic() - started, 3)
    return run, note


class CheckedHost(BaseModel):
    """The check of one host: the SSH outcome, the parsed facts (when it answered), a note."""

    run: HostRun
    facts: HostFacts | None = None
    note: str = ""


def check_many(
    runner: Runner,
    hosts: Sequence[HostAccess],
    opts: CheckOptions,
    parallel: int,
    today: date | None = None,
) -> list[CheckedHost]:
    """Check every host with at most ``parallel`` at once (the core of patch check mode)."""
    day = today or date.today()

    def one(access: HostAccess) -> CheckedHost:
        run, note = check_one(runner, access, opts)
        facts = None
        if run.result is not None:
            facts = parse_check_output(run.result.stdout, day)
            if run.result.truncated:  # the cut is the cause; the parser's complaint follows it
                facts.problem = "could not check: output cut at max_output_bytes"
            run.result = run.result.model_copy(
                update={"stdout": "", "stderr": run.result.stderr[-2000:]}
            )
        return CheckedHost(run=run, facts=facts, note=note)

    if not hosts:
        return []
    with (
        fewer_collections(),
        ThreadPoolExecutor(
            max_workers=max(1, min(parallel, len(hosts))), thread_name_prefix="labops-check"
        ) as pool,
    ):
        return list(pool.map(one, hosts))


@task(name="ssh-patch-check", cache_policy=NO_CACHE)
def check_hosts(
    ssh: SshCredentials,
    hosts: list[HostAccess],
    opts: CheckOptions,
    parallel: int = 50,
    pve: ProxmoxCredentials | None = None,
) -> list[CheckedHost]:
    """Check pending updates on a batch of hosts (read-only; ``apt-get update`` only refreshes
    the package lists when ``opts.refresh`` is set).

    One SSH connection and one combined command per host (plus the refresh), at most
    ``parallel`` hosts at once. Unreachable hosts, refused host keys and failed logins come back
    as rows with that state.

    Args:
        ssh: the SSH credentials block.
        hosts: where and how to reach each host.
        opts: refresh, lock wait and timeouts.
        parallel: hosts checked at the same time.
        pve: the Proxmox credentials, for VMs reached through their guest agent.
    """
    runner = runners(ssh, pve)
    try:
        return check_many(runner, hosts, opts, parallel)
    finally:
        runner.close()
