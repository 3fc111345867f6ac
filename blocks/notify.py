"""Blocks for the notification channels: a Telegram bot and an MQTT broker."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr

from blocks._base import SystemBlock, reveal
from labops.http import HttpClient
from labops.notify.settings import MqttSettings, TelegramSettings

if TYPE_CHECKING:
    from labops.notify.mqtt import MqttNotifier
    from labops.notify.telegram import TelegramNotifier


class TelegramBot(SystemBlock):
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

    required: ClassVar[tuple[str, ...]] = ("url",)

    settings: TelegramSettings = Field(
        ..., description="Bot API URL, the chat that receives the messages, TLS and retries."
    )
    bot_token: SecretStr = Field(..., description="The bot's token from @BotFather.")

    def get_client(self) -> TelegramNotifier:
        """A ``labops.notify.telegram.TelegramNotifier`` sending to this chat."""
        from labops.notify.telegram import TelegramNotifier

        reveal(self.bot_token)
        s = self.settings
        client = HttpClient("telegram", s.base_url, retry=s.retry, tls=s.tls)
        return TelegramNotifier(s.base_url, self.bot_token, s.chat_id, client)


class MqttBroker(SystemBlock):
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

    settings: MqttSettings = Field(
        default_factory=MqttSettings,
        description="Broker address, optional user and TLS, topic prefix, QoS.",
    )
    password: SecretStr | None = Field(None, description="Login password.")

    def get_client(self, lab: str | None = None) -> MqttNotifier:
        """A ``labops.notify.mqtt.MqttNotifier`` publishing under ``topic_prefix`` (and under
        ``lab``, one topic level, when given: the flows always give theirs)."""
        from labops.notify.mqtt import MqttNotifier

        reveal(self.password)
        return MqttNotifier(self.settings, self.password, lab=lab)
