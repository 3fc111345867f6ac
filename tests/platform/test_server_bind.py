"""`labops server start` serves beyond loopback only with basic auth, or with an explicit and
loud `--insecure`."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
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


def test_the_address_from_the_environment_is_judged_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --host the server binds Prefect's own setting: the rule judges that one."""
    monkeypatch.delenv(AUTH, raising=False)
    monkeypatch.setenv(prefect_server.HOST_ENV, "192.0.2.7")
    home = tmp_path / "prefect"
    for extra in ([], ["--foreground"]):
        assert labops(["server", "start", "--home", str(home), "--no-ui", *extra]) == 2
        assert "--host 192.0.2.7" in capsys.readouterr().err
    assert prefect_server.status(home) is None
    assert prefect_server.bind_address(None, None) == ("192.0.2.7", 4200)
    assert prefect_server.bind_address("127.0.0.1", 4300) == ("127.0.0.1", 4300)


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


# -- what the shipped systemd unit runs ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SERVER_UNIT = "labops-server.service"
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def read_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them (comments skipped)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def unit_commands(env: dict[str, str], tmp_path: Path) -> tuple[list[list[str]], Path]:
    """The unit's ``ExecStartPre=`` and ``ExecStart=`` lines, as systemd would run them here:
    ``$VAR`` expanded from the unit's environment, the install paths mapped onto this checkout's
    venv and ``tmp_path``. Returns (commands in order, working directory)."""
    from tests.platform.test_deployments import unit

    service = unit(SERVER_UNIT)["Service"]
    venv_bin = str(Path(sys.executable).parent)
    commands = []
    for key in ("ExecStartPre", "ExecStart"):
        for line in filter(None, service.get(key, "").splitlines()):
            line = line.lstrip("-").replace("/opt/labops/venv/bin", venv_bin)
            words = shlex.split(line.replace("/var/lib/labops", str(tmp_path)))
            commands.append([VAR.sub(lambda m: env.get(m[1] or m[2], ""), w) for w in words])
    return commands, Path(service["WorkingDirectory"].replace("/var/lib/labops", str(tmp_path)))


def unit_env(tmp_path: Path, port: int, auth: bool) -> dict[str, str]:
    """The unit's environment: ``Environment=`` lines, then the shipped ``deploy/env.example``
    as its ``EnvironmentFile=`` (which wins, as in systemd) with the address set to every
    interface and ``port`` (the auth string left out unless ``auth``); SQLite instead of the
    example's PostgreSQL, no UI; nothing of this shell's Prefect settings."""
    from tests.platform.test_deployments import unit

    service = unit(SERVER_UNIT)["Service"]
    assert service["EnvironmentFile"] == "/etc/labops/labops.env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    for assignment in shlex.split(service.get("Environment", "")):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("/var/lib/labops", str(tmp_path))
    env.update(read_env_file((ROOT / "deploy" / "env.example").read_text()))
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    env.pop("LABOPS_CONFIG", None)
    env.update(
        PREFECT_SERVER_API_HOST="0.0.0.0",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_ENABLED="false",
    )
    if not auth:
        env.pop(AUTH)
    return env


def run_unit(
    env: dict[str, str], tmp_path: Path, port: int, while_up: Callable[[], Any] = lambda: None
) -> tuple[int | None, str, bool]:
    """Run the unit's commands like systemd (each ExecStartPre must succeed, then ExecStart):
    (exit status of the first that stopped, None when ExecStart kept running; its stderr;
    whether a Prefect server answered on ``port`` meanwhile, then ``while_up`` was called).
    Stops what it started."""
    commands, cwd = unit_commands(env, tmp_path)
    (Path(env["PREFECT_HOME"])).mkdir(parents=True, exist_ok=True)
    *pre, main = commands
    for command in pre:
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
        if done.returncode != 0:
            return done.returncode, done.stderr, False
    err = tmp_path / "stderr.log"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            main, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    answered = False
    try:
        deadline = time.monotonic() + 240  # a loaded machine starts a server slowly
        while time.monotonic() < deadline and proc.poll() is None and not answered:
            answered = prefect_server.is_healthy(f"http://127.0.0.1:{port}/api", timeout_s=2)
            time.sleep(0 if answered else 0.5)
        if answered:
            while_up()
    finally:
        status = proc.poll()
        if status is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    return status, err.read_text(errors="replace"), answered


def test_the_server_unit_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    """The shipped unit with the shipped env file, its address set to all interfaces and its
    auth string left out: the unit's command stops (exit 2, one line naming the variable), and
    no server ever answers."""
    port = prefect_server.free_port()
    env = unit_env(tmp_path, port, auth=False)
    status, err, answered = run_unit(env, tmp_path, port)
    assert not answered, "the unit started a server on 0.0.0.0 without an auth string"
    assert status == 2, (status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and AUTH in lines[0] and "0.0.0.0" in lines[0], err


@pytest.mark.slow
def test_the_server_unit_serves_with_auth_on_its_address(tmp_path: Path) -> None:
    """With the auth string (as the shipped env file has it) the same unit serves, on the
    address of its env file, and the API wants the credentials."""
    port = prefect_server.free_port()
    env = unit_env(tmp_path, port, auth=True)
    assert env[AUTH]  # from deploy/env.example
    checked: dict[str, int] = {}

    def probe() -> None:
        url = f"http://127.0.0.1:{port}/api/admin/version"
        checked["anonymous"] = httpx.get(url, timeout=10).status_code
        user, _, password = env[AUTH].partition(":")
        checked["with auth"] = httpx.get(url, auth=(user, password), timeout=10).status_code

    status, err, answered = run_unit(env, tmp_path, port, while_up=probe)
    assert answered and status is None, (status, err)
    assert checked == {"anonymous": 401, "with auth": 200}, checked
