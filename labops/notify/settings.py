"""Settings of the notification channels (``labops.notify.telegram``, ``labops.notify.mqtt``,
``labops.notify.apprise``).

The bot token and the broker password are not here: the config holds references to them, a
block holds them, and the notifiers take them beside these settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, AnyHttpUrl, Field, model_validator

from labops.http_settings import HttpSettings
from labops.notify.routing import Route
from labops.secret_urls import check_url_template
from labops.settings import Strict

UrlTemplate = Annotated[str, AfterValidator(check_url_template)]
"""A URL whose secrets are references: ``gotify://gotify.lab/{env:GOTIFY_TOKEN}``."""


class TelegramSettings(HttpSettings):
    """Telegram Bot API (the public API by default; the sandbox serves its own) and the chat."""

    # a plain default (validated into a URL) keeps `labops config example` able to print it
    url: AnyHttpUrl | None = Field(
        "https://api.telegram.org",  # type: ignore[assignment]
        validate_default=True,
        description="Bot API base URL.",
    )
    chat_id: str = Field(..., description="Chat or @channel that receives the messages.")
    approvers: list[int] = Field(
        default_factory=list,
        description="Telegram user ids who may approve or reject a paused patch plan from the "
        "chat's buttons (`labops approvals` listens); empty: no buttons, approval in the UI only.",
    )


class MqttSettings(Strict):
    """An MQTT broker where reports are published (Home Assistant, Node-RED...)."""

    host: str = Field("127.0.0.1", description="Broker address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 with TLS).")
    username: str | None = Field(None, description="Login user, if the broker wants one.")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_bundle: Path | None = Field(None, description="CA file verifying the broker (TLS).")
    topic_prefix: str = Field("labops", description="Root of every topic labops publishes.")
    qos: int = Field(1, ge=0, le=2, description="MQTT quality of service of the messages.")


class AppriseTarget(Route):
    """One notification target through Apprise: an Apprise URL (ntfy, Gotify, Pushover, e-mail,
    Discord, Matrix, Slack...) or a saved Prefect notification block, and what it receives."""

    name: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Names the target in failures and logs (the notify step says 'apprise:NAME').",
    )
    url: UrlTemplate | None = Field(
        None,
        description="Apprise URL; every secret in it is a reference in braces, resolved at send "
        "time: ntfys://{env:NTFY_TOKEN}@ntfy.example.org/labops, "
        "gotify://gotify.lab/{file:/etc/labops/gotify-token}.",
    )
    prefect_block: str | None = Field(
        None,
        description="A saved Prefect notification block instead of a URL, as TYPE/NAME "
        "(slack-webhook/ops, apprise-notification-block/phone).",
    )
    overflow: Literal["split", "truncate"] = Field(
        "split",
        description="A message longer than the channel takes: split into several (each ending "
        "with the run's link) or truncate to one (the link kept).",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> Self:
        if (self.url is None) == (self.prefect_block is None):
            raise ValueError(f"target {self.name!r}: give exactly one of url or prefect_block")
        if self.prefect_block is not None and not re.fullmatch(
            r"[a-z0-9-]+/[^/\s]+", self.prefect_block
        ):
            raise ValueError(
                f"target {self.name!r}: prefect_block is TYPE/NAME, e.g. slack-webhook/ops"
            )
        return self
