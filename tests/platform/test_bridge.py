"""The operations platform over real parts: a Prefect server, a serve process, Mosquitto."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from blocks.context import LabContext
from deployments.mqtt_bridge import BadRequest, Bridge, parse_run_request

ROOT = Path(__file__).resolve().parents[2]


class Listener:
    """Collects every message under a topic prefix on the machine's Mosquitto."""

    def __init__(self, prefix: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.messages.append((msg.topic, json.loads(msg.payload)))
        except ValueError:
            self.messages.append((msg.topic, {"raw": msg.payload.decode(errors="replace")}))

    def wait(self, predicate: Any, timeout: float = 90.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [m for m in list(self.messages) if predicate(*m)]
            if hits:
                return hits
            time.sleep(0.2)
        return []

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


@pytest.fixture
def platform(prefect_server: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    prefix = f"labops-test-{uuid.uuid4().hex[:8]}"
    config = {
        "lab": {
            "name": "testlab",
            "state_dir": str(tmp_path / "state"),
            "ui_url": "http://127.0.0.1:4200",
        },
        "systems": {"mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": prefix}},
        "docs": {"paths": [str(tmp_path / "missing.md")]},  # doc-reconcile fails on purpose
        "platform": {"mqtt_run_topic": f"{prefix}/run", "mqtt_events_topic": f"{prefix}/events"},
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    serve_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.serve",
            "--config",
            str(path),
            "--only",
            "housekeeping",
            "doc-reconcile",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=serve_log,
    )
    listener = Listener(prefix)
    bridge = Bridge(LabContext.load(str(path)))
    context = contextvars.copy_context()  # the Prefect settings of the session server
    thread = threading.Thread(target=context.run, args=(bridge.run, 5), daemon=True)
    thread.start()
    try:
        yield {
            "prefix": prefix,
            "bridge": bridge,
            "listener": listener,
            "serve": server,
            "serve_log": tmp_path / "serve.log",
        }
    finally:
        bridge.stop()
        thread.join(10)
        listener.close()
        server.terminate()
        server.wait(20)
        serve_log.close()


def wait_for_deployments(names: set[str], timeout: float = 60) -> None:
    """Until ``<flow>/<deployment>`` exists for each of ``names``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    missing = set(names)
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            for name in sorted(missing):
                with contextlib.suppress(ObjectNotFound):
                    client.read_deployment_by_name(name)
                    missing.discard(name)
        if not missing:
            return
        time.sleep(0.5)
    raise AssertionError(f"deployments {missing} never appeared")


def diagnose(platform: dict[str, Any], run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = [str(client.read_flow_run(uuid.UUID(r)).state) for r in run_ids]
        url = client.api_url
    log = platform["serve_log"].read_text(errors="replace")[-2000:]
    topics = [t for t, _ in platform["listener"].messages]
    return f"api {url}; runs {states}; mqtt {topics}; serve log: {log}"


def test_mqtt_runs_events_malformed_and_one_alert(
    platform: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    prefix, bridge, listener = platform["prefix"], platform["bridge"], platform["listener"]
    wait_for_deployments({"housekeeping/testlab", "doc-reconcile/testlab"})
    caplog.set_level(logging.DEBUG, logger="labops.bridge")

    publish(f"{prefix}/run/housekeeping", "this is not json")
    publish(f"{prefix}/run/no-such-flow", "{}")
    publish(f"{prefix}/run/housekeeping", json.dumps({"retention_days": 0}))
    publish(f"{prefix}/run/housekeeping", json.dumps({"dry_run": True}))

    done = listener.wait(lambda t, m: t == f"{prefix}/events/housekeeping/completed")
    assert done, diagnose(platform, bridge.started) + caplog.text
    assert len(bridge.started) == 1  # the three malformed messages started nothing
    assert done[0][1]["flow_run_id"] == bridge.started[0]
    states = [
        t.rsplit("/", 1)[1]
        for t, _ in listener.messages
        if t.startswith(f"{prefix}/events/housekeeping/")
    ]
    assert "running" in states and "completed" in states
    logged = caplog.text
    assert "not JSON" in logged and "unknown flow 'no-such-flow'" in logged
    assert "invalid parameters" in logged

    publish(f"{prefix}/run/doc-reconcile", "{}")
    failed = listener.wait(lambda t, m: t == f"{prefix}/events/doc-reconcile/failed")
    assert failed, "the failing flow never reported Failed"
    alert = listener.wait(lambda t, m: t == f"{prefix}/testlab/alerts/flow-run")
    assert alert and alert[0][1]["flow"] == "doc-reconcile"
    assert alert[0][1]["link"].endswith(failed[0][1]["flow_run_id"])
    time.sleep(3)
    alerts = [m for t, m in listener.messages if t == f"{prefix}/testlab/alerts/flow-run"]
    assert len(alerts) == 1


def test_run_requests_are_validated() -> None:
    req = parse_run_request("labops/run", "labops/run/housekeeping", b'{"dry_run": true}')
    assert req.flow == "housekeeping" and req.parameters == {"dry_run": True}
    for topic, payload, why in [
        ("labops/run/housekeeping", b"[1]", "JSON object"),
        ("labops/run/housekeeping", b'{"bogus": 1}', "unknown parameter"),
        ("labops/run/housekeeping", b'{"config": "/etc/passwd"}', "cannot be set"),
        ("labops/run/housekeeping", b'{"retention_days": "soon"}', "invalid parameters"),
        ("labops/run/x/y", b"{}", "unknown flow"),
    ]:
        with pytest.raises(BadRequest, match=why):
            parse_run_request("labops/run", topic, payload)
