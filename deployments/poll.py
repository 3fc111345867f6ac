"""How often labops' serve process and workers ask the Prefect server for runs to start.

Prefect polls every 10 s by default, so a run created through the REST API or the MQTT bridge
waits about half an interval before anything picks it up (11.9 s median to its first task with
serve, measured by ``bench/bench_trigger.py``; 2.0 s at a 1 s poll). labops' serve process and
worker units poll every second: an idle runner then costs well under 1 % of a core (same bench).
An operator who prefers fewer requests sets the Prefect variable in /etc/labops/labops.env; the
environment wins over this default.

Why not shorter: in Prefect 3.9 ``PREFECT_WORKER_QUERY_SECONDS`` is a float, but
``PREFECT_RUNNER_POLL_FREQUENCY`` is an int (a "0.5" in the environment fails Prefect's settings in
every process), so sub-second polling would need a variable of labops' own for serve. It would
save about a quarter of a second of the median (half the interval), while every runner's queries
to the server double (idle, the bench's server used ~9.5 % of a core with two workers at 0.5 s
against 3-6 % with two to four runners at 1 s); after the flow-run command fix
(deployments/definitions.py) a run of a labops flow reaches its first task in about 2 s median
at 1 s, through the API and the bus alike (bench/bench_trigger.py), so 1 s stays.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from labops.errors import ConfigError

POLL_S = 1
"""labops' poll interval (seconds) for serve and for workers."""
SERVE_SETTING = "PREFECT_RUNNER_POLL_FREQUENCY"  # Prefect's runner: an integer, seconds
WORKER_SETTING = "PREFECT_WORKER_QUERY_SECONDS"


def serve_poll_s(environ: Mapping[str, str] = os.environ) -> int:
    """The serve process's poll: the environment's when set, else labops' default."""
    raw = environ.get(SERVE_SETTING, "").strip()
    if not raw:
        return POLL_S
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{SERVE_SETTING}={raw!r}: expected whole seconds") from None
    if value < 1:
        raise ConfigError(f"{SERVE_SETTING}={raw!r}: must be at least 1")
    return value


def worker_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a worker is started with so that it polls at labops' default (unless set)."""
    return {WORKER_SETTING: environ.get(WORKER_SETTING, "").strip() or str(POLL_S)}
