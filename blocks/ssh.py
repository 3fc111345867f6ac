"""Block for SSH access to the lab's hosts: key, known_hosts and timeouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, SecretStr

from blocks._base import SystemBlock, reveal
from labops.ssh_settings import SshSettings

if TYPE_CHECKING:
    from labops.ssh import SshRunner


class SshCredentials(SystemBlock):
    """How labops logs in to hosts over SSH: key only, host keys checked strictly. Only reads:
    the runner it builds is what changes the lab, when a task tells it to.

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

    settings: SshSettings = Field(
        ..., description="User, key and known_hosts files, timeouts, jump host, parallelism."
    )
    key_passphrase: SecretStr | None = Field(None, description="Passphrase of the key, if any.")

    def get_client(self) -> SshRunner:
        """An ``labops.ssh.SshRunner`` using this key and known_hosts file."""
        from labops.ssh import SshRunner

        reveal(self.key_passphrase)
        return SshRunner(self.settings, self.key_passphrase)
