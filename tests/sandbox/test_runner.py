"""``python -m sandbox start/stop/status``: the config it writes, start time and memory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sandbox.runner import build_parser, external_systems, run_args
from tests.fixtures.sandbox import REPO, free_port_range


def _cli(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_start_stop_config_time_and_memory(tmp_path: Path) -> None:
    from labops.config import load_config

    base = free_port_range()
    t0 = time.monotonic()
    started = _cli(
        "start", "--dir", str(tmp_path), "--base-port", str(base), "--time-scale", "0.01"
    )
    elapsed = time.monotonic() - t0
    assert started.returncode == 0, started.stderr
    try:
        config_path = Path(started.stdout.strip())
        assert config_path == tmp_path / "labops.yaml"
        ready = json.loads((tmp_path / "ready").read_text())
        assert {"pve", "pbs"} <= set(ready["services"])
        config = load_config(config_path)
        assert config.systems.proxmox is not None and config.systems.pbs is not None
        assert set(config.systems.proxmox.nodes) == {"pve1", "pve2", "pve3", "pve4"}
        assert config.systems.pbs.pve_storage == "pbs"
        # real services only when asked for (--mqtt, --victoriametrics)
        assert config.systems.mqtt is None and config.systems.victoriametrics is None
        raw = yaml.safe_load(config_path.read_text())
        secret_ref = raw["systems"]["proxmox"]["token_secret"]
        assert secret_ref.startswith("file:")
        secret_file = Path(secret_ref[5:])
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert secret_file.read_text().strip() not in config_path.read_text()
        assert (tmp_path / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        status = _cli("status", "--dir", str(tmp_path))
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == ready["pid"]
        rss = _rss(ready["pid"])
        print(
            f"\nsandbox start: {elapsed:.2f}s (in-process {ready['startup_s']:.2f}s), "
            f"RSS {rss / 1e6:.1f} MB, services: {', '.join(ready['services'])}"
        )
        if ready["failed"]:
            print(f"services that failed to start: {ready['failed']}")
        assert rss < 300 * 1024**2  # the start time is printed, not judged: CI is a busy machine
    finally:
        stopped = _cli("stop", "--dir", str(tmp_path))
    assert stopped.returncode == 0
    assert not (tmp_path / "ready").exists()
    assert _cli("status", "--dir", str(tmp_path)).returncode == 3
    with pytest.raises(ProcessLookupError):
        os.kill(ready["pid"], 0)


def test_scenario_flag(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(scenario="node-offline")
    nodes = {n["node"]: n["status"] for n in sb.pve().nodes.get()}
    assert nodes["pve3"] == "offline"
    assert sb.state()["scenario"] == "node-offline"


def test_mqtt_and_victoriametrics_options_reach_the_config(tmp_path: Path) -> None:
    from labops.config import parse_config

    parser = build_parser()
    services = ["--mqtt", "127.0.0.1:1884", "--victoriametrics", "http://127.0.0.1:8428/"]
    started = parser.parse_args(["start", "--dir", str(tmp_path), *services])
    # what `start` hands to the daemonised `run` carries both options
    served = parser.parse_args(run_args(started, tmp_path))
    config = parse_config(external_systems(served))
    assert config.systems.mqtt is not None and config.systems.victoriametrics is not None
    assert (config.systems.mqtt.host, config.systems.mqtt.port) == ("127.0.0.1", 1884)
    assert config.systems.mqtt.topic_prefix == "labops"
    assert str(config.systems.victoriametrics.url).rstrip("/") == "http://127.0.0.1:8428"
    ipv6 = parser.parse_args(
        run_args(parser.parse_args(["run", "--dir", "d", "--mqtt", "[::1]"]), tmp_path)
    )
    assert external_systems(ipv6) == {"systems": {"mqtt": {"host": "::1", "port": 1883}}}
    assert external_systems(parser.parse_args(["run", "--dir", "d"])) == {}


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--mqtt", "broker:0", "port 0"),
        ("--mqtt", "broker:x", "could not be cast"),
        ("--mqtt", "broker/topic", "not HOST or HOST:PORT"),
        ("--victoriametrics", "127.0.0.1:8428", "not an http:// or https:// URL"),
    ],
)
def test_bad_service_option_names_the_option(
    option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["start", "--dir", "d", option, value])
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and says in err
