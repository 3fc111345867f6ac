"""Blocks for Proxmox VE and Proxmox Backup Server API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr

from blocks._base import SystemBlock, reveal
from labops.proxmox_settings import PbsOffsiteSettings, PbsSettings, ProxmoxSettings

if TYPE_CHECKING:
    from labops.proxmox import PbsClient, PveClient


class ProxmoxCredentials(SystemBlock):
    """An API token of a Proxmox VE cluster, and how to reach its API. Only reads: the client it
    builds is what changes the lab, when a task tells it to.

    Example:
        ```python
        from blocks.proxmox import ProxmoxCredentials

        pve = ProxmoxCredentials.load("pve").get_client()
        print(pve.version())
        ```
    """

    _block_type_name = "Proxmox Credentials"
    _description = "Proxmox VE API token (USER@REALM!TOKENID + secret), API URL and TLS options."
    _documentation_url = "https://pve.proxmox.com/pve-docs/api-viewer/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.proxmox import ProxmoxCredentials

    block = ProxmoxCredentials.load("BLOCK_NAME")
    pve = block.get_client()
    pve.version()
    ```
    """
    required: ClassVar[tuple[str, ...]] = ("url",)

    settings: ProxmoxSettings = Field(
        ..., description="Any node's API URL, the token id, per-node overrides, TLS and retries."
    )
    token_secret: SecretStr = Field(..., description="The token's UUID secret.")

    def get_client(self) -> PveClient:
        """A typed Proxmox VE client (``labops.proxmox.PveClient``)."""
        from labops.proxmox import PveClient

        reveal(self.token_secret)
        return PveClient(self.settings, self.token_secret)


class PbsCredentials(SystemBlock):
    """An API token of a Proxmox Backup Server, its datastore, and how to reach its API. Only
    reads: the client it builds is what changes the lab, when a task tells it to.

    Example:
        ```python
        from blocks.proxmox import PbsCredentials

        pbs = PbsCredentials.load("pbs").get_client()
        snapshots = pbs.snapshots("store1")
        ```
    """

    _block_type_name = "PBS Credentials"
    _description = "Proxmox Backup Server API token, API URL, datastore and TLS options."
    _documentation_url = "https://pbs.proxmox.com/docs/api-viewer/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.proxmox import PbsCredentials

    block = PbsCredentials.load("BLOCK_NAME")
    pbs = block.get_client()
    pbs.version()
    ```
    """
    required: ClassVar[tuple[str, ...]] = ("url",)

    settings: PbsSettings = Field(
        ..., description="The PBS API URL, the token id, the datastore, TLS and retries."
    )
    token_secret: SecretStr = Field(..., description="The token's UUID secret.")

    def get_client(self) -> PbsClient:
        """A typed PBS client (``labops.proxmox.PbsClient``)."""
        from labops.proxmox import PbsClient

        reveal(self.token_secret)
        return PbsClient(self.settings, self.token_secret)


class PbsOffsiteCredentials(PbsCredentials):
    """An API token of the off-site Proxmox Backup Server, its datastore, its name as off-site
    targets use it and the remote name it gives the home PBS. Only reads.

    Example:
        ```python
        from blocks.proxmox import PbsOffsiteCredentials

        far = PbsOffsiteCredentials.load("pbs-offsite")
        jobs = far.get_client().sync_jobs()
        ```
    """

    _block_type_name = "PBS Off-site Credentials"
    _description = (
        "The off-site Proxmox Backup Server: API token, URL, datastore, TLS, its name in off-site "
        "targets and its remote name for the home PBS."
    )
    _code_example = """
    ```python
    from blocks.proxmox import PbsOffsiteCredentials

    block = PbsOffsiteCredentials.load("BLOCK_NAME")
    pbs = block.get_client()
    pbs.sync_jobs()
    ```
    """

    settings: PbsOffsiteSettings = Field(  # type: ignore[assignment]
        ...,
        description="The off-site PBS's API URL, token id, datastore, name and home remote.",
    )
