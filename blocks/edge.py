"""Blocks for the lab's edge: Traefik's API, the step-ca certificate authority, Technitium DNS."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from blocks._base import HttpEndpointBlock, bearer, reveal
from labops.http import HttpClient
from labops.http_settings import StepCaSettings, TechnitiumSettings, TraefikSettings


class TraefikApi(HttpEndpointBlock):
    """Traefik's API (routers, services) and the entrypoint where HTTPS services are probed.

    Example:
        ```python
        from blocks.edge import TraefikApi

        traefik = TraefikApi.load("traefik").get_client()
        routers = traefik.get_json("/api/http/routers")
        ```
    """

    _block_type_name = "Traefik API"
    _description = "Traefik API URL, optional basic-auth user and the websecure entrypoint."
    _documentation_url = "https://doc.traefik.io/traefik/operations/api/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.edge import TraefikApi

    block = TraefikApi.load("BLOCK_NAME")
    traefik = block.get_client()
    traefik.get_json("/api/http/routers")
    ```
    """
    system_name: ClassVar[str] = "traefik"

    settings: TraefikSettings = Field(
        ..., description="API URL, optional basic-auth user, the websecure entrypoint, TLS."
    )
    password: SecretStr | None = Field(None, description="Basic-auth password, if any.")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` for the Traefik API (basic auth when a user is set)."""
        password = reveal(self.password)
        user = self.settings.username
        auth = (user, password or "") if user else None
        return self._http(auth=auth)


class StepCa(HttpEndpointBlock):
    """The lab's step-ca certificate authority (health, roots, intermediates).

    Example:
        ```python
        from blocks.edge import StepCa

        roots = StepCa.load("step-ca").get_client().get_json("/roots", ok=(200, 201))
        ```
    """

    _block_type_name = "Step CA"
    _description = "URL of the lab's step-ca and the CA bundle that verifies it."
    _documentation_url = "https://smallstep.com/docs/step-ca/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.edge import StepCa

    block = StepCa.load("BLOCK_NAME")
    ca = block.get_client()
    ca.get_json("/health")
    ```
    """
    system_name: ClassVar[str] = "step_ca"

    settings: StepCaSettings = Field(..., description="URL of step-ca and its CA bundle.")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` for step-ca (its read endpoints need no credentials)."""
        return self._http()


class TechnitiumDns(HttpEndpointBlock):
    """The Technitium DNS server's HTTP API and the lab's internal zone.

    Example:
        ```python
        from blocks.edge import TechnitiumDns

        dns = TechnitiumDns.load("dns").get_client()
        zones = dns.get_json("/api/zones/list")
        ```
    """

    _block_type_name = "Technitium DNS"
    _description = "Technitium DNS API URL, a non-expiring API token and the internal zone."
    _documentation_url = "https://github.com/TechnitiumSoftware/DnsServer/blob/master/APIDOCS.md"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.edge import TechnitiumDns

    block = TechnitiumDns.load("BLOCK_NAME")
    dns = block.get_client()
    dns.get_json("/api/zones/list")
    ```
    """
    system_name: ClassVar[str] = "technitium"

    settings: TechnitiumSettings = Field(..., description="API URL, internal zone, TLS.")
    token: SecretStr | None = Field(None, description="API token (Settings > Sessions).")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` sending the token as ``Authorization: Bearer`` (Technitium v15+)."""
        token = reveal(self.token)
        return self._http(headers=bearer(token) if token else None)
