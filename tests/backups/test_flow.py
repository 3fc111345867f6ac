"""The backups flow on a sandbox lab of its own, reporting to the session Prefect server.

Each test changes its own copy of the seeded lab's backups, so the module starts a private
sandbox (the session one stays as seeded for the other flows' tests). Flow runs are few: every
scenario checks several things from one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.config import load_config
from tasks.progress import progress_key
from tests.core.test_progress import run_artifact
from tests.fixtures.sandbox import REPO, SandboxHandle, start_sandbox


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start_sandbox(tmp_path_factory.mktemp("backups-sandbox"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def lab_clean(lab: SandboxHandle) -> Iterator[SandboxHandle]:
    try:
        yield lab
    finally:
        lab.reset_faults()


def config(
    sandbox: SandboxHandle, directory: Path, *, offsite_pbs: bool = False, **backups: Any
) -> str:
    """The sandbox's config with a fast backups policy (every guest due: RPO 10 minutes);
    the off-site PBS (systems.pbs_offsite) only with ``offsite_pbs``: without it, off-site
    copies are read through the home PBS's remote, as before that system existed."""
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    if not offsite_pbs:
        cfg["systems"].pop("pbs_offsite", None)
    policy: dict[str, Any] = {
        "tiers": {"short": {"rpo": "10m"}, "7d": {"rpo": "7d"}},
        "default_tier": "short",
        "tier_tags": {},
        "poll_interval": 0.1,
        "lock_retry": 0.2,
        "lock_wait": 20,
        "task_timeout": 60,
        "per_storage_limit": 8,
        # The sandbox's injected resets drop a request before it is acted on: a short look at
        # the task list after one is enough here (the lost-answer test sets its own wait).
        "lost_answer_wait": 3,
        "limits_scope": f"t{os.getpid()}-{directory.name[-12:].lower().replace('_', '-')}",
        "restore_drill": {"start_wait": 5, "timeout": 60},
    }
    policy.update(backups)
    cfg["backups"] = policy
    fast = {"timeout_s": 2, "attempts": 8, "backoff_s": 0.02, "backoff_max_s": 0.3}
    cfg["systems"]["proxmox"]["retry"] = fast
    cfg["systems"]["pbs"]["retry"] = fast
    cfg["lab"]["state_dir"] = str(directory / "state")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def report_of(state: Any) -> Any:
    from labops.backups.report import BackupReport, RestoreDrillReport

    kinds = (BackupReport, RestoreDrillReport)
    if isinstance(state, kinds):
        return state
    value = state.result(raise_on_failure=False)
    assert isinstance(value, kinds), value
    return value


Snapshot = tuple[str, str, int]


def snapshots(sandbox: SandboxHandle) -> set[Snapshot]:
    """Every guest backup PBS holds, as (type, id, time)."""
    snaps = sandbox.pbs().admin.datastore("store1").snapshots.get()
    return {
        (s["backup-type"], s["backup-id"], int(s["backup-time"]))
        for s in snaps
        if s["backup-type"] in ("ct", "vm")
    }


def new_snapshots(sandbox: SandboxHandle, before: set[Snapshot]) -> Counter[int]:
    """Backups PBS holds that were not in ``before``, per guest.

    By identity, not by time: backup times are whole seconds, and the module's previous test
    backs the same guests up moments before (a window "since t0 - 1 s" counted the last of
    them twice: the ``{209: 2}`` failure)."""
    return Counter(int(bid) for _, bid, _ in snapshots(sandbox) - before)


def vzdump_posts(sandbox: SandboxHandle, mark: int) -> Counter[int]:
    """vzdump requests the lab received after journal entry ``mark``, per guest.

    The journal, not the nodes' task lists: PVE's ``since`` takes whole seconds, so a task list
    read "since the re-run began" also holds the first run's last vzdumps of that second."""
    return Counter(
        int(e["args"]["vmid"])
        for e in sandbox.journal(mark, system="pve")
        if e["method"] == "POST" and e["path"].endswith("/vzdump")
    )


