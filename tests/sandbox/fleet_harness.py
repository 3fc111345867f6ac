"""Runs the sandbox SSH fleet in a background event loop for tests, without the sandbox runner.

The fleet is started exactly as the runner would (a ``Context``, ``SERVICE(ctx).start()``), on a
free loopback port range, and the tests talk to it over real SSH (paramiko, OpenSSH, asyncssh).
"""

from __future__ import annotations

import asyncio
import random
import socket
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from sandbox.fleet import SERVICE
from sandbox.fleet.server import FleetService
from sandbox.lab import generate_lab
from sandbox.service import Context

T = TypeVar("T")


def free_base_port(count: int) -> int:
    """A base port whose next ``count + 1`` ports are all free on 127.0.0.1."""
    # Other sandboxes may be running on this machine: slide past whatever is taken.
    base = random.Random().randrange(20000, 40000)
    while base + count + 2 < 65000:
        for p in range(base, base + count + 2):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    base = p + 1
                    break
        else:
            return base
    raise RuntimeError("no free port range")


class FleetHarness:
    def __init__(self, containers: int = 52, time_scale: float = 0.05, seed: int = 42) -> None:
        self.lab = generate_lab(containers=containers, seed=seed)
        self.tmp = tempfile.TemporaryDirectory(prefix="labops-fleet-")
        self.dir = Path(self.tmp.name)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        hosts = len(self.lab.nodes) + sum(1 for g in self.lab.guests if g.type == "lxc")
        self.ctx = Context(
            lab=self.lab,
            state_dir=self.dir,
            host="127.0.0.1",
            ca=None,
            faults={},
            rng=random.Random(seed),
            time_scale=time_scale,
            base_port=free_base_port(hosts),
        )
        self.svc: FleetService = SERVICE(self.ctx)
        self.call(self.svc.start())
        frag = self.svc.config_fragment()
        self.key_file = frag["systems"]["ssh"]["key_file"]
        self.known_hosts = frag["systems"]["ssh"]["known_hosts"]

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def control(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        async def run() -> dict[str, Any]:  # on the loop thread, as the runner calls it
            return self.svc.control(action, payload or {})

        return self.call(run())

    def port(self, host: str) -> int:
        port = self.svc.specs[host].port
        assert port is not None, f"{host} has no sshd"
        return port

    def hosts(self, **match: Any) -> list[str]:
        """Host names whose state matches, e.g. hosts(os="alpine320", sshd=True)."""
        return [
            n
            for n, st in self.lab.hosts.items()
            if all(getattr(st, k) == v for k, v in match.items())
        ]

    def client(self, host: str, timeout: float = 5) -> paramiko.SSHClient:
        c = paramiko.SSHClient()
        c.load_host_keys(self.known_hosts)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect(
            "127.0.0.1",
            port=self.port(host),
            username="root",
            key_filename=self.key_file,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return c

    def run(self, host: str, command: str, timeout: float = 20) -> tuple[int, str, str]:
        c = self.client(host)
        try:
            _, out, err = c.exec_command(command, timeout=timeout)
            stdout, stderr = out.read().decode(), err.read().decode()
            return out.channel.recv_exit_status(), stdout, stderr
        finally:
            c.close()

    def close(self) -> None:
        try:
            self.call(self.svc.stop(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.tmp.cleanup()
