"""The bridge on a broker that authenticates and authorises, as docs/production.md sets it up: a
Mosquitto of the test's own with a TLS listener, a password file made with `mosquitto_passwd`
and the documented ACL file. An anonymous client, a wrong password and an authenticated client
without the ACL start nothing; the allowed operator starts one run, once per request id; a
retained request starts nothing."""

from __future__ import annotations

import contextvars
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from blocks.context import LabContext
from deployments.mqtt_bridge import Bridge
from labops import prefect_server

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd")
ROOT = Path(__file__).resolve().parents[2]
USERS = {"labops": "labops-secret-1", "operator": "op-secret-2", "dashboard": "dash-secret-3"}
MARK = "<!-- acl: tests/platform/test_broker_acl.py"


def documented_acl() -> str:
    """The ACL file of docs/production.md, exactly (the fenced block after its marker)."""
    text = (ROOT / "docs" / "production.md").read_text()
    block = text[text.index(MARK) :].split("```", 2)[1]
    return block.removeprefix("\n")


@dataclass
class Broker:
    port: int
    ca: Path
    log: Path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if PASSWD is None or not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto and mosquitto_passwd are not installed")
    from sandbox.tls import SandboxCA

    ca = SandboxCA.create()
    leaf = ca.issue_server_cert(["localhost"], ["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "server.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "server.key").write_bytes(leaf.key_pem)
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([PASSWD, *create, "-b", str(passwd), user, password], check=True)
    (tmp_path / "acl").write_text(documented_acl())
    port = prefect_server.free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"""per_listener_settings false
allow_anonymous false
password_file {passwd}
acl_file {tmp_path / "acl"}
persistence false
user root
listener {port} 127.0.0.1
cafile {tmp_path / "ca.pem"}
certfile {tmp_path / "server.pem"}
keyfile {tmp_path / "server.key"}
"""
    )
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    try:
        yield Broker(port=port, ca=tmp_path / "ca.pem", log=log)
    finally:
        proc.terminate()
        proc.wait(10)


def publish_as(
    broker: Broker,
    user: str | None,
    password: str | None,
    topic: str,
    payload: dict[str, Any],
    retain: bool = False,
) -> str:
    """'refused' when the broker refuses the login, else 'sent' (QoS 1 acknowledged: a
    publish the ACL denies is acknowledged and dropped, MQTT 3.1.1 has no way to say so)."""
    answer: dict[str, Any] = {}
    connected = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        answer["failed"] = reason.is_failure
        connected.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.tls_set(ca_certs=str(broker.ca))
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect = on_connect
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.loop_start()
    try:
        assert connected.wait(20), "no CONNACK from the broker"
        if answer["failed"]:
            return "refused"
        info = client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        info.wait_for_publish(20)
        assert info.is_published()
        return "sent"
    finally:
        client.loop_stop()
        client.disconnect()


class Lines(logging.Handler):
    """The bridge's log lines, straight from its logger (Prefect's logging setup, done when the
    flows are imported, replaces the root handlers pytest's caplog listens on)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def seen(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_only_the_allowed_client_starts_a_run(
    prefect_server: Any,
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client

    from deployments.definitions import deployment_specs, runner_deployments
    from labops.config import load_config

    monkeypatch.setenv("LABOPS_TEST_BRIDGE_PW", USERS["labops"])
    config = {
        "lab": {"name": f"acl-{uuid.uuid4().hex[:6]}", "state_dir": str(tmp_path / "state")},
        "systems": {
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "tls": True,
                "ca_bundle": str(broker.ca),
                "username": "labops",
                "password": "env:LABOPS_TEST_BRIDGE_PW",
            }
        },
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    specs = [s for s in deployment_specs(load_config(path), path) if s.flow == "security-digest"]
    runner_deployments(specs)[0].apply()
    run = "labops/run/security-digest"

    # retained before the bridge subscribes: replayed to it, and ignored
    assert publish_as(broker, "operator", USERS["operator"], run, {"request_id": "old"}, True)
    bridge = Bridge(LabContext.load(str(path)))
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(bridge.run, 60), daemon=True
    )
    lines = Lines()
    logger = logging.getLogger("labops.bridge")
    logger.addHandler(lines)
    monkeypatch.setattr(logger, "level", logging.INFO)
    thread.start()
    try:
        # connected and subscribed (the subscription is made in the CONNACK handler, and the
        # retained request it replays proves it; the INFO line may be filtered by whatever
        # logging setup ran last in this process)
        wait_for(bridge.client.is_connected, 60, "bridge login over TLS")
        wait_for(lambda: lines.seen("retained"), 30, "the retained request refused")

        assert publish_as(broker, None, None, run, {"period": "daily"}) == "refused"
        assert publish_as(broker, "operator", "wrong", run, {"period": "daily"}) == "refused"
        # authenticated, but the ACL gives it no write on labops/run/#: dropped by the broker
        other = {"period": "daily", "request_id": "in-1"}
        assert publish_as(broker, "dashboard", USERS["dashboard"], run, other) == "sent"
        wanted = {"period": "weekly", "request_id": "op-1"}
        for _ in range(2):  # a QoS 1 message delivered twice
            assert publish_as(broker, "operator", USERS["operator"], run, wanted) == "sent"
        wait_for(lambda: len(bridge.started) >= 1, 60, "the operator's run")
        wait_for(lambda: lines.seen("already started"), 30, "the repeated request refused")
    finally:
        bridge.stop()
        thread.join(20)
        logger.removeHandler(lines)
    try:
        assert len(bridge.started) == 1, bridge.started
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(bridge.started[0]))
        assert flow_run.parameters["period"] == "weekly"
        assert flow_run.parameters["dry_run"] is True  # the allowlist's default for the bus
        assert flow_run.idempotency_key and flow_run.idempotency_key.endswith(":op-1")
        assert "mqtt" in flow_run.tags
    finally:
        with get_client(sync_client=True) as client:
            for run_id in bridge.started:  # never left for another test's serve process
                client.delete_flow_run(uuid.UUID(run_id))