def doubled_journal(sandbox: SandboxHandle, mark: int) -> list[str]:
    """The vzdump requests of every guest sent more than once since ``mark`` (failure text)."""
    posts = vzdump_posts(sandbox, mark)
    return [
        f"{e['seq']} {e['t']:.3f} {e['path']} {e['args'].get('vmid')}"
        for e in sandbox.journal(mark, system="pve")
        if e["path"].endswith("/vzdump") and posts[int(e["args"]["vmid"])] > 1
    ]


def settle(sandbox: SandboxHandle, mark: int, after_s: float, timeout: float = 120.0) -> None:
    """Wait until ``after_s`` has passed since the last vzdump request after ``mark`` and no
    vzdump task runs any more: a request the lab acts on late has then been acted on."""
    deadline = time.monotonic() + timeout
    while True:
        last = max(
            (e["t"] for e in sandbox.journal(mark, system="pve") if e["path"].endswith("/vzdump")),
            default=0.0,
        )
        running = sandbox.state()["services"]["pve"]["running_tasks"]
        if time.time() > last + after_s and not any(":vzdump:" in u for u in running):
            return
        assert time.monotonic() < deadline, running
        time.sleep(0.3)


@pytest.mark.parametrize(
    "fault",
    [
        {"act_late": {"/vzdump": 4}},
        {"drop_answer": ["/vzdump"]},
        {"error_after": {"/vzdump": "got timeout"}},
    ],
    ids=["acted-on-after-the-client-gave-up", "answer-dropped", "answered-500-after-starting"],
)
def test_a_start_whose_answer_is_lost_is_adopted_never_sent_twice(
    lab_clean: SandboxHandle, fault: dict[str, Any]
) -> None:
    """The node takes the vzdump request but its answer never arrives: it is dropped, or the
    node acts on the request only after the client's timeout (a busy pvedaemon). The backup
    must follow the task that request began, whenever it appears, and never send another."""
    from labops.backups.models import BackupGuest
    from labops.backups.vzdump_job import VzdumpSettings, run_backup
    from labops.config import load_config
    from labops.config.secrets import resolve_secret
    from labops.proxmox import PveClient

    system = load_config(str(lab_clean.config_path)).systems.proxmox
    assert system is not None
    quick = system.retry.model_copy(update={"timeout_s": 1.0, "attempts": 3, "backoff_s": 0.05})
    pve = PveClient(system.model_copy(update={"retry": quick}), resolve_secret(system.token_secret))
    guest = next(BackupGuest.from_pve(g) for g in pve.guests() if g.vmid == 101)
    settings = VzdumpSettings(
        storage="pbs", poll_s=0.1, task_timeout_s=60, lost_answer_wait_s=30, listed_at=time.time()
    )
    before = snapshots(lab_clean)
    mark = lab_clean.journal_mark()
    lab_clean.set_faults("pve", extra=fault)
    logs: list[str] = []
    outcome = run_backup(pve, guest, settings, log=logs.append)
    settle(lab_clean, mark, after_s=6)

    assert vzdump_posts(lab_clean, mark) == Counter({101: 1}), (
        logs,
        doubled_journal(lab_clean, mark),
    )
    assert outcome.status == "ok", (outcome, logs)
    assert outcome.attempts == 1 and outcome.upid
    assert any("adopting the vzdump it started" in line for line in logs), logs
    assert new_snapshots(lab_clean, before) == Counter({101: 1})


