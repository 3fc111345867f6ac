"""Two labs on one Prefect server (the session server): each keeps its own deployments, its
bridge starts and follows only its own runs, and its housekeeping prunes and frees only its own
runs, artifacts and slots."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client

from cli.main import main as labops
from labops.limits import is_lab_limit, limit_name
from labops.scope import lab_slug, lab_tag

# -- pure: whose name is whose -------------------------------------------------------------------


def test_a_limit_is_the_lab_s_whose_name_it_starts_with() -> None:
    assert is_lab_limit(limit_name("node", "pve1", lab="home"), "home")
    assert is_lab_limit(limit_name("maintenance", "slot", lab="Home Lab"), "Home Lab")
    # a longer slug that starts like this lab's, with no known kind after it: not this lab's
    assert not is_lab_limit(limit_name("node", "pve1", lab="home-lab"), "home")
    assert not is_lab_limit("labops-home-something", "home")
    assert not is_lab_limit("labops-test-orphan", "home")
    # "labops-home-node-node-x": the lab home's node "node-x", or the lab home-node's node "x";
    # a lab known to share the server settles it
    ambiguous = limit_name("node", "x", lab="home-node")
    assert is_lab_limit(ambiguous, "home")
    assert not is_lab_limit(ambiguous, "home", other_labs=["home-node"])
    assert is_lab_limit(ambiguous, "home-node", other_labs=["home"])


def test_runs_that_may_hold_a_lab_s_slots() -> None:
    from tasks.prefect_admin import may_hold_lab_slots

    assert may_hold_lab_slots(["labops", "lab:alpha"], "alpha")
    assert not may_hold_lab_slots(["labops", "lab:bravo", "mqtt"], "alpha")
    assert may_hold_lab_slots(["mqtt"], "alpha")  # no lab: it could be this one's
    assert may_hold_lab_slots([], "Alpha Lab") and lab_tag("Alpha Lab").startswith("lab:alpha-")


# -- deployments and the bridge -----------------------------------------------------------------


def lab_config(directory: Path, lab: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "labops.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "lab": {"name": lab, "state_dir": str(directory / "state")},
                # the bridge needs a broker in its config; these tests never connect it
                "systems": {"mqtt": {"host": "127.0.0.1", "port": 1883}},
                "platform": {"schedules": {"backups": {"cron": "10 1 * * *"}}},
            }
        )
    )
    return path


@pytest.fixture
def two_labs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    run = uuid.uuid4().hex[:6]
    labs = {f"alpha-{run}": lab_config(tmp_path / "a", f"alpha-{run}")}
    labs[f"Bravo {run}"] = lab_config(tmp_path / "b", f"Bravo {run}")  # not a slug
    yield labs
    with get_client(sync_client=True) as client:
        for lab in labs:
            for found in client.read_deployments():
                if lab_tag(lab) in found.tags:
                    client.delete_deployment(found.id)


def deployment(flow_name: str, lab: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{flow_name}/{lab_slug(lab)}")


def legacy(flow_name: str, lab: str, config: Path) -> str:
    """A deployment as labops named them before: after the flow, its lab only in the
    description."""
    from deployments.catalog import load_flow

    made = load_flow(flow_name).to_deployment(
        name=flow_name,
        parameters={"config": str(config)},
        description=f"labops {flow_name} on {lab}",
        tags=["labops"],
    )
    return str(made.apply())


def test_two_labs_keep_their_own_deployments_and_bridges_start_their_own(
    prefect_server: Any, two_labs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from blocks.context import LabContext
    from deployments.mqtt_bridge import Bridge
    from labops.triggers import RunRequest

    (alpha, cfg_a), (bravo, cfg_b) = two_labs.items()
    # both deployed before deployments carried the lab: each deploy retires its own only
    legacy("backups", alpha, cfg_a)
    legacy("certificates", bravo, cfg_b)
    only = ["--only", "backups", "certificates", "housekeeping"]

    def old_ones() -> set[str]:
        with get_client(sync_client=True) as client:
            found = client.read_deployments()
        return {d.name for d in found if d.name in {"backups", "certificates"}}

    assert labops(["deploy", "--config", str(cfg_a), *only]) == 0
    assert "deleted backups/backups" in capsys.readouterr().err
    assert old_ones() == {"certificates"}  # bravo's
    first = {f: deployment(f, alpha).id for f in ("backups", "housekeeping")}
    assert labops(["deploy", "--config", str(cfg_b), *only]) == 0
    out, err = capsys.readouterr()
    assert f"backups/{lab_slug(bravo)}" in out and "deleted certificates/certificates" in err
    assert old_ones() == set()

    for lab, config in two_labs.items():
        for flow_name in ("backups", "housekeeping"):
            mine = deployment(flow_name, lab)
            assert mine.parameters["config"] == str(config.resolve()), (lab, flow_name)
            assert lab_tag(lab) in mine.tags and "labops" in mine.tags
        cron = deployment("backups", lab).schedules[0].schedule.cron
        assert cron == "10 1 * * *", lab
    # bravo's deploy replaced nothing of alpha's
    assert {f: deployment(f, alpha).id for f in first} == first

    bridges = {lab: Bridge(LabContext.load(str(config))) for lab, config in two_labs.items()}
    started: dict[str, Any] = {}
    for lab, bridge in bridges.items():
        run_id = bridge.start(RunRequest(flow="housekeeping", parameters={"dry_run": True}))
        with get_client(sync_client=True) as client:
            started[lab] = client.read_flow_run(uuid.UUID(run_id))
            client.delete_flow_run(started[lab].id)  # nobody serves it here
        assert started[lab].deployment_id == deployment("housekeeping", lab).id, lab
        assert started[lab].parameters["config"] == str(two_labs[lab].resolve())
        assert lab_tag(lab) in started[lab].tags and "mqtt" in started[lab].tags

    # state changes: each bridge publishes (and alerts) those of its own lab's runs only
    for lab, bridge in bridges.items():
        published: list[dict[str, Any]] = []
        bridge.publish = recorder(published)  # type: ignore[method-assign]
        for run in started.values():
            bridge.handle_event(state_change(run))
        assert [p["flow_run_id"] for p in published] == [str(started[lab].id)], lab


def recorder(into: list[dict[str, Any]]) -> Callable[..., None]:
    """A stand-in for ``Bridge.publish`` that keeps the payloads."""
    return lambda topic, payload, retain=False: into.append(payload)


def state_change(run: Any) -> Any:
    """A ``prefect.flow-run.Running`` event as the server sends it: the run's tags among its
    related resources."""
    tagged = [{"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{t}"}
              for t in run.tags]  # fmt: skip
    return SimpleNamespace(
        event="prefect.flow-run.Running",
        resource={"prefect.resource.id": f"prefect.flow-run.{run.id}"},
        related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": "housekeeping"},
            *tagged,
        ],
        payload={},
        occurred=datetime.now(UTC),
    )


def test_a_work_pool_serves_one_lab(
    prefect_server: Any, two_labs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker runs whatever its pool holds, with its own host's config and secrets: a second
    lab's deploy to the same pool is refused before anything is deployed."""
    (alpha, cfg_a), (bravo, cfg_b) = two_labs.items()
    pool = f"two-labs-{uuid.uuid4().hex[:6]}"
    only = ["--only", "housekeeping"]
    try:
        assert labops(["deploy", "--config", str(cfg_a), "--pool", pool, *only]) == 0
        assert labops(["deploy", "--config", str(cfg_b), "--pool", pool, *only]) == 2
        err = capsys.readouterr().err
        assert f"work pool {pool!r} holds deployments of another lab ({lab_slug(alpha)})" in err
        with get_client(sync_client=True) as client:
            from prefect.exceptions import ObjectNotFound

            with pytest.raises(ObjectNotFound):
                client.read_deployment_by_name(f"housekeeping/{lab_slug(bravo)}")
        # the lab that owns the pool deploys to it again
        assert labops(["deploy", "--config", str(cfg_a), "--pool", pool, *only]) == 0
    finally:
        with get_client(sync_client=True) as client:
            for found in client.read_deployments():
                if found.work_pool_name == pool:
                    client.delete_deployment(found.id)
            client.delete_work_pool(pool)


