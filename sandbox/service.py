"""The contract every sandbox service follows, so the runner can start them all the same way.

A service module lives in ``sandbox/services/`` (or a package like ``sandbox/pve``) and exposes
``SERVICE: type[Service]``. The runner (``sandbox/runner.py``) builds a :class:`Context`, starts
every service in one asyncio loop, merges each service's ``config_fragment()`` into the labops
config it writes, and serves the control API (``/_sandbox/...``) that tests use to inject faults.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.journal import Journal
from sandbox.lab import Lab


@dataclass
class Faults:
    """Faults of one system, changed at run time through the control API.

    ``error_rate``: fraction of requests answered 500 (or the protocol's own error);
    ``reset_rate``: fraction whose connection is closed without an answer;
    ``latency_ms``: added to every answer; ``stall_rate``: fraction that never answer
    (held ``stall_s`` seconds, then dropped); ``extra``: service-specific knobs
    (``offline_nodes``, ``failing_vmids``, ``changed_host_keys``, ``unreachable_hosts``, ...).
    """

    error_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)

    def roll(self, rate: float, rng: random.Random) -> bool:
        return rate > 0 and rng.random() < rate


@dataclass
class Context:
    """What a service gets from the runner."""

    lab: Lab
    state_dir: Path  # private files (keys, certs, logs); wiped by `sandbox stop --clean`
    host: str  # bind address, 127.0.0.1
    ca: Any  # sandbox.tls.SandboxCA: issue_server_cert(names, ...) -> (cert_pem, key_pem)
    faults: dict[str, Faults]  # system name -> faults, shared with the control API
    rng: random.Random
    time_scale: float = 1.0  # <1 makes tasks faster (tests), 1.0 realistic
    base_port: int = 28100  # the control API listens here; services get the ports after it
    journal: Journal = field(default_factory=Journal)  # what could change the lab, for tests
    _allocated: list[int] = field(default_factory=list)

    def port(self) -> int:
        """Allocate the next port of the sandbox's range (stable order => stable config)."""
        port = self.base_port + 1 + len(self._allocated)
        self._allocated.append(port)
        return port

    def faults_for(self, system: str) -> Faults:
        return self.faults.setdefault(system, Faults())


class Service(abc.ABC):
    """One simulated product."""

    name: str = "service"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind the ports and start serving (must return once it answers)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close listeners."""

    def config_fragment(self) -> dict[str, Any]:
        """Part of the labops config that points at this service (deep-merged by the runner)."""
        return {}

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Handle ``POST /_sandbox/<name>/<action>`` (state changes for tests); default: none."""
        raise KeyError(action)
