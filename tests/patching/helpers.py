"""Helpers shared by the patch flow tests: a config derived from the sandbox's, fleet control."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


def derived_config(
    sandbox: Any, directory: Path, systems: dict[str, Any] | None = None, **patching: Any
) -> str:
    """The sandbox's config with a ``patching`` section, a private state dir and, optionally,
    more systems (e.g. VictoriaMetrics)."""
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    # the sandbox's nightly backup jobs (02:00, 02:30) would refuse runs near them: these tests
    # list overlaps only, unless they ask (tests/patching/test_apply_overlap.py)
    cfg["patching"] = {"overlaps": "list", **patching}
    cfg["systems"].update(systems or {})
    cfg["lab"]["state_dir"] = str(directory / "state")
    path = directory / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def pending_of(sandbox: Any, host: str) -> list[str]:
    """The names of the updates pending on a sandbox host."""
    return sorted(sandbox.control("fleet", "state", host=host)["pending"])


def guest(sandbox: Any, name: str) -> tuple[str, int]:
    """The node and vmid of the sandbox guest named ``name``."""
    for g in sandbox.pve().cluster.resources.get(type="vm"):
        if g.get("name") == name:
            return g["node"], int(g["vmid"])
    raise KeyError(name)


def report_of(state: Any) -> Any:
    """The PatchReport a flow returned (directly, or carried by its Failed state)."""
    from labops.patching.report import PatchReport

    if isinstance(state, PatchReport):
        return state
    value = state.result(raise_on_failure=False) if hasattr(state, "result") else state
    if isinstance(value, PatchReport):
        return value
    data = getattr(state, "data", None)
    if isinstance(data, PatchReport):
        return data
    raise AssertionError(f"no PatchReport in {state!r}")


def run_paused_flow(
    flow_call: Any,
    config: str,
    answer: dict[str, Any] | None,
    timeout: float = 60.0,
    on_pause: Any = None,
) -> tuple[Any, Any]:
    """Run ``flow_call()`` in a thread; when its run pauses for approval, resume it through the
    Prefect API with ``answer`` as the UI's form would (``None``: expect no pause).
    ``on_pause(flow_run)`` runs while the run is paused, before the answer is sent.

    Returns (the flow's returned state, the paused flow run or None).
    """
    import contextvars
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["state"] = flow_call()
        except BaseException as exc:  # surfaced below
            out["error"] = exc

    # the settings context (PREFECT_API_URL of the session server) lives in contextvars
    context = contextvars.copy_context()
    thread = threading.Thread(target=lambda: context.run(target), daemon=True)
    thread.start()
    paused = None
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while answer is not None and time.monotonic() < deadline and thread.is_alive():
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            mine = [r for r in runs if r.parameters.get("config") == config]
            if mine:
                paused = mine[0]
                if on_pause is not None:
                    on_pause(paused)
                resume_flow_run(paused.id, run_input=answer)
                break
            time.sleep(0.3)
    thread.join(timeout)
    if "error" in out:
        raise out["error"]
    assert "state" in out, "flow did not finish"
    return out["state"], paused


def prime(sandbox: Any, *hosts: str) -> None:
    """Give every host one pending update (so each is in the plan)."""
    for h in hosts:
        sandbox.control("fleet", "set_pending", host=h, packages=[f"gate-{h}"])


def apply_approved(sandbox: Any, tmp_path: Path, hosts: list[str], **patching: Any) -> Any:
    """Run patch apply on ``hosts`` in an open window, every host in one batch, and approve
    it; its report."""
    from flows.patching import patch_apply

    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=[{"start": "00:00", "end": "23:59"}],
        refresh=False,
        canary_count=0,
        max_failures=5,
        max_fail_ratio=1.0,
        batch_size=len(hosts),
        per_node_parallel=len(hosts),
        delete_snapshots_after_h=0,
        **patching,
    )
    state, paused = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True),
        cfg,
        {"approve": True},
        timeout=180,
    )
    assert paused is not None
    return report_of(state)


@pytest.fixture
def fleet_as_seeded(sandbox: Any) -> Iterator[None]:
    """Before and after the test, every host of the session sandbox as seeded (pending updates,
    kernels), for the tests that read the seeded lab: a test of another file that ran earlier in
    the same process may have patched the host this one patches."""
    sandbox.control("fleet", "reset", keep_faults=True)
    yield
    sandbox.control("fleet", "reset", keep_faults=True)
