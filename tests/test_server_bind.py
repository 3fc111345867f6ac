"""`labops server start` serves beyond loopback only with basic auth, or with an explicit and
loud `--insecure`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cli.main import main as labops
from labops import prefect_server

AUTH = prefect_server.SERVER_AUTH_ENV


def test_loopback_or_auth_only() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        assert prefect_server.bind_refusal(host, auth=False) is None, host
    for host in ("0.0.0.0", "::", "192.0.2.2", "fd00::2", "prefect.lan", "localhost.lan"):
        refusal = prefect_server.bind_refusal(host, auth=False)
        assert refusal and AUTH in refusal and "--insecure" in refusal, host
        assert prefect_server.bind_refusal(host, auth=True) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.2"])
def test_start_refuses_a_public_bind_without_auth(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(AUTH, raising=False)
    home = tmp_path / "prefect"
    assert labops(["server", "start", "--host", host, "--home", str(home), "--no-ui"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and AUTH in err and "--insecure" in err, err
    assert not (home / prefect_server.PID_FILE).exists()  # nothing was started
    assert prefect_server.status(home) is None


def _lan_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name == "AF_INET" and not prefect_server.is_loopback(addr.address):
                return str(addr.address)
    return None


@pytest.mark.slow
def test_insecure_start_warns_on_stderr_and_in_the_server_log(tmp_path: Path) -> None:
    host = _lan_address()
    if host is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    home = tmp_path / "prefect"
    port = prefect_server.free_port(host)
    env = {k: v for k, v in os.environ.items() if k not in (AUTH, "PREFECT_API_URL")}
    cli = [sys.executable, "-m", "cli.main", "server"]
    opts = ["--home", str(home), "--host", host, "--port", str(port)]
    try:
        started = subprocess.run(
            [*cli, "start", *opts, "--no-ui", "--insecure"],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert started.returncode == 0, started.stderr
        warning = next(line for line in started.stderr.splitlines() if "WARNING" in line)
        assert "insecure" in warning and f"{host}:{port}" in warning and AUTH in warning
        assert warning in (home / prefect_server.LOG_FILE).read_text()
        assert prefect_server.is_healthy(f"http://{host}:{port}/api")
    finally:
        subprocess.run([*cli, "stop", *opts], capture_output=True, timeout=120, env=env)
    assert not prefect_server.is_healthy(f"http://{host}:{port}/api", timeout_s=1)
