"""``labops config check`` against real servers: local sshd, Mosquitto, a closed port, and the
sandbox homelab (every configured system reachable; one wrong token reported as an auth failure).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.checks import CHECKS, ENDPOINTS, Status, check_all
from labops.config import load_config

LABOPS = [sys.executable, "-m", "cli.main"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket goes


def write_config(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(body))
    return path


def test_checks_against_local_servers(sshd: Any, tmp_path: Path) -> None:
    wrong_key = tmp_path / "wrong_key"
    from tests.fixtures.sshd import write_ed25519_key

    write_ed25519_key(wrong_key)
    port = closed_port()
    body: dict[str, Any] = {
        "systems": {
            "ssh": {"key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts)},
            "mqtt": {"host": "127.0.0.1", "port": 1883},
            "victoriametrics": {"url": f"http://127.0.0.1:{port}"},
            "llm": {"models": [{"model": "ollama/llama3"}]},
        },
        "inventory": {"hosts": [{"name": "local", "address": sshd.address, "port": sshd.port}]},
    }
    config = load_config(write_config(tmp_path / "labops.yaml", body))
    results = {r.system: r for r in check_all(config, timeout_s=5)}
    assert results["ssh"].status == Status.OK, results["ssh"]
    assert results["mqtt"].status == Status.OK, results["mqtt"]
    assert results["victoriametrics"].status == Status.UNREACHABLE
    assert results["llm"].status == Status.OK and "not contacted" in results["llm"].detail
    assert results["proxmox"].status == Status.SKIPPED

    body["systems"]["ssh"]["key_file"] = str(wrong_key)
    config = load_config(write_config(tmp_path / "wrong.yaml", body))
    results = {r.system: r for r in check_all(config, timeout_s=5)}
    assert results["ssh"].status == Status.AUTH_FAILED, results["ssh"]


def test_cli_table_and_exit_status(tmp_path: Path) -> None:
    port = closed_port()
    path = write_config(
        tmp_path / "labops.yaml",
        {"systems": {"loki": {"url": f"http://127.0.0.1:{port}"}, "mqtt": {"port": 1883}}},
    )
    proc = subprocess.run(
        [*LABOPS, "config", "check", "--config", str(path), "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["SYSTEM", "ENDPOINT", "STATUS", "DETAIL"]
    loki = next(line for line in lines if line.startswith("loki"))
    assert "unreachable" in loki and f"127.0.0.1:{port}" in loki
    assert any(line.startswith("mqtt") and " ok " in line for line in lines)
    assert "1 failed: loki" in proc.stderr


class TlsServer:
    """A loopback TLS server (a sandbox CA certificate) that completes handshakes."""

    def __init__(self) -> None:
        import ssl
        import threading

        from sandbox.tls import SandboxCA, server_ssl_context

        issued = SandboxCA.create("Config Check CA").issue_server_cert(["localhost"])
        self.ctx: ssl.SSLContext = server_ssl_context(issued.chain_pem, issued.key_pem)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_skipped_is_not_fine_and_each_endpoint_must_answer_a_handshake(tmp_path: Path) -> None:
    """Through the CLI: skipped systems are counted as skipped; each configured certificate
    endpoint gets a TLS handshake, bounded by --timeout, one line per endpoint that fails."""
    server = TlsServer()
    stalled = socket.create_server(("127.0.0.1", 0))  # accepts TCP, never speaks TLS
    stalled_port = int(stalled.getsockname()[1])
    closed = closed_port()
    try:
        path = write_config(
            tmp_path / "labops.yaml",
            {
                "systems": {"mqtt": {"port": 1883}},
                "inventory": {
                    "discover_from_proxmox": False,
                    "endpoints": [
                        {"name": "localhost", "address": "127.0.0.1", "port": server.port},
                        {"name": "closed.lab", "address": "127.0.0.1", "port": closed},
                        {
                            "name": "stalled.lab",
                            "address": "127.0.0.1",
                            "port": stalled_port,
                        },
                    ],
                },
            },
        )
        proc = subprocess.run(
            [*LABOPS, "config", "check", "--config", str(path), "--timeout", "2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.close()
        stalled.close()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    endpoint_lines = [line for line in proc.stdout.splitlines() if line.startswith("endpoints")]
    assert len(endpoint_lines) == 3, proc.stdout
    refused = f"closed.lab:{closed} via 127.0.0.1"
    hung = f"stalled.lab:{stalled_port} via 127.0.0.1"
    assert any(refused in x and "unreachable" in x and "refused" in x for x in endpoint_lines)
    assert any(hung in x and "TLS handshake timed out after 2 s" in x for x in endpoint_lines)
    assert any("1 of 3" in x and " ok " in x for x in endpoint_lines)
    systems = len(CHECKS)  # mqtt fine, the other systems not configured
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary == f"labops: 2 fine, {systems - 1} skipped, 2 failed: {refused}, {hung}"


# -- against the sandbox homelab (runs once tests/fixtures/sandbox.py provides `sandbox`) -------


@pytest.fixture
def sandbox_config(request: pytest.FixtureRequest) -> Path:
    try:
        lab = request.getfixturevalue("sandbox")
    except pytest.FixtureLookupError:
        pytest.skip("the sandbox fixture (tests/fixtures/sandbox.py) is not available yet")
    return Path(lab.config_path)


def _check_json(
    config: Path, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Exit code, the systems' rows by system, the endpoints' statuses by endpoint."""
    proc = subprocess.run(
        [*LABOPS, "config", "check", "--config", str(config), "--json", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    rows = json.loads(proc.stdout)
    systems = {r["system"]: r for r in rows if r["system"] != ENDPOINTS}
    endpoints = {r["endpoint"]: r["status"] for r in rows if r["system"] == ENDPOINTS}
    return proc.returncode, systems, endpoints


@pytest.mark.slow
def test_every_sandbox_system_is_reachable(sandbox_config: Path) -> None:
    code, results, endpoints = _check_json(sandbox_config)
    configured = [r for r in results.values() if r["detail"] != "not configured"]
    assert configured, "the sandbox config configures no system"
    bad = {name: r for name, r in results.items() if r["status"] not in ("ok", "skipped")}
    assert not bad
    assert results["proxmox"]["status"] == "ok"
    # The sandbox's two direct endpoints are broken on purpose (a closed port, a stalled
    # handshake): the check names each, and that is a failure.
    failing = {e.split(":")[0] for e, status in endpoints.items() if status != "ok"}
    assert failing == {"offline.lab.internal", "stalled.lab.internal"}, endpoints
    assert code == 1


@pytest.mark.slow
def test_one_wrong_token_is_an_auth_failure(sandbox_config: Path) -> None:
    raw = yaml.safe_load(sandbox_config.read_text())
    raw["systems"]["proxmox"]["token_secret"] = "env:LABOPS_TEST_WRONG_PVE_TOKEN"
    wrong = sandbox_config.with_name(f"labops-wrong-token-{os.getpid()}.yaml")
    wrong.write_text(yaml.safe_dump(raw))  # beside the original: its relative paths still hold
    try:
        code, results, _ = _check_json(
            wrong, {"LABOPS_TEST_WRONG_PVE_TOKEN": "00000000-0000-0000-0000-000000000000"}
        )
    finally:
        wrong.unlink()
    assert code == 1
    assert results["proxmox"]["status"] == "auth failed", results["proxmox"]
    others = {n: r["status"] for n, r in results.items() if n != "proxmox"}
    assert set(others.values()) <= {"ok", "skipped"}, others


def test_crowdsec_and_victoriametrics_checks(
    crowdsec: Any, victoriametrics: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABOPS_TEST_CS_PASSWORD", crowdsec.machine_password)
    monkeypatch.setenv("LABOPS_TEST_CS_KEY", crowdsec.bouncer_key)
    monkeypatch.setenv("LABOPS_TEST_WRONG", "not-the-right-secret-0000")
    lapi = {
        "url": crowdsec.url,
        "machine_id": crowdsec.machine_id,
        "machine_password": "env:LABOPS_TEST_CS_PASSWORD",
        "bouncer_key": "env:LABOPS_TEST_CS_KEY",
    }
    body = {"systems": {"crowdsec": lapi, "victoriametrics": {"url": victoriametrics.url}}}
    config = load_config(write_config(tmp_path / "good.yaml", body))
    results = {r.system: r for r in check_all(config, timeout_s=5)}
    assert results["crowdsec"].status == Status.OK, results["crowdsec"]
    assert "watcher labops logged in" in results["crowdsec"].detail
    assert "bouncer ok" in results["crowdsec"].detail
    assert results["victoriametrics"].status == Status.OK

    for key in ("bouncer_key", "machine_password"):
        wrong = {**lapi, key: "env:LABOPS_TEST_WRONG"}
        config = load_config(
            write_config(tmp_path / f"{key}.yaml", {"systems": {"crowdsec": wrong}})
        )
        result = next(r for r in check_all(config, timeout_s=5) if r.system == "crowdsec")
        assert result.status == Status.AUTH_FAILED, (key, result)
        assert "not-the-right-secret" not in result.detail
