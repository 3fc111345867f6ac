"""Where a report goes: the lab's name, its notification channels, its metrics endpoint and the
UI that links to the run. Built once per run from the config; publishing takes this, not the
whole LabContext."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from blocks.notify import MqttBroker, TelegramBot
from blocks.observability import VictoriaMetrics
from labops.config import LabopsConfig
from labops.config.policies.platform import ExternalHeartbeat
from labops.notify import MultiNotifier, Notifier
from labops.notify.settings import AppriseTarget
from labops.outcome import Severity

CHANNELS = ("telegram", "mqtt")
"""The notification channels, in the order a message goes out."""


class Delivery(BaseModel):
    """The blocks and values a report's delivery needs (no secrets beyond the blocks' own)."""

    model_config = ConfigDict(frozen=True)

    lab: str = Field(description="The lab whose report this is (labels, topics, artifact keys).")
    ui_url: str | None = Field(None, description="Base URL of the Prefect UI, for run links.")
    telegram: TelegramBot | None = None
    mqtt: MqttBroker | None = None
    apprise: tuple[AppriseTarget, ...] = Field(
        (), description="Apprise targets with their routing (secrets still references)."
    )
    metrics: VictoriaMetrics | None = None
    heartbeats: dict[str, ExternalHeartbeat] = Field(
        default_factory=dict,
        description="Flow name -> the external dead-man's switch it pings (Healthchecks, "
        "Uptime Kuma).",
    )
    state_dir: Path | None = Field(
        None, description="The lab's state directory (what 'fixed' notices compare with)."
    )
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="System -> why its block could not be built: a failed delivery, named.",
    )

    def flow_run_url(self, flow_run_id: object) -> str | None:
        """The UI page of one flow run (None when no UI is known)."""
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}" if self.ui_url else None

    def notifier(
        self, operation: str | None = None, severity: Severity | None = None
    ) -> MultiNotifier:
        """Every channel whose block exists behind one notifier (none: delivers nowhere), and
        every Apprise target whose routing takes ``operation`` at ``severity`` (not given: all).
        """
        from labops.notify.apprise import AppriseNotifier

        channels: list[Notifier] = []
        if self.telegram is not None:
            channels.append(self.telegram.get_client())
        if self.mqtt is not None:
            channels.append(self.mqtt.get_client(lab=self.lab))
        for target in self.apprise:
            if severity is None or target.takes(operation, severity):
                channels.append(AppriseNotifier(target, lab=self.lab))
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
        {
            "lab": config.lab.name,
            "ui_url": ui_url,
            "unavailable": unavailable,
            "apprise": tuple(config.systems.apprise),
            "state_dir": config.lab.state_dir,
            "heartbeats": dict(config.platform.external_heartbeat),
            **blocks,
        }
    )
