"""The one SSH runner (paramiko): key auth, strict host keys, timeouts, bounded output, jump host.

INTERFACE (implemented by the foundation work; flows and tasks rely on exactly this):

    runner = SshRunner(settings: SshSystem)             # from config.systems.ssh, secrets resolved
    with runner.session(target: SshTarget) as s:        # one connection, many commands
        r: CommandResult = s.run("apt list --upgradable", timeout=60)
        r = s.run_in_guest(vmid=105, command="cat /etc/os-release")   # `pct exec` via the node
    r = runner.run(target, command, timeout=None)        # one-off convenience

Errors (labops.errors): Unreachable (connect refused/timeout), HostKeyRejected (unknown or changed
key; never overwritten; unknown keys accepted and recorded only with trust_on_first_use),
AuthFailed (key refused), CommandTimeout (command past its timeout; the channel is closed).
A non-zero exit status is NOT an error: it is in CommandResult.exit_status.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class SshTarget(BaseModel):
    """Where one host answers SSH."""

    name: str = Field(..., description="The host's name in reports.")
    address: str
    port: int = 22
    user: str | None = Field(None, description="None: the configured default user.")


class CommandResult(BaseModel):
    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0
