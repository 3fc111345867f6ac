"""labops' heartbeat fix (labops.prefect_patches) over a real Prefect server: installed by
importing the flows, heartbeats still reach the server (the zombie-run automation lives on them),
and the heartbeat thread is gone the moment the flow run returns instead of up to a second later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

import flows  # noqa: F401  (installs the fix, as every labops flow module does)
from labops import prefect_server as server


def heartbeat_events(api_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    resp = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    resp.raise_for_status()
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


def test_the_fix_is_installed_for_this_prefect() -> None:
    import prefect.flow_engine as engine

    from labops.prefect_patches import _send_heartbeats, apply

    # False here means a Prefect upgrade changed the engine: re-check the fix against it
    assert apply() is True
    assert engine._send_heartbeats is _send_heartbeats


def test_heartbeats_reach_the_server_and_stop_with_the_run(
    prefect_server: server.ServerInfo,
) -> None:
    from prefect import flow
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    during: list[str] = []

    @flow(name="heartbeat-fix")
    def short() -> str:
        during.extend(t.name for t in threading.enumerate())
        return str(flow_run.id)

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
        run_id = short()
    assert "flow-run-heartbeat" in during, "the run's heartbeat thread is not labops' one"
    alive_after = [t.name for t in threading.enumerate() if t.name == "flow-run-heartbeat"]
    assert alive_after == [], "the heartbeat thread outlived its flow run"

    deadline = time.monotonic() + 20
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not events:
        events = heartbeat_events(prefect_server.api_url, run_id)
        time.sleep(0.5)
    assert len(events) == 1, events  # one at the start; the run ended long before the next


def tls_of(client: Any) -> Any:
    """The TLS context an API client's connections use (httpx transport -> httpcore pool)."""
    return client._client._transport._pool._ssl_context


def test_api_clients_share_one_tls_context_built_as_prefect_builds_it(
    prefect_server: server.ServerInfo, tmp_path: Any, monkeypatch: Any
) -> None:
    """Prefect loads its whole CA file for every API client (10 per flow run, 0.18 s of CPU):
    with the fix, clients share one context, still verifying against the same CA file, and a
    changed file or setting gives a new one. Then a real request still goes through."""
    import asyncio
    import os
    import shutil
    import ssl

    import certifi
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
        temporary_settings,
    )

    from labops import prefect_patches

    built: list[str | None] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs.get("cafile"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(prefect_patches, "_tls_contexts", {})
    ca = tmp_path / "ca.pem"
    shutil.copy(certifi.where(), ca)

    async def async_clients() -> list[Any]:
        out = []
        for _ in range(3):
            async with get_client() as client:
                out.append(tls_of(client))
        return out

    with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(ca)}):
        contexts = []
        for _ in range(3):
            with get_client(sync_client=True) as client:
                assert client.api_healthcheck() is None  # a real request through the context
                contexts.append(tls_of(client))
        contexts += asyncio.run(async_clients())
        assert built == [str(ca)]  # one context for six clients, from the configured CA file
        assert len({id(c) for c in contexts}) == 1
        assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
        os.utime(ca, ns=(1, 1))  # a CA file replaced on disk is read again
        with get_client(sync_client=True) as client:
            assert tls_of(client) is not contexts[0]
        assert built == [str(ca), str(ca)]
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        with get_client(sync_client=True) as client:
            insecure = tls_of(client)
        assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    explicit = original()
    with get_client(sync_client=True, httpx_settings={"verify": explicit}) as client:
        assert tls_of(client) is explicit  # the caller's stays
