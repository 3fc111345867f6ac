"""Blocks for observability: VictoriaMetrics (push and query), Loki (logs), Beszel (host status)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from blocks._base import HttpEndpointBlock, reveal
from labops.errors import ApiError, AuthFailed
from labops.http import HttpClient
from labops.http_settings import BeszelSettings, LokiSettings, VictoriaMetricsSettings
from labops.metrics_push import VictoriaMetricsPusher


class VictoriaMetrics(HttpEndpointBlock):
    """A VictoriaMetrics single node: labops pushes its metrics and reads others' from it.

    Example:
        ```python
        from blocks.observability import VictoriaMetrics

        vm = VictoriaMetrics.load("vm").get_client()
        up = vm.get_json("/api/v1/query", params={"query": "up"})
        ```
    """

    _block_type_name = "VictoriaMetrics"
    _description = "VictoriaMetrics URL (:8428), for pushing labops metrics and querying."
    _documentation_url = "https://docs.victoriametrics.com/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.observability import VictoriaMetrics

    block = VictoriaMetrics.load("BLOCK_NAME")
    vm = block.get_client()
    vm.get_json("/api/v1/query", params={"query": "up"})
    ```
    """
    system_name: ClassVar[str] = "victoriametrics"

    settings: VictoriaMetricsSettings = Field(..., description="URL, TLS and retries.")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` for VictoriaMetrics (no auth by default)."""
        return self._http()

    def pusher(self) -> VictoriaMetricsPusher:
        """An object whose ``push(metrics)`` imports samples in Prometheus text format."""
        return VictoriaMetricsPusher(self.get_client())


class Loki(HttpEndpointBlock):
    """A Loki server whose logs the security digest reads.

    Example:
        ```python
        from blocks.observability import Loki

        loki = Loki.load("loki").get_client()
        logs = loki.get_json("/loki/api/v1/query_range", params={"query": '{job="sshd"}'})
        ```
    """

    _block_type_name = "Loki"
    _description = "Loki URL (:3100) and, for multi-tenant setups, the tenant (X-Scope-OrgID)."
    _documentation_url = "https://grafana.com/docs/loki/latest/reference/loki-http-api/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.observability import Loki

    block = Loki.load("BLOCK_NAME")
    loki = block.get_client()
    loki.request("GET", "/ready")
    ```
    """
    system_name: ClassVar[str] = "loki"

    settings: LokiSettings = Field(..., description="URL, tenant (X-Scope-OrgID), TLS.")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` for Loki (tenant header when set)."""
        return self._http(
            headers={"X-Scope-OrgID": tenant} if (tenant := self.settings.tenant) else None
        )


class BeszelHub(HttpEndpointBlock):
    """The Beszel hub (PocketBase): host status; the client logs in with a user's password.

    Example:
        ```python
        from blocks.observability import BeszelHub

        hub = BeszelHub.load("beszel").get_client()
        systems = hub.get_json("/api/collections/systems/records")
        ```
    """

    _block_type_name = "Beszel Hub"
    _description = "Beszel hub URL (:8090) and a user (e-mail) with its password."
    _documentation_url = "https://beszel.dev/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.observability import BeszelHub

    block = BeszelHub.load("BLOCK_NAME")
    hub = block.get_client()
    hub.get_json("/api/collections/systems/records")
    ```
    """
    system_name: ClassVar[str] = "beszel"
    required: ClassVar[tuple[str, ...]] = ("url", "username")

    settings: BeszelSettings = Field(..., description="Hub URL, user e-mail, TLS.")
    password: SecretStr = Field(..., description="The user's password.")

    def login(self) -> str:
        """A PocketBase auth token from ``auth-with-password``."""
        with self._http() as client:
            try:
                body = client.post_json(
                    "/api/collections/users/auth-with-password",
                    json={"identity": self.settings.username, "password": reveal(self.password)},
                )
            except ApiError as exc:
                # PocketBase answers a wrong password with 400, not 401
                if exc.status == 400:
                    raise AuthFailed(self.system_name, f"login refused: {exc.message}") from None
                raise
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(self.system_name, "login answered without a token")
        reveal(SecretStr(token))
        return token

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` carrying the auth token."""
        return self._http(headers={"Authorization": self.login()})