# -- housekeeping ----------------------------------------------------------------------------


@flow(name="two-labs-probe")
def probe(key: str) -> str:
    create_markdown_artifact(f"probe {key}", key=key)
    return key


def probe_run(lab: str | None, key: str) -> str:
    """A finished run of ``lab`` (as `labops run` or a deployment tags it; None: no lab) with an
    artifact of its own."""
    with tags(*(["labops", lab_tag(lab)] if lab else [])):
        state = probe(key, return_state=True)
    assert state.is_completed()
    return str(state.state_details.flow_run_id)


def slots(*names: str) -> dict[str, int]:
    with get_client(sync_client=True) as client:
        return {n: client.read_global_concurrency_limit_by_name(n).active_slots for n in names}


def hold(names: list[str]) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from labops.limits import ensure_limit

    for name in names:
        ensure_limit(name, 2)
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(active_slots=1)
            )


def running_run(lab: str) -> uuid.UUID:
    """A flow run of ``lab`` that the server believes is running (nothing executes it)."""
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, parameters={"key": "x"}, tags=[lab_tag(lab)])
        client.set_flow_run_state(run.id, Running(), force=True)
    return run.id


def housekeeping_of(config: Path, dry_run: bool) -> Any:
    """Housekeeping of the config's lab "two days later" (retention 1 day): every finished run
    of the lab made by this test is old enough to prune."""
    import flows.housekeeping
    from tests.core.test_dry_runs import _TwoDaysLater

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flows.housekeeping, "datetime", _TwoDaysLater)
        state = flows.housekeeping.housekeeping(
            config=str(config), dry_run=dry_run, return_state=True
        )
    return state.result()


