"""Blocks for Proxmox VE and Proxmox Backup Server API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from blocks._base import SECRET_IN_BLOCK, reveal
from labops.config.systems import HttpRetry, PbsSystem, ProxmoxNode, ProxmoxSystem, TlsOptions

if TYPE_CHECKING:
    from labops.proxmox import PbsClient, PveClient

_TOKEN_ID = r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$"


class ProxmoxCredentials(CredentialsBlock):
    """An API token of a Proxmox VE cluster, and how to reach its API.

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

    url: str = Field(..., description="Any node's API, e.g. https://pve1.lab:8006.")
    token_id: str = Field(..., pattern=_TOKEN_ID, description="API token id: USER@REALM!TOKENID.")
    token_secret: SecretStr = Field(..., description="The token's UUID secret.")
    nodes: dict[str, ProxmoxNode] = Field(
        default_factory=dict, description="Per-node API URL and SSH address overrides."
    )
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate verification.")
    retry: HttpRetry = Field(default_factory=HttpRetry, description="Timeout and retry policy.")

    def system(self) -> ProxmoxSystem:
        """The settings as the config model the adapter takes (the secret stays in the block)."""
        return ProxmoxSystem(
            url=self.url,  # type: ignore[arg-type]
            token_id=self.token_id,
            token_secret=SECRET_IN_BLOCK,
            nodes=self.nodes,
            tls=self.tls,
            retry=self.retry,
        )

    def get_client(self) -> PveClient:
        """A typed Proxmox VE client (``labops.proxmox.PveClient``)."""
        from labops.proxmox import PveClient

        reveal(self.token_secret)
        return PveClient(self.system(), self.token_secret)


class PbsCredentials(CredentialsBlock):
    """An API token of a Proxmox Backup Server, its datastore, and how to reach its API.

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

    url: str = Field(..., description="The PBS API, e.g. https://pbs.lab:8007.")
    token_id: str = Field(..., pattern=_TOKEN_ID, description="API token id: USER@REALM!TOKENID.")
    token_secret: SecretStr = Field(..., description="The token's UUID secret.")
    datastore: str = Field("store1", description="Datastore holding the lab's backups.")
    pve_storage: str | None = Field(
        None, description="Name of the PVE storage that points at this datastore."
    )
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate verification.")
    retry: HttpRetry = Field(default_factory=HttpRetry, description="Timeout and retry policy.")

    def system(self) -> PbsSystem:
        """The settings as the config model the adapter takes (the secret stays in the block)."""
        return PbsSystem(
            url=self.url,  # type: ignore[arg-type]
            token_id=self.token_id,
            token_secret=SECRET_IN_BLOCK,
            datastore=self.datastore,
            pve_storage=self.pve_storage,
            tls=self.tls,
            retry=self.retry,
        )

    def get_client(self) -> PbsClient:
        """A typed PBS client (``labops.proxmox.PbsClient``)."""
        from labops.proxmox import PbsClient

        reveal(self.token_secret)
        return PbsClient(self.system(), self.token_secret)