def test_dry_run_then_run_then_rerun_backs_up_once(
    lab_clean: SandboxHandle, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups
    from labops.backups.report import GuestStatus

    cfg = config(lab_clean, tmp_path)
    before = snapshots(lab_clean)
    mark = lab_clean.journal_mark()

    dry = report_of(backups(config=cfg, dry_run=True, return_state=True))
    due = {r.vmid for r in dry.rows(GuestStatus.WOULD_BACK_UP)}
    assert len(due) >= 40, dry.headline()
    assert not vzdump_posts(lab_clean, mark) and not new_snapshots(lab_clean, before)
    assert "would be backed up (dry run)" in dry.markdown()
    assert {r.vmid for r in dry.rows(GuestStatus.EXCLUDED)} >= {116}

    state = backups(config=cfg, return_state=True)
    first = report_of(state)
    assert state.is_completed(), first.failure_summary()
    backed = {r.vmid for r in first.rows(GuestStatus.BACKED_UP)}
    # Fresh before the test (a seeded nightly backup from 02:00, an earlier test's backup) can
    # turn due between two runs when it passes the 10-minute RPO's refresh point: rightly, once.
    fresh_before = {r.vmid for r in dry.rows(GuestStatus.FRESH)}
    assert due <= backed and backed - due <= fresh_before, (backed, due)
    assert new_snapshots(lab_clean, before) == Counter({v: 1 for v in backed})
    assert vzdump_posts(lab_clean, mark) == Counter({v: 1 for v in backed})
    assert first.vzdump_started == len(backed)
    row = next(r for r in first.guests if r.vmid == min(due))
    assert row.age_s is not None and row.age_s < 60 and row.size and row.upid
    # the UI showed how far it got: every guest to back up, counted as its outcome arrived
    progress = run_artifact(
        state.state_details.flow_run_id, progress_key(load_config(Path(cfg)).lab.name, "backups")
    )
    assert float(progress.data) == 100.0
    assert progress.description == f"{len(backed)} of {len(backed)} guests"

    mark = lab_clean.journal_mark()
    again = report_of(backups(config=cfg, return_state=True))
    posts = vzdump_posts(lab_clean, mark)
    assert not set(posts) & backed, posts  # nothing this test backed up is backed up again
    crossed = set(posts)
    assert crossed <= fresh_before and all(n == 1 for n in posts.values()), posts
    assert again.vzdump_started == len(crossed)
    assert {r.vmid for r in again.rows(GuestStatus.FRESH)} == (backed | fresh_before) - crossed
    assert new_snapshots(lab_clean, before) == Counter({v: 1 for v in backed | crossed})


def test_faults_fail_only_their_guests_and_are_reported(
    lab_clean: SandboxHandle,
    prefect_server: Any,
    victoriametrics: Any,
    mqtt: Any,
    tmp_path: Path,
) -> None:
    from flows.backups import backups
    from labops.backups.report import GuestStatus

    cfg_path = config(lab_clean, tmp_path, tiers={"short": {"rpo": "1s"}})
    cfg = yaml.safe_load(Path(cfg_path).read_text())
    cfg["systems"]["victoriametrics"] = {"url": victoriametrics.url}
    cfg["systems"]["mqtt"] = mqtt.settings().model_dump(mode="json", exclude_none=True)
    Path(cfg_path).write_text(yaml.safe_dump(cfg))
    subscriber = mqtt.subscribe()
    lab_clean.control("telegram", "clear")

    failing, locked = [203, 207], 209
    lab_clean.set_faults(
        "pve",
        error_rate=0.1,
        reset_rate=0.1,
        stall_rate=0.02,
        stall_s=3,
        extra={
            "offline_nodes": ["pve3"],
            "failing_vmids": failing,
            "locked_vmids": {str(locked): "snapshot"},
            "stall_paths": ["/status"],
        },
    )
    # The snapshot holding the lock ends a moment after the flow reaches the guest.
    unlock = threading.Timer(2.0, lambda: lab_clean.set_faults("pve", extra={"locked_vmids": {}}))
    unlock.start()
    t0 = time.time() - 1
    before = snapshots(lab_clean)
    mark = lab_clean.journal_mark()
    try:
        state = backups(config=cfg_path, return_state=True)
    finally:
        unlock.cancel()
        lab_clean.reset_faults()
    report = report_of(state)

    assert state.is_failed()
    by_vmid = {r.vmid: r for r in report.guests}
    for vmid in failing:
        assert by_vmid[vmid].status is GuestStatus.FAILED
        assert "exit code 255" in by_vmid[vmid].reason
    assert by_vmid[150].status is GuestStatus.NOT_BACKED_UP  # PBS's own CT lives on pve3
    assert by_vmid[locked].status is GuestStatus.BACKED_UP
    entities = [f.entity for f in report.failures]
    assert entities.count("node pve3") == 1
    assert {f"guest {v} ({by_vmid[v].name})" for v in failing} <= set(entities)
    assert len(report.failures) == 3, report.failure_summary()
    healthy = {v for v, r in by_vmid.items() if r.status is GuestStatus.BACKED_UP}
    assert len(healthy) >= 40
    # every healthy guest exactly one new backup, the failed ones none, nothing twice
    made = new_snapshots(lab_clean, before)
    twice = {v: n for v, n in made.items() if n > 1}
    assert made == Counter({v: 1 for v in healthy}), (twice, doubled_journal(lab_clean, mark))

    # one notification, on Telegram and MQTT
    sent = lab_clean.control("telegram", "messages")["messages"]
    texts = [m.get("text", "") for m in sent]
    assert any("Backups homelab: FAILED" in t for t in texts), texts
    assert sum("exit code 255" in t for t in texts) >= 1
    received = subscriber.wait_for(1, timeout=10)
    payload = next(m.json() for m in received if m.topic.endswith("backups/report"))
    assert payload["counts"]["failed"] == 2 and payload["severity"] == "critical"
    assert {f["entity"] for f in payload["failures"]} == set(entities)

    # metrics, read back from VictoriaMetrics
    ages = victoriametrics.wait_for("labops_backup_age_seconds", count=40)
    assert len(ages) >= 40
    last = victoriametrics.wait_for(
        f'labops_backup_last_success_timestamp_seconds{{vmid="{locked}"}}'
    )
    assert float(last[0]["value"][1]) >= t0
    beat = victoriametrics.wait_for('labops_flow_last_run_timestamp_seconds{flow="backups"}')
    assert beat


def newest_backup(sandbox: SandboxHandle) -> float:
    snaps = sandbox.pbs().admin.datastore("store1").snapshots.get()
    return max((float(s["backup-time"]) for s in snaps), default=0.0)


# The rerun treats a backup younger than (time since the kill started + MARGIN) as fresh: MARGIN
# covers the rerun's own start-up (seconds under load) before it lists the backups.
MARGIN = 45.0


def test_killed_run_then_rerun_backs_up_each_guest_once(
    make_sandbox: Any, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.backups import backups
    from labops.backups.report import GuestStatus

    lab_clean = make_sandbox()  # a lab of its own: no backup of this module's other tests
    # Every earlier backup must be older than the rerun's window (seeded nightly ones at 02:00
    # UTC can be minutes old when the suite runs just after 02:00).
    wait = newest_backup(lab_clean) + MARGIN + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
    # Longer vzdumps (2 s of lab time per GiB-ish) so the kill lands mid-run.
    lab_clean.set_faults("pve", latency_ms=20)
    killed_cfg = config(lab_clean, tmp_path / "killed", tiers={"short": {"rpo": "1s"}})
    t0 = time.time() - 1
    before = snapshots(lab_clean)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from flows.backups import backups; backups(config={killed_cfg!r})",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while sum(new_snapshots(lab_clean, before).values()) < 8:
            assert proc.poll() is None, "the flow ended before it could be killed"
            assert time.monotonic() < deadline, "no backups from the first run"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    done_before = sum(new_snapshots(lab_clean, before).values())

    # The killed run's slots are leases that Prefect frees after >= 60 s; the rerun uses a
    # scope of its own rather than wait for that (lease expiry is Prefect's, not ours to test),
    # and a lab name of its own for the lab's maintenance slot (labops-<lab.name>-maintenance-slot).
    # Due again: every guest not backed up since t0.
    window = f"{int(time.time() - t0 + MARGIN)}s"
    rerun_cfg = config(
        lab_clean, tmp_path / "rerun", tiers={"short": {"rpo": window, "refresh_after": window}}
    )
    raw = yaml.safe_load(Path(rerun_cfg).read_text())
    raw["lab"]["name"] = f"rerun-{tmp_path.name[-12:].lower().replace('_', '-')}"
    Path(rerun_cfg).write_text(yaml.safe_dump(raw))
    state = backups(config=rerun_cfg, return_state=True)
    report = report_of(state)
    assert state.is_completed(), report.failure_summary()
    due = {r.vmid for r in report.guests if r.watched}
    counts = new_snapshots(lab_clean, before)
    assert counts == Counter({v: 1 for v in due}), (done_before, counts)
    assert done_before < len(due)
    assert report.vzdump_started <= len(due) - done_before
    assert all(
        r.status in (GuestStatus.BACKED_UP, GuestStatus.FRESH) for r in report.guests if r.watched
    )