def test_housekeeping_prunes_and_frees_only_its_own_lab(
    prefect_server: Any, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.states import Crashed

    from tests.platform.test_housekeeping import crash_leftover_runs

    run = uuid.uuid4().hex[:6]
    alpha = f"hk-{run}"
    bravo = f"hk-{run}-node"  # its limits start like alpha's: "labops-hk-...-node-node-pve1"
    config = tmp_path / "alpha.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lab": {"name": alpha, "state_dir": str(tmp_path / "state")},
                "platform": {"retention_days": 1},
            }
        )
    )
    crash_leftover_runs()  # runs killed by earlier tests: of no lab, they would hold every slot
    runs = {
        "alpha": probe_run(alpha, f"probe-{run}-a"),
        "bravo": probe_run(bravo, f"probe-{run}-b"),
        "no lab": probe_run(None, f"probe-{run}-n"),
    }
    mine = [limit_name("node", "pve1", lab=alpha)]
    theirs = [limit_name("node", "pve1", lab=bravo), limit_name("maintenance", "slot", lab=bravo)]
    hold(mine + theirs)
    from deployments.catalog import load_flow

    # bravo is deployed on this server: its slug tells its limits from alpha's
    bravo_deployment = (
        load_flow("housekeeping")
        .to_deployment(name=lab_slug(bravo), tags=["labops", lab_tag(bravo)])
        .apply()
    )
    busy = [running_run(bravo)]  # bravo is busy: that holds nothing of alpha's

    def existing() -> dict[str, int]:
        with get_client(sync_client=True) as client:
            left = {}
            for name, run_id in runs.items():
                try:
                    client.read_flow_run(uuid.UUID(run_id))
                except Exception:
                    continue
                left[name] = len(
                    client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)])
                        )
                    )
                )
        return left

    try:
        before = existing()
        assert before == {"alpha": 1, "bravo": 1, "no lab": 1}, before

        dry = housekeeping_of(config, dry_run=True)
        assert (dry.flow_runs_pruned, dry.artifacts_pruned) == (1, 1), dry
        assert dry.slots_released == [f"{mine[0]} (1 slot(s))"], dry.slots_released
        assert existing() == before, "the dry run deleted runs or artifacts"
        assert slots(*mine, *theirs) == dict.fromkeys(mine + theirs, 1), "the dry run freed"

        done = housekeeping_of(config, dry_run=False)
        assert (done.flow_runs_pruned, done.artifacts_pruned) == (1, 1), done
        assert done.slots_released == dry.slots_released
        assert existing() == {"bravo": 1, "no lab": 1}
        assert slots(*mine, *theirs) == {mine[0]: 0, **dict.fromkeys(theirs, 1)}

        # a running run of alpha itself: its slots stay taken
        hold(mine)
        busy.append(running_run(alpha))
        assert housekeeping_of(config, dry_run=False).slots_released == []
        assert slots(*mine) == {mine[0]: 1}
    finally:
        with get_client(sync_client=True) as client:
            for run_id in busy:
                client.set_flow_run_state(run_id, Crashed(message="test over"), force=True)
            for name in mine + theirs:
                client.delete_global_concurrency_limit_by_name(name)
            client.delete_deployment(bravo_deployment)
