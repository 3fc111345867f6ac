"""Warm flow-run starts: the command a process worker starts each labops flow run with.

A cold flow-run process spends about 0.7 s of CPU importing Prefect and 0.2 s more importing
labops before it runs anything (``bench/bench_patch.py``), on every run, and the first task
waits for it. ``labops worker`` keeps one *starter* process beside the Prefect worker that has
imported all of that once (``deployments/warm_starter.py``); this module is the small client the
worker starts instead of ``python -m prefect.engine``. It imports nothing but the standard library
(about 20 ms), hands the run's environment, working directory and standard streams to the starter
over a Unix socket, and the starter forks a child that runs Prefect's engine for the run. The
client stays the process the worker watches: it forwards SIGTERM/SIGINT/SIGHUP to the child and
exits as the child did, so cancelling and crash detection work as with a cold process.

The warm path never decides whether a run happens, only how fast it starts. Whenever the starter
is not configured (``LABOPS_WARM_SOCKET`` unset), cannot be reached, or refuses (another
interpreter, Prefect settings that differ from the ones it imported with, code changed on disk
since it started), the client replaces itself with ``python -m prefect.engine``: the cold start,
exactly as before. Once the request is sent it never falls back, so a run is never started twice.

This module is the core of the protocol (stdlib only, no Prefect): the request, the replies and
the rule for which environments a starter may serve (:func:`env_mismatch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

SOCKET_ENV = "LABOPS_WARM_SOCKET"
"""Where ``labops worker`` tells its flow-run processes the starter listens."""
PROTOCOL = 1
MAX_REQUEST = 1 << 20  # an environment larger than 1 MiB is not a worker's
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CONNECT_TIMEOUT_S = 5.0
# Settings read when Prefect is imported (the starter's copy is the one its children run with),
# and the interpreter's own switches.
CAPTURED_PREFIXES = ("PREFECT_", "PYTHON")
RUNTIME_PREFIX = "PREFECT__"  # per run: flow run id, worker name, control channel


def env_mismatch(
    request: Mapping[str, str],
    ours: Mapping[str, str],
    our_settings: Mapping[str, str],
) -> str | None:
    """Why a starter with environment ``ours`` may not run a flow run asking for ``request``.

    A forked child keeps what the starter imported, so every variable read at import time must
    mean the same in both: Prefect's settings (``PREFECT_*``) and the interpreter's
    (``PYTHON*``). A request's value matches when it equals the starter's environment or the
    starter's own rendering of that setting (a worker passes its settings rendered: ``1.0``
    where a unit file said ``1``, ``False`` for ``false``). Per-run
    variables (``PREFECT__*``) and everything else may differ: the child runs with the request's
    environment. None when the starter may serve it.
    """
    keys = {k for k in (*request, *ours) if k.startswith(CAPTURED_PREFIXES)}
    for key in sorted(keys):
        if key.startswith(RUNTIME_PREFIX):
            continue
        theirs, mine = request.get(key), ours.get(key)
        if theirs == mine:
            continue
        if theirs is not None and our_settings.get(key) == theirs:
            continue
        return f"{key} differs from the starter's"
    return None


def encode_request(env: Mapping[str, str], cwd: str, executable: str) -> bytes:
    body = json.dumps(
        {"v": PROTOCOL, "env": dict(env), "cwd": cwd, "executable": executable}
    ).encode()
    return struct.pack("!I", len(body)) + body


def decode_request(body: bytes) -> dict[str, Any]:
    """The request's fields, checked (a starter answers only its own kind of client)."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("v") != PROTOCOL:
        raise ValueError("not a labops warm-start request of this version")
    env, cwd, exe = data.get("env"), data.get("cwd"), data.get("executable")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("env must map strings to strings")
    if not isinstance(cwd, str) or not isinstance(exe, str):
        raise ValueError("cwd and executable must be strings")
    return {"env": env, "cwd": cwd, "executable": exe}


def reply(message: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(message)).encode() + b"\n"


def _note(text: str) -> None:
    # The worker keeps the run's stderr in its log: say which start the run got.
    print(f"labops warm start: {text}", file=sys.stderr, flush=True)


def cold_start(reason: str) -> NoReturn:
    """Become ``python -m prefect.engine`` (what the worker would have started)."""
    _note(f"cold start ({reason})")
    argv = [sys.executable, "-m", "prefect.engine", *sys.argv[1:]]
    os.execv(sys.executable, argv)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pid reused by another user's process: ours is gone
        return False
    return True


def _exit_like(status: int) -> NoReturn:
    """Exit as the child did: the same code, or death by the same signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def main() -> NoReturn:
    path = os.environ.get(SOCKET_ENV, "")
    if not path:
        cold_start(f"{SOCKET_ENV} not set")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(path)
        data = encode_request(os.environ, os.getcwd(), sys.executable)
        sent = socket.send_fds(sock, [data[:65536]], [0, 1, 2])
        sock.sendall(data[sent:])
    except OSError as exc:
        sock.close()
        cold_start(f"starter at {path} not reachable: {exc}")
    # The request is out: from here on, the starter may have forked the run, so no fallback.
    sock.settimeout(None)
    lines = sock.makefile("rb")
    child = 0
    pending: list[int] = []  # a signal that came before the child's pid: sent once it comes

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    def forward(signum: int, _frame: object) -> None:
        if child:
            send(signum)
        else:
            pending.append(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            line = lines.readline()
        except InterruptedError:  # pragma: no cover (PEP 475 retries reads)
            continue
        if not line:
            # The run may still be going: reporting an end now would let the worker call it
            # crashed while it runs. Stay until it is gone (its exit status died with the
            # starter, so it is reported as 1; a run that finished keeps its final state).
            _note("the starter went away before the flow run process ended")
            while child and _alive(child):
                time.sleep(0.5)
            os._exit(1)
        message = json.loads(line)
        if "refused" in message:
            sock.close()
            if pending:  # told to stop before anything ran: nothing to start, cold or warm
                _note(f"stopped by signal {pending[0]} before the run started")
                signal.signal(pending[0], signal.SIG_DFL)
                os.kill(os.getpid(), pending[0])
            cold_start(f"starter refused: {message['refused']}")
        if "started" in message:
            child = int(message["started"])
            _note(f"flow run process {child} forked from the starter")
            for signum in pending:
                send(signum)
        if "exit" in message:
            _note(
                f"flow run process {child} ended ({message['exit']}), "
                f"CPU {float(message.get('cpu_s', 0.0)):.2f} s, "
                f"peak RSS {float(message.get('peak_mb', 0.0)):.0f} MB"
            )
            _exit_like(int(message["status"]))


if __name__ == "__main__":
    main()
