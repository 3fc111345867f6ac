"""Settings of the SSH runner (``labops.ssh``): user, key and known_hosts files, timeouts.

The key's passphrase is not here: the config holds a reference to it, a block holds it, and the
runner takes it beside these settings. Kept apart from ``labops.ssh`` so that loading the config
does not import paramiko.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from labops.settings import Strict


class SshJump(Strict):
    """A bastion every SSH connection goes through."""

    host: str = Field(..., description="Address of the jump host.")
    port: int = Field(22, ge=1, le=65535, description="Its SSH port.")
    user: str = Field("root", description="Login user on the jump host.")


class SshSettings(Strict):
    """How labops reaches hosts over SSH (keys only, strict host keys by default)."""

    user: str = Field("root", description="Login user.")
    key_file: Path = Field(..., description="Private key (OpenSSH format).")
    known_hosts: Path = Field(..., description="known_hosts file checked strictly.")
    trust_on_first_use: bool = Field(
        False, description="Accept and record unknown keys (changed keys are always refused)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + SSH handshake timeout.")
    command_timeout_s: float = Field(
        120.0, gt=0, description="Default timeout of one remote command."
    )
    max_output_bytes: int = Field(1_000_000, gt=0, description="Output beyond this is cut.")
    jump_host: SshJump | None = Field(None, description="Bastion to go through, if any.")
    parallel: int = Field(50, ge=1, le=1000, description="Hosts worked on at once.")
