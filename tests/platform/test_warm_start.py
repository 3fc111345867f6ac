"""Warm flow-run starts: the client a worker starts per run, and the starter that forks it.

Over a real Prefect server: runs deployed from this checkout are started by the client
(``python -m labops.warm_start``), as a process worker starts them, and a run's own flow records
its pid and its parent's, so "forked from the starter" is read from the run, not from a log.
Refusals fall back to a cold ``python -m prefect.engine`` and the run still completes; a client
killed by its worker takes its run down with it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.worker import wait_or_kill
from deployments import warm_starter
from deployments.warm_starter import Starter, changed_file, code_files
from labops import prefect_server
from labops.warm_start import SOCKET_ENV, encode_request, env_mismatch

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "tests/platform/warm_flows.py"
WAIT_S = 240  # a loaded CI machine: nothing here races the clock


# -- the rule, without I/O -----------------------------------------------------------------------


def test_env_rule_serves_same_settings_and_refuses_others() -> None:
    ours = {"PREFECT_API_URL": "http://a/api", "PREFECT_WORKER_QUERY_SECONDS": "1", "HOME": "/x"}
    settings = {"PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_WORKER_QUERY_SECONDS": "1.0"}
    assert env_mismatch({**ours, "PREFECT_WORKER_QUERY_SECONDS": "1.0"}, ours, settings) is None
    same = {**ours, "PREFECT__FLOW_RUN_ID": "abc", "HOME": "/elsewhere", "LABOPS_X": "1"}
    assert env_mismatch(same, ours, settings) is None
    # a worker renders its settings (1.0) where the unit said 1; a default rendered is the same
    rendered = {**ours, "PREFECT_LOGGING_LEVEL": "INFO"}
    assert env_mismatch(rendered, ours, settings) is None
    assert "PREFECT_API_URL" in str(env_mismatch({**ours, "PREFECT_API_URL": "http://b"}, ours, {}))
    assert "PREFECT_LOGGING_LEVEL" in str(
        env_mismatch({**ours, "PREFECT_LOGGING_LEVEL": "DEBUG"}, ours, settings)
    )
    missing = {k: v for k, v in ours.items() if k != "PREFECT_API_URL"}
    assert "PREFECT_API_URL" in str(env_mismatch(missing, ours, settings))
    assert "PYTHONPATH" in str(env_mismatch({**ours, "PYTHONPATH": "/evil"}, ours, settings))


def test_starter_refuses_once_the_code_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this test process has threads of its own (pytest-xdist, Prefect): the starter has none
    monkeypatch.setattr(warm_starter, "other_threads", list)
    source = tmp_path / "mod.py"
    source.write_text("x = 1\n")
    starter = Starter(tmp_path / "s.sock")
    starter.code = {str(source): source.stat().st_mtime_ns}
    a, b = __import__("socket").socketpair()
    with a, b:
        fds = [os.dup(0), os.dup(1), os.dup(2)]
        try:
            request = {"env": dict(os.environ), "cwd": "/", "executable": sys.executable}
            assert starter._refusal(a, request, fds) is None
            os.utime(source, ns=(0, source.stat().st_mtime_ns + 1_000_000))
            assert changed_file(starter.code) == str(source)
            assert "changed since the starter started" in str(starter._refusal(a, request, fds))
            # stays refused (and restarts itself once idle) even if the file is put back
            assert starter.stale == str(source)
            # something started a thread in the starter (a library doing so at import): a fork
            # would copy a process whose other threads may hold locks, so it refuses
            starter.stale, starter.code = None, {}
            monkeypatch.setattr(warm_starter, "other_threads", lambda: ["sneaky"])
            assert "threads running in the starter (sneaky)" in str(
                starter._refusal(a, request, fds)
            )
            monkeypatch.setattr(warm_starter, "other_threads", list)
            other = {**request, "executable": "/usr/bin/python3-other"}
            starter.stale = None
            starter.code = {}
            assert "interpreter" in str(starter._refusal(a, other, fds))
        finally:
            for fd in fds:
                os.close(fd)


def test_an_installed_package_makes_the_starter_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pip install --upgrade prefect`` changes no file of the checkout, but a cold run would
    import the new Prefect: the starter must notice it too."""
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    snapshot = code_files(root=tmp_path / "checkout")
    assert str(site) in snapshot and changed_file(snapshot) is None
    old = site.stat().st_mtime_ns
    (site / "prefect-9.9.9.dist-info").mkdir()
    os.utime(site, ns=(old + 1_000_000, old + 1_000_000))  # a coarse clock must not hide it
    assert changed_file(snapshot) == str(site)


