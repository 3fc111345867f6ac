"""Policy of the security digest operation (owned by its flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from labops.config.systems import Strict

DigestSeverity = Literal["info", "warning", "critical"]
AgentStatus = Literal["disconnected", "never_connected", "pending"]


class WazuhOptions(Strict):
    """Which Wazuh alerts and agents make it into the digest."""

    min_level: int = Field(7, ge=0, le=16, description="Alerts at or above this rule.level.")
    critical_level: int = Field(12, ge=0, le=16, description="Alerts at/above this are critical.")
    max_alerts: int = Field(
        5000, ge=1, le=10000, description="Alert documents read per digest (newest first)."
    )
    agent_statuses: list[AgentStatus] = Field(
        default_factory=lambda: list[AgentStatus](["disconnected", "never_connected"]),
        description="Agent states reported as findings.",
    )


class CrowdsecOptions(Strict):
    """How CrowdSec alerts and decisions are read."""

    max_alerts: int = Field(1000, ge=1, le=100000, description="`limit` of GET /v1/alerts.")
    include_capi: bool = Field(False, description="Include community blocklist alerts.")
    repeat_offender_alerts: int = Field(
        2, ge=2, description="An IP with this many alerts in the period is a repeat offender."
    )


class LogQuery(Strict):
    """A LogQL log query; each matching stream line counts towards one finding per entity."""

    name: str = Field(..., min_length=1, description="Shown as the finding's title.")
    query: str = Field(..., min_length=1, description='LogQL, e.g. {job="sshd"} |= "Failed"')
    severity: DigestSeverity = "warning"
    min_count: int = Field(1, ge=1, description="Lines needed (per entity) before it is shown.")
    entity_label: str = Field("host", description="Stream label naming the entity.")
    limit: int = Field(1000, ge=1, le=5000, description="Lines read at most.")


class PromCheck(Strict):
    """A PromQL check: every series the query returns is a finding (write `up == 0`, not `up`)."""

    name: str = Field(..., min_length=1)
    query: str = Field(..., min_length=1)
    severity: DigestSeverity = "warning"
    condition: Literal["any_series", "no_series"] = Field(
        "any_series",
        description="any_series: each returned series is a finding; no_series: an empty "
        "answer is the finding (absent metrics).",
    )
    entity_labels: list[str] = Field(
        default_factory=lambda: ["instance", "job"],
        description="First label present names the entity.",
    )


class Suppression(Strict):
    """A known-benign finding: every given field must match for it to be suppressed."""

    reason: str = Field(..., min_length=1, description="Why it is benign (shown in the digest).")
    source: str | None = Field(None, description="wazuh, crowdsec, loki, metrics, proxmox, labops")
    rule: str | None = Field(None, description="Wazuh rule id, CrowdSec scenario, check name.")
    entity: str | None = Field(None, description="Agent, host, guest or IP, exactly.")
    ip: str | None = Field(None, description="Source IP, exactly.")
    title_contains: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Suppression:
        if not any((self.source, self.rule, self.entity, self.ip, self.title_contains)):
            raise ValueError(
                "a suppression needs at least one of source, rule, entity, ip, "
                "title_contains (it would hide everything)"
            )
        return self


def _default_log_queries() -> list[LogQuery]:
    return [
        LogQuery(
            name="SSH authentication failures",
            query='{job=~".+"} |~ "sshd.*(Failed password|Invalid user|authentication failure)"',
            min_count=5,
        ),
        LogQuery(
            name="sudo authentication failures",
            query='{job=~".+"} |~ "sudo.*(authentication failure|incorrect password)"',
        ),
    ]


def _default_prom_checks() -> list[PromCheck]:
    return [
        PromCheck(name="Scrape target down", query="up == 0", severity="warning"),
        PromCheck(
            name="Failed systemd unit",
            query='node_systemd_unit_state{state="failed"} == 1',
            severity="warning",
            entity_labels=["name", "instance"],
        ),
        PromCheck(
            name="Disk fills within 24 h",
            query='predict_linear(node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"}'
            "[6h], 86400) < 0",
            severity="critical",
            entity_labels=["instance", "mountpoint"],
        ),
    ]


class DigestPolicy(Strict):
    """What the security digest collects, how it ranks and where it goes."""

    period: Literal["daily", "weekly"] = Field("daily", description="Window of one digest.")
    wazuh: WazuhOptions = WazuhOptions()
    crowdsec: CrowdsecOptions = CrowdsecOptions()
    log_queries: list[LogQuery] = Field(default_factory=_default_log_queries)
    prom_checks: list[PromCheck] = Field(default_factory=_default_prom_checks)
    proxmox_failed_tasks: bool = Field(True, description="Report failed PVE tasks of the period.")
    labops_results: bool = Field(
        True, description="Include the latest backups/certificates/patch flow results."
    )
    suppressions: list[Suppression] = Field(default_factory=list)
    suppress_banned_ips: bool = Field(
        True, description="Hide Wazuh/Loki findings whose IP CrowdSec already bans."
    )
    mqtt_topic: str = Field("security/digest", description="Suffix under systems.mqtt.prefix.")
    template: Path | None = Field(
        None, description="Jinja2 markdown template replacing the built-in one."
    )
    llm_summary: bool = Field(False, description="Add an LLM summary (needs systems.llm).")
    source_timeout_s: float = Field(60.0, gt=0, description="Time one source may take.")
    source_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description="Per-source overrides: wazuh-alerts, wazuh-agents, crowdsec, loki, metrics, "
        "proxmox, labops.",
    )
    max_findings_shown: int = Field(50, ge=1, description="Findings listed; the rest are counted.")

    @property
    def window_hours(self) -> int:
        return 24 if self.period == "daily" else 24 * 7
