"""Two fixes to Prefect 3.9 that every labops flow run benefits from.

**The heartbeat.** Prefect's heartbeat thread (one per flow run, needed by the zombie-run
automation that marks a dead worker's runs Crashed) sleeps in whole seconds and only looks at its
stop flag between them; a synchronous flow run joins it on exit, so every flow run pays a random
0-1 s (0.5 s on average) after its last task: a third of a small flow run's wall time. The
replacement sends the same heartbeat events at the same interval but waits on the stop event
itself, so the join returns at once.

**The API clients' TLS context.** Every Prefect API client (``get_client()``; a flow run makes
about ten, on several threads) builds a new ``ssl.SSLContext`` and loads the whole CA file into it
(``certifi``'s ~150 certificates, or ``PREFECT_API_SSL_CERT_FILE``): measured 10 per flow run and
0.18 s of CPU, a third of what a warm-started run spends besides its own work. The clients now
share one context per (skip-verify setting, CA file, the file's modification time), built exactly
as Prefect builds it: the same verification, a CA file replaced on disk is read again.

Each is installed only when Prefect still has the shape it was written against (prefect pinned in
pyproject.toml); otherwise Prefect's own version stays.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import ssl
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


_TLS_ORIGINAL = "_labops_original_init"
_tls_lock = threading.Lock()
_tls_contexts: dict[tuple[bool, str, int], ssl.SSLContext] = {}


def shared_tls_context() -> ssl.SSLContext:
    """The context Prefect would build for an API client under the current settings, built
    once per (skip-verify, CA file, its modification time)."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    insecure = bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value())
    cert_file = "" if insecure else (PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
    try:
        mtime = os.stat(cert_file).st_mtime_ns if cert_file else 0
    except OSError:
        mtime = -1  # let ssl raise its own error below, as Prefect's code would
    key = (insecure, cert_file, mtime)
    with _tls_lock:
        ctx = _tls_contexts.get(key)
        if ctx is None:
            if insecure:  # as Prefect does: no hostname check, no verification
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=cert_file)
            if len(_tls_contexts) > 8:  # settings or files changed many times: start over
                _tls_contexts.clear()
            _tls_contexts[key] = ctx
        return ctx


def _share_tls(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        settings = dict(kwargs.get("httpx_settings") or {})
        if "verify" not in settings:  # an explicit choice stays the caller's
            settings["verify"] = shared_tls_context()
            kwargs["httpx_settings"] = settings
        init(self, *args, **kwargs)

    setattr(__init__, _TLS_ORIGINAL, init)
    return __init__


def _apply_shared_tls() -> bool:
    from prefect.client import orchestration

    classes: list[Any] = [
        getattr(orchestration, n, None) for n in ("PrefectClient", "SyncPrefectClient")
    ]
    for cls in classes:
        if cls is None or "httpx_settings" not in inspect.signature(cls.__init__).parameters:
            return False
    for cls in classes:
        if not hasattr(cls.__init__, _TLS_ORIGINAL):
            cls.__init__ = _share_tls(cls.__init__)
    return True


def apply() -> bool:
    """Install both fixes (idempotent). False when this Prefect looks different for either."""
    return _apply_heartbeat() & _apply_shared_tls()


def _apply_heartbeat() -> bool:
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