def test_a_cancel_before_the_starter_answers_starts_nothing(tmp_path: Path) -> None:
    """The worker cancels (SIGTERM) while the client waits for the starter's answer, and the
    answer is a refusal: the client must not go on to start the run cold."""
    import socket
    import threading

    path = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    got, signalled = threading.Event(), threading.Event()

    def fake_starter() -> None:
        conn, _ = server.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 65536, 3)
            for fd in fds:
                os.close(fd)
            got.set()
            signalled.wait(WAIT_S)
            conn.sendall(b'{"refused": "a test says no"}\n')

    thread = threading.Thread(target=fake_starter, daemon=True)
    thread.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labops.warm_start"],
        cwd=ROOT,
        env={**os.environ, SOCKET_ENV: str(path), "PREFECT__FLOW_RUN_ID": str(uuid.uuid4())},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert got.wait(WAIT_S), "the client never sent its request"
        # The client installs its handlers right after sending; were it slower than this, the
        # signal would simply kill it, which passes too. A signal sent before the answer is
        # handled before the answer is read.
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        signalled.set()
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        server.close()
    assert proc.returncode == -signal.SIGTERM, err
    assert "cold start" not in err, err


def test_request_round_trip_is_bounded() -> None:
    data = encode_request({"A": "1"}, "/", sys.executable)
    assert int.from_bytes(data[:4], "big") == len(data) - 4


# -- over a real Prefect server --------------------------------------------------------------------


@pytest.fixture
def deployed(prefect_server: prefect_server.ServerInfo, tmp_path: Path) -> dict[str, Any]:
    from bench.common import deploy_from_checkout

    pool = f"labops-warm-{uuid.uuid4().hex[:6]}"
    ids = {
        name: deploy_from_checkout(pool, f"{name}-{pool}", ROOT, f"{ENTRY}:{name}")
        for name in ("whoami", "hold")
    }
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    return {"pool": pool, "ids": ids, "env": env, "tmp": tmp_path}


