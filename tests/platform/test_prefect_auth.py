"""Prefect's basic auth, as docs/production.md sets it up: a server started by
`labops server start` with PREFECT_SERVER_API_AUTH_STRING refuses anonymous API calls; `labops run`,
`labops deploy` and the MQTT bridge authenticate with PREFECT_API_AUTH_STRING; a wrong or missing
string fails with one clear line; the password shows in no output, log file or flow-run log.

One private server for the module (the session server stays without auth for everyone else).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labops import prefect_server as server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = f"pw-{uuid.uuid4().hex}"
AUTH = f"labops:{PASSWORD}"
# what a leak would look like: the password, or the whole header value Prefect's client sends
SECRETS = (PASSWORD, base64.b64encode(AUTH.encode()).decode())


@dataclass
class AuthServer:
    home: Path
    api_url: str
    config: Path
    tmp: Path
    started: subprocess.CompletedProcess[str]


def _env(**settings: str) -> dict[str, str]:
    """This environment without any PREFECT_* setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **settings)
    return env


def _labops(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"the auth string leaked into {where}"


def _api(srv: AuthServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """An authenticated raw call, through labops's one header helper."""
    return httpx.request(
        method, f"{srv.api_url}{path}", headers=server.api_headers(AUTH), timeout=10, **kwargs
    )


def _housekeeping_runs(srv: AuthServer) -> list[dict[str, Any]]:
    body = {"flows": {"name": {"any_": ["housekeeping"]}}, "sort": "START_TIME_ASC"}
    response = _api(srv, "POST", "/flow_runs/filter", json=body)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    tmp = tmp_path_factory.mktemp("prefect-auth")
    home = tmp / "prefect"
    config = tmp / "labops.yaml"
    config.write_text(yaml.safe_dump({"lab": {"name": "authlab", "state_dir": str(tmp / "st")}}))
    try:
        for _ in range(3):
            # a free port may be taken by another test's server before this one binds it
            port = server.free_port()
            started = _labops(
                "server", "start", "--home", str(home), "--port", str(port), "--no-ui",
                "--config", str(config),
                env=_env(PREFECT_SERVER_API_AUTH_STRING=AUTH),
            )  # fmt: skip
            if "already serves a Prefect server" not in started.stderr:
                break
        assert started.returncode == 0, started.stderr
        yield AuthServer(home, f"http://127.0.0.1:{port}/api", config, tmp, started)
    finally:
        server.stop(home)
    _assert_no_secret("the server log", (home / server.LOG_FILE).read_text(errors="replace"))


def test_server_refuses_anonymous_api_calls(auth_server: AuthServer) -> None:
    srv = auth_server
    out = srv.started.stdout + srv.started.stderr
    _assert_no_secret("`labops server start` output", out)
    assert "auth: basic auth (PREFECT_SERVER_API_AUTH_STRING)" in out
    assert 'export PREFECT_API_AUTH_STRING="$PREFECT_SERVER_API_AUTH_STRING"' in out
    state = (srv.home / server.STATE_FILE).read_text()
    _assert_no_secret("the server's state file", state)
    assert server.ServerInfo.model_validate_json(state).auth is True

    # readiness (and so `labops server start`) needs no credentials: Prefect leaves health open
    assert httpx.get(f"{srv.api_url}/health", timeout=10).status_code == 200
    anonymous = httpx.post(f"{srv.api_url}/flow_runs/filter", json={}, timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    wrong = httpx.post(
        f"{srv.api_url}/flow_runs/filter",
        json={},
        headers=server.api_headers("labops:not-the-password"),
        timeout=10,
    )
    assert wrong.status_code == 401
    assert _api(srv, "POST", "/flow_runs/filter", json={}).status_code == 200

    home = ("--home", str(srv.home))
    ok = _labops("server", "status", *home, env=_env(PREFECT_API_AUTH_STRING=AUTH))
    assert ok.returncode == 0 and "this shell: credentials accepted" in ok.stdout, ok.stdout
    bare = _labops("server", "status", *home, env=_env())
    assert "requires basic auth (401 Unauthorized)" in bare.stdout, bare.stdout
    for name, result in (("status", ok), ("status without auth", bare)):
        _assert_no_secret(f"`labops server {name}` output", result.stdout + result.stderr)


def test_labops_run_authenticates_and_the_run_is_recorded(auth_server: AuthServer) -> None:
    srv = auth_server
    env = _env(PREFECT_API_URL=srv.api_url, PREFECT_API_AUTH_STRING=AUTH)
    done = _labops("run", "housekeeping", "--config", str(srv.config), "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "housekeeping finished: Completed" in done.stderr
    _assert_no_secret("`labops run` output", done.stdout + done.stderr)

    runs = _housekeeping_runs(srv)
    assert len(runs) == 1 and runs[0]["state"]["type"] == "COMPLETED", runs
    # run logs travel in batches from the flow process: give the server a moment to have them
    logs: list[dict[str, Any]] = []
    body = {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = _api(srv, "POST", "/logs/filter", json=body).json()
        if any("Finished in state Completed" in log["message"] for log in logs):
            break
        time.sleep(0.5)
    assert any("Finished in state Completed" in log["message"] for log in logs), logs
    _assert_no_secret("the flow run's logs", "\n".join(log["message"] for log in logs))


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("labops:wrong-password", "refused PREFECT_API_AUTH_STRING (401 Unauthorized): it must "
         "equal the server's PREFECT_SERVER_API_AUTH_STRING"),
        (None, "requires basic auth (401 Unauthorized): set PREFECT_API_AUTH_STRING"),
    ],
)  # fmt: skip
def test_wrong_or_missing_auth_string_fails_clearly(
    auth_server: AuthServer, auth: str | None, message: str
) -> None:
    srv = auth_server
    before = len(_housekeeping_runs(srv))
    env = _env(PREFECT_API_URL=srv.api_url)
    if auth is not None:
        env["PREFECT_API_AUTH_STRING"] = auth
    failed = _labops("run", "housekeeping", "--config", str(srv.config), "--dry-run", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"error: the Prefect server at {srv.api_url} {message}" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "wrong-password" not in failed.stdout + failed.stderr
    assert len(_housekeeping_runs(srv)) == before, "a refused client must start no run"


def test_deploy_and_the_mqtt_bridge_authenticate(auth_server: AuthServer) -> None:
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from blocks.context import LabContext
    from deployments.mqtt_bridge import Bridge, RunRequest

    srv = auth_server
    env = _env(PREFECT_API_URL=srv.api_url, PREFECT_API_AUTH_STRING=AUTH)
    deployed = _labops("deploy", "--config", str(srv.config), "--only", "housekeeping", env=env)
    assert deployed.returncode == 0, deployed.stderr
    assert "zombie-run automation created" in deployed.stderr
    _assert_no_secret("`labops deploy` output", deployed.stdout + deployed.stderr)

    bridge_config = srv.tmp / "bridge.yaml"
    bridge_config.write_text(
        yaml.safe_dump(
            {
                "lab": {"name": "authlab", "state_dir": str(srv.tmp / "bridge-state")},
                "systems": {"mqtt": {"host": "127.0.0.1", "port": 1883}},
            }
        )
    )
    request = RunRequest(flow="housekeeping", parameters={"dry_run": True})
    with temporary_settings({PREFECT_API_URL: srv.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        bridge = Bridge(LabContext.load(str(bridge_config)))  # never connects to MQTT here
        run_id = bridge.start(request)
    run = _api(srv, "GET", f"/flow_runs/{run_id}").json()
    assert run["deployment_id"] and "mqtt" in run["tags"], run

    with (
        temporary_settings({PREFECT_API_URL: srv.api_url, PREFECT_API_AUTH_STRING: "x:y"}),
        pytest.raises(PrefectHTTPStatusError, match="401"),
    ):
        bridge.start(request)
