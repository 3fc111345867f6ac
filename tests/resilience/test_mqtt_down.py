"""Mosquitto down: a flow's notification still reaches Telegram and the flow still succeeds; when
the broker comes back the MQTT bridge reconnects by itself and a run request starts a run again.

A private ``mosquitto`` on a free port is stopped and started (the machine's broker on 1883 is
shared with other tests); Telegram is the sandbox's Telegram Bot API.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prefect.deployments.runner import RunnerDeployment

from labops.docs.report import DocReport
from labops.scope import deployment_name, lab_tag
from tests.fixtures.sandbox import SandboxHandle
from tests.resilience.platform import MOSQUITTO, Mosquitto, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def drill_config(sandbox: SandboxHandle, work: Path, mqtt_port: int) -> tuple[Path, str, str]:
    """The sandbox's config plus MQTT on the private broker and a doc that drifted.

    Returns (config path, lab name, topic prefix): both unique, so the messages of this test
    are told apart from everyone else's on the shared sandbox Telegram.
    """
    config = yaml.safe_load(sandbox.config_path.read_text())
    lab = f"drill-{uuid.uuid4().hex[:8]}"
    prefix = f"labops-drill-{uuid.uuid4().hex[:8]}"
    (work / "docs").mkdir()
    (work / "docs" / "lab.md").write_text("# Lab\n\nThe cluster has 7 Proxmox nodes.\n")
    config["lab"].update(name=lab, state_dir=str(work / "state"))
    config["systems"]["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": prefix}
    config["docs"] = {"paths": [str(work / "docs")], "write": False}
    config["platform"] = {
        "mqtt_run_topic": f"{prefix}/run",
        "mqtt_events_topic": f"{prefix}/events",
    }
    path = work / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, lab, prefix


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def telegram_texts(sandbox: SandboxHandle, lab: str) -> list[str]:
    messages = sandbox.control("telegram", "messages")["messages"]
    return [m["text"] for m in messages if lab in m["text"]]


def publish(port: int, topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_mosquitto_down_telegram_gets_it_and_bridge_reconnects(
    prefect_server: Any, sandbox: SandboxHandle, broker: Mosquitto, tmp_path: Path
) -> None:
    from blocks.context import LabContext
    from deployments.mqtt_bridge import Bridge
    from flows.doc_reconcile import doc_reconcile
    from flows.housekeeping import housekeeping

    path, lab, prefix = drill_config(sandbox, tmp_path, broker.port)
    bridge = Bridge(LabContext.load(str(path)))
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(bridge.run, 3600), daemon=True
    )
    thread.start()
    probe_deployment: str | None = None
    try:
        wait_for(bridge.client.is_connected, 20, "the bridge never connected to mosquitto")

        broker.stop()
        wait_for(lambda: not bridge.client.is_connected(), 20, "the bridge never saw it go")
        started = time.monotonic()
        state = doc_reconcile(config=str(path), return_state=True)
        took = time.monotonic() - started
        # The run did its job (the drift is found and reported to Telegram), but one of its
        # channels failed: that is a failure of its notify step, named once (issue 15).
        report = cast(DocReport, state.result(raise_on_failure=False))
        assert report.drifted >= 1, report.markdown()
        assert [(f.entity, f.reason.split(":")[0]) for f in report.failures] == [
            ("notify", "mqtt")
        ], report.failures
        texts = wait_for(lambda: telegram_texts(sandbox, lab), 10, "no Telegram message")
        assert any("docs drifted" in t for t in texts), texts
        assert took < 60, f"a dead broker slowed the flow to {took:.0f}s"

        broker.start()  # same port: the bridge's own reconnect loop must find it
        wait_for(bridge.client.is_connected, 45, "the bridge did not reconnect")
        # a deployment the bridge can start (the lab's, as `labops deploy` names and tags them)
        deployment = cast(
            RunnerDeployment,
            housekeeping.to_deployment(
                name=deployment_name(lab), parameters={"config": str(path)}, tags=[lab_tag(lab)]
            ),
        )
        probe_deployment = str(deployment.apply())
        request = f"{prefix}/run/housekeeping"

        def started_one() -> bool:
            if not bridge.started:
                publish(broker.port, request, json.dumps({"dry_run": True}))
            return bool(bridge.started)

        wait_for(started_one, 30, "a run request after the restart started nothing", step=1.0)
    finally:
        bridge.stop()
        thread.join(10)
        with httpx.Client(base_url=prefect_server.api_url, timeout=30) as http:
            # nobody serves these runs here: leave nothing Scheduled for other tests' workers
            for run_id in bridge.started:
                http.delete(f"/flow_runs/{run_id}")
            if probe_deployment:
                http.delete(f"/deployments/{probe_deployment}")
