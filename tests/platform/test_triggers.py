"""What a message on the bus may start (``platform.triggers``), retained messages, request ids,
and the bridge's alert memory when its state file is corrupt."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from blocks.context import LabContext
from deployments.mqtt_bridge import Bridge
from labops.config.loader import parse_config
from labops.errors import ConfigError
from labops.scope import lab_slug
from labops.triggers import Refused, parse_run_request
from tests.fixtures.mqtt import MqttBroker

PREFIX = "labops/run"


def refused(topic: str, payload: Any, triggers: Any = None) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(Refused) as info:
        parse_run_request(PREFIX, f"{PREFIX}/{topic}", raw, triggers)
    return str(info.value)


def accepted(topic: str, payload: Any, triggers: Any = None) -> dict[str, Any]:
    raw = json.dumps(payload).encode()
    return parse_run_request(PREFIX, f"{PREFIX}/{topic}", raw, triggers).parameters


def test_default_allowlist_refuses_what_the_issue_names() -> None:
    """Each of these started a run before the allowlist."""
    assert "invalid parameters: retention_days" in refused("housekeeping", {"retention_days": -1})
    assert "renew cannot be set from the bus" in refused("certificates", {"renew": True})
    assert "llm_summary cannot be set" in refused("security-digest", {"llm_summary": True})
    assert "refresh cannot be set" in refused("patch-check", {"refresh": True})
    for flow in ("backups", "patch-apply", "restore-drill", "housekeeping", "doc-reconcile"):
        assert "dry_run must be true from the bus" in refused(flow, {"dry_run": False}), flow
    assert "'config' cannot be set" in refused("backups", {"config": "/etc/passwd"})
    assert "at most 20 items" in refused("patch-apply", {"hosts": [f"h{i}" for i in range(21)]})
    assert "invalid parameters: hosts.0" in refused("patch-check", {"hosts": ["a;reboot"]})
    assert "invalid parameters: vmids.0" in refused("backups", {"vmids": [99]})
    assert "a valid boolean" in refused("patch-apply", {"security_only": "yes"})


def test_default_allowlist_starts_read_only_and_dry_runs() -> None:
    # a lab-changing flow runs as a dry run whether or not the message says so
    assert accepted("backups", {}) == {"dry_run": True}
    assert accepted("backups", {"dry_run": True, "vmids": [101]}) == {
        "dry_run": True,
        "vmids": [101],
    }
    assert accepted("patch-apply", {"hosts": ["dns"], "security_only": True})["dry_run"] is True
    assert accepted("housekeeping", {"retention_days": 7}) == {"retention_days": 7, "dry_run": True}
    assert accepted("certificates", {}) == {"dry_run": True}
    assert accepted("security-digest", {"period": "weekly"}) == {
        "period": "weekly",
        "dry_run": True,
    }
    assert accepted("patch-check", {"hosts": ["pve1", "dns"]}) == {"hosts": ["pve1", "dns"]}
    req = parse_run_request(PREFIX, f"{PREFIX}/certificates", b"")
    assert req.parameters == {"dry_run": True} and req.request_id is None


def test_configured_rules_and_request_ids() -> None:
    config = parse_config(
        {
            "platform": {
                "triggers": {
                    # the operator allows real backups of two guests from the bus
                    "backups": {"parameters": {"vmids": {"values": [101, 102]}, "dry_run": {}}},
                    "housekeeping": {"parameters": {"retention_days": {"min": 7, "max": 90}}},
                    "certificates": {"enabled": False},
                }
            }
        }
    )
    rules = dict(config.platform.triggers)
    # a run that changes the lab needs an id: a redelivered message must not start it twice
    assert "needs a request_id" in refused("backups", {"vmids": [101]}, rules)
    req = parse_run_request(
        PREFIX, f"{PREFIX}/backups", b'{"vmids": [101], "request_id": "ha-42"}', rules
    )
    assert req.parameters == {"vmids": [101]} and req.request_id == "ha-42"
    assert "needs a request_id" in refused("backups", {"vmids": [101], "dry_run": False}, rules)
    assert accepted("backups", {"dry_run": True}, rules) == {"dry_run": True}
    assert "103 is not allowed" in refused("backups", {"vmids": [103], "request_id": "x"}, rules)
    # housekeeping: its own rule replaced the default (dry_run no longer fixed)
    assert "is below 7" in refused("housekeeping", {"retention_days": 1}, rules)
    assert "is above 90" in refused("housekeeping", {"retention_days": 91}, rules)
    assert "enabled is false" in refused("certificates", {}, rules)
    # the other flows keep their defaults
    assert accepted("patch-apply", {}, rules) == {"dry_run": True}
    assert "request_id" in refused("patch-check", {"request_id": "two words"}, rules)
    assert "request_id" in refused("patch-check", {"request_id": 7}, rules)


def test_refusals_are_one_short_escaped_line() -> None:
    """The payload is untrusted: nothing of it reaches the log unescaped or unbounded."""
    evil = "x\n2026-01-01 CRITICAL fake line\x1b[31m\u202e" + "A" * 5000
    cases = [
        ("housekeeping", {evil: 1}),
        ("housekeeping", {"retention_days": evil}),
        ("patch-check", {"hosts": [evil]}),
        ("patch-check", {"request_id": evil}),
        ("x\nfake/" + evil, {}),
        ("housekeeping", evil.encode()),
        ("housekeeping", b"\xff\xfe" + evil.encode()),
        ("housekeeping", b"[" * 100_000),
        ("housekeeping", b"1" * 10_000),
        ("housekeeping", b"{" + b" " * 20_000 + b"}"),
    ]
    for topic, payload in cases:
        line = refused(topic, payload)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
        assert line.isascii() and len(line) <= 300, line


def test_config_refuses_schedules_and_triggers_that_cannot_run() -> None:
    """The example config's old `patch-apply: {apply: true}` failed every scheduled run."""
    bad = {
        "schedules": {"patch-apply": {"cron": "0 3 * * 3", "parameters": {"apply": True}}},
        "triggers": {
            "housekeeping": {"parameters": {"retention_days": {}, "days": {}}},
            "backups": {"fixed": {"dry_run": "yes"}},
            "patch-check": {"parameters": {"hosts": {"values": ["ok", "not ok"]}}},
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"platform": bad})
    problems = sorted(info.value.problems)
    assert problems == [
        "platform.schedules.patch-apply.parameters.apply: not a parameter of patch-apply "
        "(its parameters: dry_run, security_only, hosts) (got True)",
        "platform.triggers.backups.fixed.dry_run: Input should be a valid boolean (got 'yes')",
        "platform.triggers.housekeeping.parameters.days: not a parameter of housekeeping "
        "(its parameters: dry_run, retention_days)",
        "platform.triggers.patch-check.parameters.hosts.values.1: not a valid hosts: String "
        "should match pattern '^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$' (got 'not ok')",
    ]
    with pytest.raises(ConfigError, match=r"parameters\.retention_days: Input should be greater"):
        parse_config(
            {"platform": {"schedules": {"housekeeping": {"cron": "1 1 * * *",
                                                         "parameters": {"retention_days": 0}}}}}
        )  # fmt: skip
    with pytest.raises(ConfigError, match="config: set by `labops deploy`"):
        parse_config(
            {"platform": {"schedules": {"backups": {"cron": "1 1 * * *",
                                                    "parameters": {"config": "x"}}}}}
        )  # fmt: skip