@pytest.fixture
def starter(deployed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    sock = deployed["tmp"] / "starter.sock"
    log = (deployed["tmp"] / "starter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.warm_starter", "--socket", str(sock)],
        cwd=ROOT,
        env=deployed["env"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not sock.exists():
            assert proc.poll() is None, (deployed["tmp"] / "starter.log").read_text()
            assert time.monotonic() < deadline, "the starter never listened"
            time.sleep(0.1)
        yield {"proc": proc, "socket": sock, "log": deployed["tmp"] / "starter.log"}
    finally:
        proc.terminate()
        wait_or_kill(proc, 60)
        log.close()


def create_run(deployment_id: str, parameters: dict[str, Any]) -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            uuid.UUID(deployment_id), parameters=parameters
        )
    return run.id


def final_state(run_id: uuid.UUID) -> str:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + WAIT_S
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return str(run.state_name)
            assert time.monotonic() < deadline, f"run still {run.state_name}"
            time.sleep(0.5)


def client(env: dict[str, str], run_id: uuid.UUID, **extra: str) -> subprocess.Popen[str]:
    """Start a flow run as a process worker does: its command, with the run's id."""
    return subprocess.Popen(
        [sys.executable, "-m", "labops.warm_start"],
        cwd=ROOT,
        env={**env, "PREFECT__FLOW_RUN_ID": str(run_id), **extra},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def test_a_run_is_forked_from_the_starter(
    deployed: dict[str, Any], starter: dict[str, Any]
) -> None:
    out = deployed["tmp"] / "who"
    run_id = create_run(deployed["ids"]["whoami"], {"out": str(out)})
    proc = client(deployed["env"], run_id, **{SOCKET_ENV: str(starter["socket"])})
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    assert final_state(run_id) == "Completed", err
    pid, ppid = map(int, out.read_text().split())
    assert ppid == starter["proc"].pid, err  # the run's process is the starter's child
    assert f"flow run process {pid} forked from the starter" in err
    assert re.search(rf"flow run process {pid} ended \(0\), CPU \d", err), err
    assert f"forked flow run {run_id} as pid {pid}" in starter["log"].read_text()


def test_refused_or_absent_starter_means_a_cold_start_that_still_runs(
    deployed: dict[str, Any], starter: dict[str, Any]
) -> None:
    cases = {
        "refused": {SOCKET_ENV: str(starter["socket"]), "PREFECT_LOGGING_LEVEL": "DEBUG"},
        "absent": {SOCKET_ENV: str(deployed["tmp"] / "nobody.sock")},
        "unset": {},
    }
    env = {k: v for k, v in deployed["env"].items() if k != SOCKET_ENV}
    for case, extra in cases.items():
        out = deployed["tmp"] / f"who-{case}"
        run_id = create_run(deployed["ids"]["whoami"], {"out": str(out)})
        proc = client(env, run_id, **extra)
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, (case, err)
        assert final_state(run_id) == "Completed", (case, err)
        pid, ppid = map(int, out.read_text().split())
        assert pid == proc.pid and ppid == os.getpid(), (case, err)  # the client became the run
        assert "cold start (" in err, (case, err)
    assert "PREFECT_LOGGING_LEVEL differs" in starter["log"].read_text()


def wait_for(path: Path, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + WAIT_S
    while not path.exists() or not path.read_text():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the flow never started"
        time.sleep(0.2)
    return int(path.read_text())


def gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_killed_client_takes_its_run_down(
    deployed: dict[str, Any], starter: dict[str, Any], how: str
) -> None:
    """What a worker does to cancel a run (SIGTERM) or what a crash does (SIGKILL) reaches the
    forked run: it ends, and the server does not keep it Running."""
    out = deployed["tmp"] / f"hold-{how}"
    run_id = create_run(deployed["ids"]["hold"], {"out": str(out), "seconds": 600})
    proc = client(deployed["env"], run_id, **{SOCKET_ENV: str(starter["socket"])})
    pid = wait_for(out, proc)
    assert pid != proc.pid  # forked, not cold
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    proc.wait(WAIT_S)
    assert gone(pid), f"the forked run {pid} outlived its client"
    if how == "sigterm":  # the client ends as its run did: by the signal the run got
        assert proc.returncode in (-signal.SIGTERM, 1), proc.returncode
    assert final_state(run_id) in ("Crashed", "Cancelled", "Failed")


def test_labops_worker_starts_its_runs_warm(deployed: dict[str, Any]) -> None:
    """``labops worker`` (what the systemd unit runs): a Prefect process worker whose runs the
    deployment's command (labops' flow-run command) hands to the worker's own starter."""
    log_path = deployed["tmp"] / "worker.log"
    env = {**deployed["env"], "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("labops")), "worker", "--pool", deployed["pool"],
             "--limit", "1"],
            cwd=deployed["tmp"], env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            out = deployed["tmp"] / "who-worker"
            run_id = create_run(deployed["ids"]["whoami"], {"out": str(out)})
            state = final_state(run_id)
            text = log_path.read_text(errors="replace")
            assert state == "Completed", text[-3000:]
            pid, ppid = map(int, out.read_text().split())
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")
            assert b"deployments.warm_starter" in parent, (parent, text[-3000:])
            assert f"flow run process {pid} forked from the starter" in text
        finally:
            worker.terminate()
            wait_or_kill(worker, 120)
    assert worker.returncode == 0


def test_a_run_outlives_a_killed_starter_and_its_client_waits_for_it(
    deployed: dict[str, Any], starter: dict[str, Any]
) -> None:
    """The starter dying must not make the worker call a running run crashed: the client stays
    until the run's process is gone, and the run keeps the state it ended in."""
    out, release = deployed["tmp"] / "hold-orphan", deployed["tmp"] / "release"
    params = {"out": str(out), "seconds": WAIT_S, "until": str(release)}
    run_id = create_run(deployed["ids"]["hold"], params)
    proc = client(deployed["env"], run_id, **{SOCKET_ENV: str(starter["socket"])})
    pid = wait_for(out, proc)
    starter["proc"].kill()
    starter["proc"].wait(WAIT_S)
    time.sleep(1)  # an early exit would come at once, on the starter's EOF
    assert proc.poll() is None, "the client ended while its run was still going"
    release.touch()
    proc.wait(WAIT_S)
    assert gone(pid)
    assert proc.returncode == 1  # the exit status died with the starter
    assert final_state(run_id) == "Completed"


def test_an_upgrade_restarts_the_starter_and_runs_start_warm_again(
    deployed: dict[str, Any],
) -> None:
    """``pip install`` into the starter's site-packages: the next run starts cold (never on the
    old code), the starter replaces itself once idle, and the run after that is warm again."""
    site = deployed["tmp"] / "lib" / "site-packages"
    site.mkdir(parents=True)
    env = {**deployed["env"], "PYTHONPATH": str(site)}
    sock = deployed["tmp"] / "up.sock"
    log_path = deployed["tmp"] / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployments.warm_starter", "--socket", str(sock)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            def start(tag: str) -> tuple[int, int, str]:
                deadline = time.monotonic() + WAIT_S
                while not sock.exists():
                    assert proc.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
                who = deployed["tmp"] / f"who-{tag}"
                run_id = create_run(deployed["ids"]["whoami"], {"out": str(who)})
                c = client(env, run_id, **{SOCKET_ENV: str(sock)})
                _, err = c.communicate(timeout=WAIT_S)
                assert c.returncode == 0 and final_state(run_id) == "Completed", err
                pid, ppid = map(int, who.read_text().split())
                return pid, ppid, err

            _, ppid, _ = start("before")
            assert ppid == proc.pid  # warm
            (site / "newpkg-1.0.dist-info").mkdir()
            old = site.stat().st_mtime_ns
            os.utime(site, ns=(old + 1_000_000, old + 1_000_000))
            _, ppid, err = start("during")
            assert "changed since the starter started" in err and ppid != proc.pid, err
            deadline = time.monotonic() + WAIT_S
            while "warm starter restarting" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            _, ppid, err = start("after")
            assert ppid == proc.pid, err  # the same pid, a fresh image: warm again
            assert log_path.read_text().count("warm starter ready") == 2
        finally:
            proc.terminate()
            wait_or_kill(proc, 60)


def test_a_malformed_request_is_dropped_without_leaking_its_descriptors(
    deployed: dict[str, Any], starter: dict[str, Any]
) -> None:
    """Anything of this user's may connect: garbage is dropped, the descriptors it carried are
    closed (a starter that kept them would run out of them), and the next run is served."""
    import socket

    fd_dir = Path(f"/proc/{starter['proc'].pid}/fd")
    before = len(list(fd_dir.iterdir()))
    for _ in range(5):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, open(os.devnull) as null:
            s.connect(str(starter["socket"]))
            socket.send_fds(s, [b"\x00\x00\x00\x05hello"], [null.fileno()] * 3)
            assert s.recv(100) == b""  # dropped: no answer, closed
    assert len(list(fd_dir.iterdir())) == before
    out = deployed["tmp"] / "who-after-garbage"
    run_id = create_run(deployed["ids"]["whoami"], {"out": str(out)})
    proc = client(deployed["env"], run_id, **{SOCKET_ENV: str(starter["socket"])})
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0 and "forked from the starter" in err, err
    assert "dropped a request" in starter["log"].read_text()
