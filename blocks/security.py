"""Blocks for the security stack: the Wazuh manager API, the Wazuh indexer, CrowdSec's LAPI."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from blocks._base import HttpEndpointBlock, bearer, reveal
from labops.errors import ApiError, ConfigError
from labops.http import HttpClient
from labops.http_settings import CrowdsecSettings, WazuhApiSettings, WazuhIndexerSettings


class WazuhApi(HttpEndpointBlock):
    """The Wazuh manager API (agents); the client logs in and carries the JWT.

    Example:
        ```python
        from blocks.security import WazuhApi

        wazuh = WazuhApi.load("wazuh-api").get_client()
        agents = wazuh.get_json("/agents", params={"limit": 500})
        ```
    """

    _block_type_name = "Wazuh API"
    _description = "Wazuh manager API URL (:55000) and an API user."
    _documentation_url = "https://documentation.wazuh.com/current/user-manual/api/index.html"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.security import WazuhApi

    block = WazuhApi.load("BLOCK_NAME")
    wazuh = block.get_client()
    wazuh.get_json("/agents")
    ```
    """
    system_name: ClassVar[str] = "wazuh_api"
    required: ClassVar[tuple[str, ...]] = ("url", "username")

    settings: WazuhApiSettings = Field(..., description="Manager API URL, API user, TLS.")
    password: SecretStr = Field(..., description="API user's password.")

    def login(self) -> str:
        """A fresh JWT from ``POST /security/user/authenticate`` (valid 900 s by default)."""
        password = reveal(self.password) or ""
        with self._http(auth=(self.settings.username or "", password)) as client:
            body = client.post_json("/security/user/authenticate")
        token = (body or {}).get("data", {}).get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(self.system_name, "login answered without a token")
        reveal(SecretStr(token))
        return token

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` authenticated with a fresh JWT."""
        return self._http(headers=bearer(self.login()))


class WazuhIndexer(HttpEndpointBlock):
    """The Wazuh indexer (OpenSearch) where alerts are searched.

    Example:
        ```python
        from blocks.security import WazuhIndexer

        indexer = WazuhIndexer.load("wazuh-indexer").get_client()
        hits = indexer.post_json("/wazuh-alerts-*/_search", json={"size": 10})
        ```
    """

    _block_type_name = "Wazuh Indexer"
    _description = "Wazuh indexer URL (:9200) and a user allowed to read wazuh-alerts-*."
    _documentation_url = (
        "https://documentation.wazuh.com/current/user-manual/wazuh-indexer/index.html"  # type: ignore[assignment]
    )
    _code_example = """
    ```python
    from blocks.security import WazuhIndexer

    block = WazuhIndexer.load("BLOCK_NAME")
    indexer = block.get_client()
    indexer.get_json("/")
    ```
    """
    system_name: ClassVar[str] = "wazuh_indexer"
    required: ClassVar[tuple[str, ...]] = ("url", "username")

    settings: WazuhIndexerSettings = Field(..., description="Indexer URL, its user, TLS.")
    password: SecretStr = Field(..., description="Indexer user's password.")

    def get_client(self) -> HttpClient:
        """An ``HttpClient`` with basic auth."""
        return self._http(auth=(self.settings.username or "", reveal(self.password) or ""))


class CrowdsecLapi(HttpEndpointBlock):
    """CrowdSec's Local API: a machine (watcher) login for alerts, a bouncer key for decisions.

    Example:
        ```python
        from blocks.security import CrowdsecLapi

        lapi = CrowdsecLapi.load("crowdsec")
        alerts = lapi.get_client("watcher").get_json("/v1/alerts", params={"since": "24h"})
        decisions = lapi.get_client("bouncer").get_json("/v1/decisions")
        ```
    """

    _block_type_name = "CrowdSec LAPI"
    _description = "CrowdSec Local API URL, a machine login and a bouncer API key."
    _documentation_url = "https://docs.crowdsec.net/docs/local_api/intro"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.security import CrowdsecLapi

    block = CrowdsecLapi.load("BLOCK_NAME")
    lapi = block.get_client()
    lapi.get_json("/v1/decisions")
    ```
    """
    system_name: ClassVar[str] = "crowdsec"

    settings: CrowdsecSettings = Field(..., description="LAPI URL, machine id, TLS.")
    machine_password: SecretStr | None = Field(None, description="The machine's password.")
    bouncer_key: SecretStr | None = Field(None, description="Bouncer API key (X-Api-Key).")

    def login(self) -> str:
        """A JWT from ``POST /v1/watchers/login`` (valid one hour)."""
        machine_id = self.settings.machine_id
        if not machine_id or self.machine_password is None:
            raise ConfigError("crowdsec: machine_id and machine_password are needed for alerts")
        password = reveal(self.machine_password)
        with self._http() as client:
            body = client.post_json(
                "/v1/watchers/login",
                json={"machine_id": machine_id, "password": password},
            )
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ApiError(self.system_name, "watcher login answered without a token")
        reveal(SecretStr(token))
        return token

    def get_client(self, role: Literal["watcher", "bouncer"] = "watcher") -> HttpClient:
        """``watcher``: JWT of the machine login (alerts); ``bouncer``: the API key (decisions)."""
        if role == "bouncer":
            if self.bouncer_key is None:
                raise ConfigError("crowdsec: bouncer_key is needed for decisions")
            return self._http(headers={"X-Api-Key": reveal(self.bouncer_key) or ""})
        return self._http(headers=bearer(self.login()))