# -- the bridge, without a broker: retained messages and request ids -------------------------


def message(topic: str, payload: dict[str, Any], retain: bool = False) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = json.dumps(payload).encode()
    msg.retain = retain
    return msg


@pytest.fixture
def bridge(tmp_path: Path, mqtt: MqttBroker) -> Bridge:
    config = {
        "lab": {"name": "trigger-lab", "state_dir": str(tmp_path / "state")},
        "systems": {"mqtt": {"host": mqtt.host, "port": mqtt.port, "topic_prefix": mqtt.prefix}},
        "platform": {"mqtt_run_topic": f"{mqtt.prefix}/run"},
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    return Bridge(LabContext.load(str(path)))


def test_retained_and_repeated_requests_start_nothing(
    bridge: Bridge, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[Any] = []

    def start(request: Any) -> str:
        starts.append(request)
        return f"run-{len(starts)}"

    monkeypatch.setattr(bridge, "start", start)
    caplog.set_level(logging.INFO, logger="labops.bridge")
    topic = f"{bridge.policy.mqtt_run_topic}/backups"

    bridge._handle_message(message(topic, {"vmids": [101]}, retain=True))
    assert starts == []  # a retained request is replayed on every reconnect: never a run
    refusals = [r for r in caplog.records if "refused MQTT message" in r.getMessage()]
    assert len(refusals) == 1 and "retained" in refusals[0].getMessage()

    bridge._handle_message(message(topic, {"vmids": [101], "request_id": "a1"}))
    bridge._handle_message(message(topic, {"vmids": [101], "request_id": "a1"}))  # QoS 1 again
    bridge._handle_message(message(topic, {"vmids": [101], "request_id": "a2"}))
    assert [s.request_id for s in starts] == ["a1", "a2"]
    assert bridge.started == ["run-1", "run-2"]
    assert any("already started flow run run-1" in r.getMessage() for r in caplog.records)

    caplog.clear()
    bridge._handle_message(message(topic, {"dry_run": False, "request_id": "a3"}))
    bridge._handle_message(message(f"{bridge.policy.mqtt_run_topic}/certificates", {"renew": True}))
    assert len(starts) == 2
    lines = [r.getMessage() for r in caplog.records if "refused MQTT" in r.getMessage()]
    assert len(lines) == 2, lines  # each refused message logged once
    assert "dry_run must be true" in lines[0] and "renew cannot be set" in lines[1]


# -- the bridge's alert memory ------------------------------------------------------------


def failed_event(run_id: str, lab: str = "trigger-lab") -> Any:
    """A run of the lab failed: its tags (``lab:<lab>``) come among the related resources."""
    return SimpleNamespace(
        event="prefect.flow-run.Failed",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": "backups"},
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.lab:{lab}"},
        ],
        payload={"validated_state": {"message": "2 guests failed"}},
        occurred=datetime.now(UTC) + timedelta(seconds=1),
    )


@pytest.mark.parametrize(
    "content",
    [b'{"keys": ["run-0", "ru', b"\x00\xff garbage", b'{"keys": 5}', b"[]", b""],
    ids=["cut-short", "binary", "wrong-shape", "not-an-object", "empty"],
)
def test_corrupt_bridge_state_is_reported_rebuilt_and_never_silences(
    bridge: Bridge, mqtt: MqttBroker, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    state = Path(bridge.ctx.config.lab.state_dir) / "bridge-alerts.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(content)
    lab = lab_slug(bridge.ctx.config.lab.name)  # notifications go under <prefix>/<lab>/
    sub = mqtt.subscribe(f"{mqtt.prefix}/{lab}/alerts/#")
    caplog.set_level(logging.WARNING, logger="labops.bridge")
    run_id = str(uuid.uuid4())

    bridge.handle_event(failed_event(run_id))

    got = sub.wait_for(2, timeout=10)
    topics = sorted(m.topic.removeprefix(f"{mqtt.prefix}/{lab}/") for m in got)
    assert topics == ["alerts/bridge-state", "alerts/flow-run"], topics
    alert = next(m.json() for m in got if m.topic.endswith("flow-run"))
    assert alert["flow_run_id"] == run_id
    lines = [r.getMessage() for r in caplog.records if "bridge state" in r.getMessage()]
    assert len(lines) == 1 and "rebuilt" in lines[0] and "\n" not in lines[0], lines
    # rebuilt: valid, remembers the alert, the broken one kept for a look
    assert json.loads(state.read_text())["keys"] == [run_id]
    assert state.with_name(state.name + ".corrupt").read_bytes() == content
    # and remembers from now on: the same failure does not alert again
    bridge.handle_event(failed_event(run_id))
    assert len(sub.wait_for(3, timeout=2)) == 2


# -- two bridges of one lab on one broker ------------------------------------------------------


def test_two_bridges_on_one_broker_start_one_run_per_message(
    prefect_server: Any, tmp_path: Path, mqtt: MqttBroker
) -> None:
    """Two bridges of one lab on the machine's Mosquitto (a second host, or a restart that
    overlaps the old process) and one request without a request_id: exactly one flow run.
    Sentinel messages published after it are kept coming until each bridge handled one: a
    broker delivers one publisher's messages to a client in order, so by then the request
    reached every bridge it ever will."""
    import contextvars
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    from deployments.definitions import deployment_specs, runner_deployments
    from labops.config import load_config

    lab = f"twin-{uuid.uuid4().hex[:6]}"
    config = {
        "lab": {"name": lab, "state_dir": str(tmp_path / "state")},
        "systems": {"mqtt": {"host": mqtt.host, "port": mqtt.port, "topic_prefix": mqtt.prefix}},
        "platform": {
            "mqtt_run_topic": f"{mqtt.prefix}/run",
            "mqtt_events_topic": f"{mqtt.prefix}/events",
        },
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    specs = [s for s in deployment_specs(load_config(path), path) if s.flow == "housekeeping"]
    deployment_id = runner_deployments(specs)[0].apply()

    bridges = [Bridge(LabContext.load(str(path))) for _ in range(2)]
    handled: list[list[str]] = [[], []]
    for seen, bridge in zip(handled, bridges, strict=True):
        original = bridge._handle_message

        def record(msg: Any, seen: list[str] = seen, original: Any = original) -> None:
            seen.append(bytes(msg.payload).decode())
            original(msg)

        bridge._handle_message = record  # type: ignore[method-assign]
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(b.run, 60), daemon=True)
        for b in bridges
    ]
    for thread in threads:
        thread.start()
    publisher = mqtt_client()
    topic = f"{mqtt.prefix}/run/housekeeping"

    def until_each_handled(word: str) -> None:
        deadline = time.monotonic() + 90  # bounds a hang, not a speed
        while not all(word in seen for seen in handled):
            assert time.monotonic() < deadline, handled
            publisher.publish(topic, word, qos=1).wait_for_publish(30)
            time.sleep(0.3)

    try:
        until_each_handled("warm-up")  # both bridges connected and subscribed
        publisher.publish(topic, json.dumps({"dry_run": True}), qos=1).wait_for_publish(30)
        until_each_handled("sentinel")
    finally:
        for bridge in bridges:
            bridge.stop()
        for thread in threads:
            thread.join(20)
        publisher.loop_stop()
        publisher.disconnect()
    requests = [p for seen in handled for p in seen if p not in ("warm-up", "sentinel")]
    started = [r for b in bridges for r in b.started]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(  # the scheduler's runs of the deployment are not asked
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["mqtt"])),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        )
        for run in runs:  # nobody serves them here
            client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)
    assert len(requests) == 1, handled  # the old plain subscription gave each bridge a copy
    assert len(started) == 1 and [str(r.id) for r in runs] == started, (started, runs)


def test_the_bridges_subscription_is_shared_per_lab() -> None:
    from deployments.mqtt_bridge import run_subscription

    assert run_subscription("labops/run/", "homelab") == "$share/labops-bridge-homelab/labops/run/+"
    shared = run_subscription("labops/run", "Home Lab/#+")
    group = shared.split("/")[1]
    assert group.startswith("labops-bridge-home-lab-") and not set(group) & set("/#+")


def mqtt_client() -> mqtt.Client:
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    return client
