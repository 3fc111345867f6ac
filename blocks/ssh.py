"""Block for SSH access to the lab's hosts: key, known_hosts and timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from blocks._base import SECRET_IN_BLOCK, reveal
from labops.config.systems import SshJump, SshSystem

if TYPE_CHECKING:
    from labops.ssh import SshRunner


class SshCredentials(CredentialsBlock):
    """How labops logs in to hosts over SSH: key only, host keys checked strictly.

    Example:
        ```python
        from blocks.ssh import SshCredentials
        from labops.ssh import SshTarget

        runner = SshCredentials.load("lab-ssh").get_client()
        result = runner.run(SshTarget(name="pve1", address="10.0.0.11"), "uptime")
        ```
    """

    _block_type_name = "SSH Credentials"
    _description = "SSH user, private key file, known_hosts file and timeouts for the lab's hosts."
    _documentation_url = "https://docs.paramiko.org/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.ssh import SshCredentials
    from labops.ssh import SshTarget

    ssh = SshCredentials.load("BLOCK_NAME")
    result = ssh.get_client().run(SshTarget(name="pve1", address="10.0.0.11"), "uptime")
    ```
    """

    user: str = Field("root", description="Login user.")
    key_file: Path = Field(..., description="Private key file (OpenSSH format).")
    key_passphrase: SecretStr | None = Field(None, description="Passphrase of the key, if any.")
    known_hosts: Path = Field(..., description="known_hosts file, checked strictly.")
    trust_on_first_use: bool = Field(
        False, description="Accept and record unknown keys (changed keys are always refused)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + SSH handshake timeout.")
    command_timeout_s: float = Field(120.0, gt=0, description="Default timeout of one command.")
    max_output_bytes: int = Field(1_000_000, gt=0, description="Output beyond this is cut.")
    jump_host: SshJump | None = Field(None, description="Bastion to go through, if any.")
    parallel: int = Field(50, ge=1, le=1000, description="Hosts worked on at once.")

    def system(self) -> SshSystem:
        """The settings as the config model the runner takes (the passphrase stays here)."""
        return SshSystem(
            user=self.user,
            key_file=self.key_file,
            key_passphrase=SECRET_IN_BLOCK if self.key_passphrase else None,
            known_hosts=self.known_hosts,
            trust_on_first_use=self.trust_on_first_use,
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
            max_output_bytes=self.max_output_bytes,
            jump_host=self.jump_host,
            parallel=self.parallel,
        )

    def get_client(self) -> SshRunner:
        """An ``labops.ssh.SshRunner`` using this key and known_hosts file."""
        from labops.ssh import SshRunner

        reveal(self.key_passphrase)
        return SshRunner(self.system(), self.key_passphrase)  # type: ignore[call-arg]
