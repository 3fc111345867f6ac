"""Shared base of the HTTP system blocks: base URL, TLS verification and the retry policy."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from labops.config.secrets import HELD_BY_BLOCK
from labops.config.systems import HttpRetry, TlsOptions
from labops.http import HttpClient
from labops.redact import register_secret

# A config model needs a secret *reference*; a block carries the secret itself, so the model it
# builds for a client gets this placeholder, which nothing ever resolves.
SECRET_IN_BLOCK = HELD_BY_BLOCK


def reveal(secret: SecretStr | None) -> str | None:
    """The secret's value, registered with the redactor so no log line shows it."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    register_secret(value)
    return value


class HttpEndpointBlock(CredentialsBlock, abc.ABC):
    """Base of every block that talks HTTP(S) to one system through ``labops.http.HttpClient``."""

    system_name: ClassVar[str] = "http"

    url: str = Field(..., description="Base URL of the system's API, e.g. https://host:port.")
    tls: TlsOptions = Field(
        default_factory=TlsOptions,
        description="Certificate verification (on by default) and an optional CA bundle.",
    )
    retry: HttpRetry = Field(
        default_factory=HttpRetry,
        description="Timeout and retry policy of every request (never retries 401/403).",
    )

    def _http(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> HttpClient:
        return HttpClient(
            self.system_name, self.url, retry=self.retry, tls=self.tls, headers=headers, auth=auth
        )

    @abc.abstractmethod
    def get_client(self, *args: Any, **kwargs: Any) -> HttpClient:
        """An authenticated ``HttpClient`` for this system."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
