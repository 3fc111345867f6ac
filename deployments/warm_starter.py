"""The warm starter: one process that imports Prefect and every labops flow once, then forks a
child per flow run that a worker hands it (``labops/warm_start.py`` is the client side).

A forked child starts with Prefect, labops and the flows already imported, so a run reaches its
first task about a second sooner and spends about 0.9 s less CPU than a cold ``python -m
prefect.engine`` (``bench/bench_patch.py``, ``bench/bench_trigger.py``). Forking is safe here
because the starter stays single-threaded and never talks to the Prefect server itself: it holds
no threads, event loops, locks or connections a child could inherit half-used.

What it refuses (the client then starts cold, so a refusal costs only speed):

- a peer running as another user (``SO_PEERCRED``): only the worker's own processes are served;
- another interpreter, or Prefect/Python settings that differ from the ones it imported with
  (``labops.warm_start.env_mismatch``);
- a checkout changed on disk since it started: a ``git pull`` must not leave runs on old code. It
  refuses from the first changed file on and, once its children have ended, replaces itself
  with a fresh starter (``os.execv``) that imports the new code.

It never stops a run it started because it is stopping: on SIGTERM it stops accepting and exits
when its children have ended. A child whose client went away (the worker killed it) gets
SIGTERM, then SIGKILL after :data:`KILL_GRACE_S`.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from labops.warm_start import MAX_REQUEST, decode_request, env_mismatch, reply

log = logging.getLogger("labops.warm_starter")

ROOT = Path(__file__).resolve().parents[1]
KILL_GRACE_S = 30.0
REQUEST_TIMEOUT_S = 5.0
# What a flow run's engine imports besides the flow modules (deployments.catalog.FLOWS).
ENGINE_MODULES = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect._internal.metrics",
    "prefect.deployments.steps",
    "prefect.deployments.steps.pull",
    "prefect.utilities.importtools",
    # imported on the way to a deployment's flow (found by diffing a child's sys.modules)
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
)


def preload() -> list[str]:
    """Import Prefect's engine and every labops flow; returns the flow modules imported."""
    from deployments.catalog import FLOWS

    for name in ENGINE_MODULES:
        with contextlib.suppress(ImportError):  # a module moved in another Prefect version
            importlib.import_module(name)
    modules = sorted({target.split(":")[0] for target in FLOWS.values()})
    for name in modules:
        importlib.import_module(name)
    import gc

    from labops.prefect_patches import shared_tls_context

    shared_tls_context()  # the API clients' CA bundle, loaded once for every child
    gc.freeze()  # children share these pages until they write to them
    return modules


def code_files(root: Path = ROOT) -> dict[str, int]:
    """What a forked run would take from the starter's imports, with modification times (ns):
    the checkout's imported source files, and each ``site-packages`` directory (installing or
    upgrading a package, Prefect included, adds or renames entries in it)."""
    out: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.startswith(str(root)) or "site-packages" in path:
            continue
        with contextlib.suppress(OSError):
            out[path] = os.stat(path).st_mtime_ns
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            out[entry] = os.stat(entry).st_mtime_ns
    return out


def changed_file(snapshot: dict[str, int]) -> str | None:
    for path, mtime in snapshot.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return path
        except OSError:
            return path
    return None


def other_threads() -> list[str]:
    """Names of the threads besides the main one (the starter must have none to fork safely)."""
    return [t.name for t in threading.enumerate() if t is not threading.main_thread()]


def settings_env() -> dict[str, str]:
    """The Prefect settings this process imported with, as environment values."""
    from prefect.settings import get_current_settings

    rendered = get_current_settings().to_environment_variables(exclude_unset=False)
    return {k: str(v) for k, v in rendered.items()}


@dataclass
class Run:
    pid: int
    conn: socket.socket
    started: float = field(default_factory=time.monotonic)
    term_sent: float | None = None


