"""A fix to Prefect 3.9's flow engine that every labops flow run benefits from.

Prefect's heartbeat thread (one per flow run, needed by the zombie-run automation that marks a
dead worker's runs Crashed) sleeps in whole seconds and only looks at its stop flag between
them; a synchronous flow run joins it on exit, so every flow run pays a random 0-1 s (0.5 s on
average) after its last task: a third of a small flow run's wall time. The replacement sends the
same heartbeat events at the same interval but waits on the stop event itself, so the join
returns at once. It is installed only when the engine still has the shape it was written
against (prefect pinned in pyproject.toml); otherwise Prefect's own version stays.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ORIGINAL = "_labops_original_send_heartbeats"
_ENGINE_HOOKS = ("_build_heartbeat_event_template", "_emit_flow_run_heartbeat")


@contextmanager
def _send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL

    every = engine.heartbeat_seconds
    if every is None:
        yield
        return
    every = max(every, MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            state = engine.flow_run.state if engine.flow_run else None
            if state is not None and state.is_final():
                return
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:  # a missed heartbeat must never fail the flow run
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            stop.wait(every)

    # the thread must see this run's settings (API URL) like the flow does
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(beat,), daemon=True, name="flow-run-heartbeat"
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if join_on_exit:
            thread.join(timeout=2)


def apply() -> bool:
    """Install the fix (idempotent). False when this Prefect's engine looks different."""
    import prefect.flow_engine as engine_module

    if hasattr(engine_module, _ORIGINAL):
        return True
    original = getattr(engine_module, "_send_heartbeats", None)
    engine_class = getattr(engine_module, "FlowRunEngine", None)
    if original is None or engine_class is None:
        return False
    if not all(hasattr(engine_class, hook) for hook in _ENGINE_HOOKS):
        return False
    setattr(engine_module, _ORIGINAL, original)
    engine_module._send_heartbeats = _send_heartbeats  # type: ignore[assignment]
    return True
