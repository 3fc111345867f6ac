"""Where a report goes: the lab's name, its notification channels, its metrics endpoint and the
UI that links to the run. Built once per run from the config; publishing takes this, not the
whole LabContext."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from blocks.notify import MqttBroker, TelegramBot
from blocks.observability import VictoriaMetrics
from labops.config import LabopsConfig
from labops.notify import MultiNotifier, Notifier

CHANNELS = ("telegram", "mqtt")
"""The notification channels, in the order a message goes out."""


class Delivery(BaseModel):
    """The blocks and values a report's delivery needs (no secrets beyond the blocks' own)."""

    model_config = ConfigDict(frozen=True)

    lab: str = Field(description="The lab whose report this is (labels, topics, artifact keys).")
    ui_url: str | None = Field(None, description="Base URL of the Prefect UI, for run links.")
    telegram: TelegramBot | None = None
    mqtt: MqttBroker | None = None
    metrics: VictoriaMetrics | None = None
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="System -> why its block could not be built: a failed delivery, named.",
    )

    def flow_run_url(self, flow_run_id: object) -> str | None:
        """The UI page of one flow run (None when no UI is known)."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}" if self.ui_url else None

    def notifier(self) -> MultiNotifier:
        """Every channel whose block exists behind one notifier (none: delivers nowhere)."""
        channels: list[Notifier] = []
        if self.telegram is not None:
            channels.append(self.telegram.get_client())
        if self.mqtt is not None:
            channels.append(self.mqtt.get_client(lab=self.lab))
        return MultiNotifier(channels)


def delivery_for(config: LabopsConfig, ui_url: str | None = None) -> Delivery:
    """The delivery of a lab's reports. A configured channel whose block cannot be built (a
    saved block missing, a secret gone) is kept as unavailable: its step fails, the run goes on."""
    from blocks.factory import block_for, system_config

    blocks: dict[str, object] = {}
    unavailable: dict[str, str] = {}
    for system, key in (*((c, c) for c in CHANNELS), ("victoriametrics", "metrics")):
        if system_config(config, system) is None:
            continue
        try:
            blocks[key] = block_for(config, system)
        except Exception as exc:  # named by its step, never a crash before the report goes out
            unavailable[system] = str(exc) or type(exc).__name__
    return Delivery.model_validate(
        {"lab": config.lab.name, "ui_url": ui_url, "unavailable": unavailable, **blocks}
    )
