"""The progress helper (tasks.progress): counts, clamping, many threads, no run, a failing API.

Inside a flow run against the session Prefect server, the artifact and the run's log lines are
read back from the server."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from prefect import flow

from tasks.progress import Progress, progress_key
from tests.core.test_quiet_failures import flow_run_logs


def _run_id() -> UUID:
    from prefect.context import get_run_context

    run = get_run_context().flow_run  # type: ignore[union-attr]
    assert run is not None
    return run.id


def run_artifact(flow_run_id: UUID | None, key: str) -> Any:
    """The run's one artifact with ``key``, read from the server."""
    assert flow_run_id is not None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[key]),
            )
        )
    assert len(found) == 1, found
    return found[0]


def test_outside_a_run_it_counts_clamps_and_writes_nothing() -> None:
    progress = Progress("homelab", "backups", 4, "guests")
    progress.advance()
    progress.advance(2, note="101 ok")
    assert (progress.done, progress.percent()) == (3, 75.0)
    assert progress.description("101 ok") == "3 of 4 guests (101 ok)"
    progress.advance(10)  # never past the total
    progress.advance(-3)  # never backwards
    assert (progress.done, progress.percent()) == (4, 100.0)
    assert progress.artifact_id is None  # no run: nothing was created
    assert progress.key == progress_key("homelab", "backups") == "labops-homelab-backups-progress"
    assert Progress("homelab", "backups", 0, "guests").percent() == 100.0  # nothing to do: done


@flow(name="progress-threads")
def _counted_from_threads(total: int, threads: int) -> UUID:
    progress = Progress("progresslab", "demo", total, "items")
    per_thread = total // threads

    def work() -> None:
        for _ in range(per_thread):
            progress.advance()

    # as the backups' lanes do: each thread runs in a copy of the flow's context
    import contextvars

    workers = [
        threading.Thread(target=contextvars.copy_context().run, args=(work,))
        for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    progress.advance(5)  # more than planned: stays at the total
    assert progress.done == total
    return _run_id()


def test_in_a_run_the_artifact_reaches_the_total_from_many_threads(prefect_server: Any) -> None:
    run_id = _counted_from_threads(200, 8)
    artifact = run_artifact(run_id, progress_key("progresslab", "demo"))
    assert artifact.type == "progress"
    assert float(artifact.data) == 100.0
    assert artifact.description == "200 of 200 items"
    lines = [
        m
        for m in flow_run_logs(run_id, want="progress: 200/200 items")
        if m.startswith("progress:")
    ]
    # one line per tenth of the total, not one per item; the last one says it is done
    assert len(lines) == 10, lines
    assert lines[-1] == "progress: 200/200 items"
    assert sorted(lines, key=lambda m: int(m.split()[1].split("/")[0])) == lines


@flow(name="progress-api-error")
def _artifact_gone_midway() -> UUID:
    from prefect.client.orchestration import get_client

    progress = Progress("progresslab", "gone", 3, "steps")
    progress.advance(note="first")
    assert progress.artifact_id is not None
    with get_client(sync_client=True) as client:  # the server no longer has it: updates 404
        client.delete_artifact(progress.artifact_id)
    progress.advance(note="second")  # logged, not raised
    progress.advance(note="third")
    assert progress.done == 3
    return _run_id()


def test_an_artifact_api_error_never_fails_the_run(prefect_server: Any) -> None:
    state = _artifact_gone_midway(return_state=True)
    assert state.is_completed(), state
    run_id = state.result()
    logs = flow_run_logs(run_id, want="progress not shown in the UI")
    warned = [m for m in logs if m.startswith("progress not shown in the UI")]
    assert len(warned) == 1, logs  # said once, then no more tries
    assert "progress: 3/3 steps (third)" in logs  # the terminal still shows how far it got
