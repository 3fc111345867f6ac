"""Blocks for the notification channels: a Telegram bot and an MQTT broker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from blocks._base import SECRET_IN_BLOCK, reveal
from labops.config.systems import HttpRetry, MqttSystem, TlsOptions
from labops.http import HttpClient

if TYPE_CHECKING:
    from labops.notify.mqtt import MqttNotifier
    from labops.notify.telegram import TelegramNotifier


class TelegramBot(CredentialsBlock):
    """A Telegram bot token and the chat that receives labops notifications.

    Example:
        ```python
        from blocks.notify import TelegramBot

        notifier = TelegramBot.load("telegram").get_client()
        notifier.send(notification)
        ```
    """

    _block_type_name = "Telegram Bot"
    _description = "Telegram bot token and chat id for labops notifications."
    _documentation_url = "https://core.telegram.org/bots/api"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.notify import TelegramBot

    block = TelegramBot.load("BLOCK_NAME")
    telegram = block.get_client()
    telegram.send(notification)
    ```
    """

    url: str = Field("https://api.telegram.org", description="Bot API base URL.")
    bot_token: SecretStr = Field(..., description="The bot's token from @BotFather.")
    chat_id: str = Field(..., description="Chat (or @channel) that receives the messages.")
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate verification.")
    retry: HttpRetry = Field(default_factory=HttpRetry, description="Timeout and retry policy.")

    def get_client(self) -> TelegramNotifier:
        """A ``labops.notify.telegram.TelegramNotifier`` sending to this chat."""
        from labops.notify.telegram import TelegramNotifier

        reveal(self.bot_token)
        client = HttpClient("telegram", self.url, retry=self.retry, tls=self.tls)
        return TelegramNotifier(self.url, self.bot_token, self.chat_id, client)


class MqttBroker(CredentialsBlock):
    """An MQTT broker where labops publishes reports (Home Assistant, Node-RED...).

    Example:
        ```python
        from blocks.notify import MqttBroker

        MqttBroker.load("mqtt").get_client().send(notification)
        ```
    """

    _block_type_name = "MQTT Broker"
    _description = "MQTT broker address, optional login and TLS, and the topic prefix."
    _documentation_url = "https://mosquitto.org/documentation/"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.notify import MqttBroker

    block = MqttBroker.load("BLOCK_NAME")
    mqtt = block.get_client()
    mqtt.send(notification)
    ```
    """

    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS).")
    username: str | None = Field(None, description="Login user, if the broker wants one.")
    password: SecretStr | None = Field(None, description="Login password.")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_bundle: Path | None = Field(None, description="CA file verifying the broker (TLS).")
    topic_prefix: str = Field("labops", description="Root of every topic labops publishes.")
    qos: int = Field(1, ge=0, le=2, description="MQTT quality of service of the messages.")

    def system(self) -> MqttSystem:
        return MqttSystem(
            host=self.host,
            port=self.port,
            username=self.username,
            password=SECRET_IN_BLOCK if self.password else None,
            tls=self.tls,
            ca_bundle=self.ca_bundle,
            topic_prefix=self.topic_prefix,
            qos=self.qos,
        )

    def get_client(self, lab: str | None = None) -> MqttNotifier:
        """A ``labops.notify.mqtt.MqttNotifier`` publishing under ``topic_prefix`` (and under
        ``lab``, one topic level, when given: the flows always give theirs)."""
        from labops.notify.mqtt import MqttNotifier

        reveal(self.password)
        return MqttNotifier(self.system(), self.password, lab=lab)
