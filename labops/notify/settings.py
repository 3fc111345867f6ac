"""Settings of the notification channels (``labops.notify.telegram``, ``labops.notify.mqtt``).

The bot token and the broker password are not here: the config holds references to them, a
block holds them, and the notifiers take them beside these settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field

from labops.http_settings import HttpSettings
from labops.settings import Strict


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
