"""The base of every labops block: a system's settings plus its secrets, and nothing else.

A block nests its system's settings model (declared once, beside the system's client, e.g.
``labops.proxmox_settings.ProxmoxSettings``) in a ``settings`` field, and holds each secret as a
``SecretStr`` field beside it, the way Prefect's own integrations nest client parameters in a
credentials block. ``blocks.factory`` builds every block from its config section with one
generic builder; ``get_client`` hands the settings and the revealed secret to the client.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Self, cast

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr, model_validator

from labops.http import HttpClient
from labops.http_settings import HttpSettings
from labops.redact import register_secret
from labops.settings import Strict


def reveal(secret: SecretStr | None) -> str | None:
    """The secret's value, registered with the redactor so no log line shows it."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    register_secret(value)
    return value


class SystemBlock(CredentialsBlock, abc.ABC):
    """Base of every labops block: ``settings`` (the system's settings model) and its secrets.

    Every other field of a subclass is a secret; ``blocks.factory`` fills each from the config
    key of the same name (a secret reference), resolved when the block is built.
    """

    settings: Strict
    required: ClassVar[tuple[str, ...]] = ()
    """Settings this system cannot work without, although its config may leave them out."""

    @classmethod
    def settings_type(cls) -> type[Strict]:
        """The settings model of this system (the type of the ``settings`` field)."""
        return cast(type[Strict], cls.model_fields["settings"].annotation)

    @classmethod
    def secret_names(cls) -> list[str]:
        """The block's secret fields: every field but ``settings`` (and Prefect's own)."""
        return [n for n in cls.model_fields if n != "settings" and n != "block_type_slug"]

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_settings(cls, data: Any) -> Any:
        # Blocks saved before the settings were nested hold them at the top level: move them in,
        # so such a block still loads (and a flat constructor call still works).
        if not isinstance(data, dict) or "settings" in data:
            return data
        names = cls.settings_type().model_fields
        nested = {k: v for k, v in data.items() if k in names}
        rest = {k: v for k, v in data.items() if k not in names}
        return {**rest, "settings": nested}

    @model_validator(mode="after")
    def _has_required_settings(self) -> Self:
        missing = [n for n in self.required if getattr(self.settings, n) in (None, "")]
        if missing:
            raise ValueError(f"required for this system: {', '.join(missing)}")
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        # A setting given at the top level would be dropped without a word (the settings are
        # nested): refuse it, so a changed timeout or budget can never silently not apply.
        misplaced = sorted(set(update or ()) & set(self.settings_type().model_fields))
        if misplaced:
            raise TypeError(f"{', '.join(misplaced)}: settings, change them with with_settings()")
        return super().model_copy(update=update, deep=deep)

    def with_settings(self, **changes: Any) -> Self:
        """A copy of the block whose settings have ``changes`` (e.g. a shorter ``retry``)."""
        return self.model_copy(update={"settings": self.settings.model_copy(update=changes)})


class HttpEndpointBlock(SystemBlock, abc.ABC):  # an interface: Prefect registers no ABC
    """Base of every block that talks HTTP(S) to one system through ``labops.http.HttpClient``."""

    system_name: ClassVar[str] = "http"
    required: ClassVar[tuple[str, ...]] = ("url",)

    settings: HttpSettings = Field(..., description="URL, TLS verification and retry policy.")

    def _http(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> HttpClient:
        s = self.settings
        return HttpClient(
            self.system_name, s.base_url, retry=s.retry, tls=s.tls, headers=headers, auth=auth
        )

    @abc.abstractmethod
    def get_client(self, *args: Any, **kwargs: Any) -> HttpClient:
        """An authenticated ``HttpClient`` for this system."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