class Starter:
    """Accepts requests on ``path`` and forks a child per flow run (single-threaded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.code = code_files()
        self.settings = settings_env()
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.runs: dict[int, Run] = {}  # by pid
        self.stopping = False
        self.stale: str | None = None

    # -- the loop ------------------------------------------------------------------------------

    def listen(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is the worker user's alone
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        listener.listen(64)
        self.listener = listener
        self.sel.register(listener, selectors.EVENT_READ, None)

    def serve(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.listen()
        log.info("warm starter ready on %s (pid %d)", self.path, os.getpid())
        while True:
            for key, _ in self.sel.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._client_event(key.data)
            self._reap()
            self._escalate()
            if self.stopping and not self.runs:
                return
            if self.stale and not self.runs:
                self._reexec()

    def _stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info("warm starter stopping (signal %d): %d run(s) left", signum, len(self.runs))
        self.stopping = True
        self._close_listener()

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- one request ---------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            request, fds = self._read_request(conn)
            reason = self._refusal(conn, request, fds)
            if reason:
                log.info("warm starter refused a run: %s", reason)
                conn.sendall(reply({"refused": reason}))
                conn.close()
                return
            self._fork(conn, request, fds)
        except (OSError, ValueError) as exc:
            log.warning("warm starter dropped a request: %s", exc)
            conn.close()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
        head, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        try:
            return Starter._parse(conn, head), list(fds)
        except BaseException:
            for fd in fds:  # a bad request must not leak the descriptors it carried
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise

    @staticmethod
    def _parse(conn: socket.socket, head: bytes) -> dict[str, Any]:
        while len(head) < 4:
            more = conn.recv(4 - len(head))
            if not more:
                raise ValueError("request cut short")
            head += more
        (size,) = struct.unpack("!I", head[:4])
        if size > MAX_REQUEST:
            raise ValueError(f"request of {size} bytes")
        body = bytearray(head[4:])
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ValueError("request cut short")
            body += more
        return decode_request(bytes(body[:size]))

    def _refusal(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> str | None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            return f"peer runs as uid {uid}, the starter as {os.getuid()}"
        if len(fds) != 3:
            return "the request did not carry stdin, stdout and stderr"
        if os.path.realpath(request["executable"]) != os.path.realpath(sys.executable):
            return f"interpreter {request['executable']} is not the starter's {sys.executable}"
        if self.stopping:
            return "the starter is stopping"
        others = other_threads()
        if others:  # a fork copies only this thread: locks the others hold would stay held
            return f"threads running in the starter ({', '.join(others[:3])}): not safe to fork"
        changed = self.stale or changed_file(self.code)
        if changed:
            self.stale = changed
            return f"{changed} changed since the starter started"
        return env_mismatch(request["env"], os.environ, self.settings)

    def _fork(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(conn, request, fds)  # never returns
        self.runs[pid] = Run(pid=pid, conn=conn)
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, pid)
        flow_run = request["env"].get("PREFECT__FLOW_RUN_ID", "?")
        log.info("warm starter forked flow run %s as pid %d", flow_run, pid)
        try:
            conn.sendall(reply({"started": pid}))
        except OSError:
            self._client_gone(pid)

    def _child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> NoReturn:
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            for run in self.runs.values():
                run.conn.close()
            if self.listener is not None:
                self.listener.close()
            conn.close()
            self.sel.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            fds.clear()
            os.environ.clear()
            os.environ.update(request["env"])
            os.chdir(request["cwd"])
            sys.argv = [sys.argv[0]]  # the engine reads the run id from the environment
            code = run_engine()
        except BaseException:
            traceback.print_exc()
        finally:
            finish_like_interpreter(code)

    # -- children and their clients ------------------------------------------------------------

    def _client_event(self, pid: int) -> None:
        run = self.runs.get(pid)
        if run is None:
            return
        try:
            data = run.conn.recv(1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client (the process the worker watches) is gone: so is the run
            self._client_gone(pid)

    def _client_gone(self, pid: int) -> None:
        run = self.runs[pid]
        if run.term_sent is None:
            log.warning("warm starter: the client of pid %d went away; stopping it", pid)
            run.term_sent = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(run.conn)

    def _escalate(self) -> None:
        now = time.monotonic()
        for run in self.runs.values():
            if run.term_sent is not None and now - run.term_sent > KILL_GRACE_S:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while self.runs:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is None:
                continue
            cpu = usage.ru_utime + usage.ru_stime
            code = os.waitstatus_to_exitcode(status)
            log.info("warm starter: pid %d ended (%d), CPU %.2f s", pid, code, cpu)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(run.conn)
            with contextlib.suppress(OSError):
                run.conn.setblocking(True)
                peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
                message = {"exit": code, "status": status, "cpu_s": round(cpu, 4)}
                run.conn.sendall(reply({**message, "peak_mb": round(peak_mb, 1)}))
            run.conn.close()

    def _reexec(self) -> NoReturn:
        log.info("warm starter restarting: %s changed", self.stale)
        self._close_listener()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run_engine() -> int:
    """Run ``python -m prefect.engine`` in this (forked) process; its exit code."""
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def finish_like_interpreter(code: int) -> NoReturn:
    """End a child as an interpreter exit would (non-daemon threads joined, ``atexit`` run:
    Prefect flushes its logs and events there), without unwinding into the starter's loop."""
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="labops warm starter (see labops worker)")
    parser.add_argument("--socket", required=True, type=Path)
    args = parser.parse_args(argv)
    # Its own handler, not the root logger's: the children inherit the logging setup and must
    # log exactly as a cold flow-run process does.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    modules = preload()
    log.info("warm starter imported Prefect and %d flow module(s)", len(modules))
    Starter(args.socket).serve()
    print(json.dumps({"stopped": True}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
