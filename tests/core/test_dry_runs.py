"""Every operation that changes the lab, run as a dry run, changes nothing — proven, not assumed.

Each case runs one flow with ``dry_run=True`` on the session sandbox, with a config under which
the operation has something to change (guests due for a backup, node certificates due for
renewal, drifted docs, old flow runs and a held concurrency slot, pending updates), and checks
what it could have touched:

- the sandbox journal after a mark: no PVE/PBS request other than a read (so no write, power
  action or snapshot), and every command a host ran is on the read-only list below;
- the docs repository and labops' clone of it: refs, HEAD, index and work tree as before;
- the Prefect server: no flow run, artifact, automation or concurrency limit gone, no slot freed.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.journal_rules import mutating


def test_the_read_only_list_is_tight() -> None:
    """The list lets the checks through and nothing that refreshes, upgrades or powers."""
    ok = ["apt-get -s -o Debug::NoLocking=1 dist-upgrade", "apk upgrade -s", "needrestart -b"]
    ok += ["test -e /etc/traefik/dynamic", "systemctl cat traefik.service", "ss -ltn"]
    bad = [
        "apt-get -q -o DPkg::Lock::Timeout=120 update",
        "apt-get -s update",
        "apt-get -y dist-upgrade",
        "apk update -q",
        "apk upgrade",
        "pct start 106",
        "pct snapshot 106 labops-patch-x",
        "reboot",
        "systemctl restart nginx",
        "needrestart -r a",
        "systemctl cat traefik.service ; reboot",
        "command -v x && rm -rf /",
    ]
    entries = [{"kind": "exec", "host": "h", "argv": line.split()} for line in ok + bad]
    assert mutating(entries) == [f"h: {line}" for line in bad]


# -- what else a dry run could change ---------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def every_file(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (a bare repository: refs, objects, ...)."""
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def clone_state(repo: Path) -> dict[str, Any]:
    """What a git write changes in a clone: refs, HEAD, index and work tree. FETCH_HEAD and
    objects are left out: a fetch into labops' own clone is how the docs are read."""
    dot = repo / ".git"
    return {
        "refs": _git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "HEAD": (dot / "HEAD").read_text(),
        "index": _sha(dot / "index") if (dot / "index").exists() else None,
        "tree": {
            str(p.relative_to(repo)): _sha(p)
            for p in sorted(repo.rglob("*"))
            if ".git" not in p.relative_to(repo).parts and p.is_file()
        },
    }


def prefect_state() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    runs: set[str] = set()
    artifacts: set[str] = set()
    with get_client(sync_client=True) as client:
        offset = 0
        while page := client.read_flow_runs(limit=200, offset=offset):
            runs |= {str(r.id) for r in page}
            offset += len(page)
        offset = 0
        while page_a := client.read_artifacts(limit=200, offset=offset):
            artifacts |= {str(a.id) for a in page_a}
            offset += len(page_a)
        automations = {str(a.id) for a in client.read_automations()}
        limits = {c.name: c.active_slots for c in client.read_global_concurrency_limits(limit=200)}
    return {"runs": runs, "artifacts": artifacts, "automations": automations, "limits": limits}


ORPHAN_KIND, ORPHAN_KEY = "drill", "dry-run-orphan"


def finished_run(lab: str) -> None:
    """A Completed flow run of the lab (created through the API, nothing executed)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from labops.scope import lab_tag
    from tests.core.demo_flow import demo

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(demo, parameters={}, tags=[lab_tag(lab)])
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Completed(), force=True)


class _TwoDaysLater(datetime):
    """The server sets start times itself, so instead of an old run, housekeeping runs "two days
    later": with retention_days 1 every finished run of this session is old enough to prune (and
    a dry run that deleted would empty the session's history: loud, not silent)."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) + timedelta(days=2)


def orphan_limit(config: Path) -> str:
    """The lab's concurrency limit that :func:`held_slot` holds."""
    from labops.limits import limit_name

    return limit_name(
        ORPHAN_KIND, ORPHAN_KEY, lab=yaml.safe_load(config.read_text())["lab"]["name"]
    )


@contextmanager
def held_slot(name: str) -> Iterator[None]:
    """A labops concurrency limit with slots held and no lease: an orphan housekeeping frees.
    Removed afterwards: other tests count the orphans they made."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from labops.limits import ensure_limit

    ensure_limit(name, 2)
    try:
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(active_slots=2)
            )
        yield
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


# -- the operations -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dry_config(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sandbox's config, own state dir, with something to change for every operation."""
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    tmp = tmp_path_factory.mktemp("dry-runs")
    cfg["lab"]["state_dir"] = str(tmp / "state")
    cfg["certificates"] = {
        # Only the node certificates (renewal is about them), each one due: whatever renewals
        # other tests made, an ACME node with less than all of its lifetime left is critical.
        "sources": {"config": False, "traefik": False, "technitium": False},
        "groups": {"nodes": {"warning_fraction": 1.0, "critical_fraction": 1.0}},
        "renewal": {"enabled": True},
    }
    # Stopped containers started for their check and the package lists refreshed: what a dry
    # run must not do.
    # Every guest gated on a backup newer than it has (the gate would run vzdump) and nodes
    # drained by migration: what a dry run must not do either. Overlaps only listed: the
    # sandbox's nightly backup jobs must not refuse every host near 02:00.
    cfg["patching"] = {
        "stopped_containers": "start-check-stop",
        "refresh": True,
        "require_backup": {"enabled": True, "max_age_h": 0.01},
        "drain": {"mode": "migrate"},
        "overlaps": "list",
    }
    cfg.setdefault("platform", {})["retention_days"] = 1
    cfg["platform"]["zombie_after_seconds"] = 4321  # differs from any existing: "would update"
    assert cfg["docs"]["git"] and cfg["docs"]["write"]  # the sandbox's docs repository
    path = tmp / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    yield path


def _run(flow: Callable[..., Any], config: Path, **params: Any) -> Any:
    state = flow(config=str(config), dry_run=True, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert not isinstance(report, BaseException), report
    assert report.dry_run
    return report


def backups(config: Path) -> Any:
    from flows.backups import backups
    from labops.backups.report import GuestStatus

    report = _run(backups, config)
    assert report.rows(GuestStatus.WOULD_BACK_UP), "nothing due: the case proves nothing"
    return report


def restore_drill(config: Path) -> Any:
    from flows.restore_drill import restore_drill

    report = _run(restore_drill, config)
    assert any(s.startswith("would restore") for s in report.steps), report.failures
    return report


def certificates(config: Path) -> Any:
    from flows.certificates import certificates

    report = _run(certificates, config)
    planned = [r.node for r in report.renewals if r.action == "planned"]
    assert planned, "no node due for renewal: the case proves nothing"
    return report


def doc_reconcile(config: Path) -> Any:
    from flows.doc_reconcile import doc_reconcile

    report = _run(doc_reconcile, config)
    assert report.drifted and report.diff and report.branch is None
    return report


def housekeeping(config: Path) -> Any:
    import flows.housekeeping

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flows.housekeeping, "datetime", _TwoDaysLater)
        report = _run(flows.housekeeping.housekeeping, config)
    assert report.flow_runs_pruned >= 1  # at least the finished run made for this case
    assert any(s.startswith(orphan_limit(config)) for s in report.slots_released)  # would free
    assert report.zombie_automation.startswith("would")
    return report


def patch_apply(config: Path) -> Any:
    from flows.patching import patch_apply

    report = _run(patch_apply, config)
    assert any(a.outcome == "simulated" for a in report.applied)
    assert any(" would back up " in g for g in report.gate_backups), report.gate_backups
    return report


OPERATIONS: dict[str, Callable[[Path], Any]] = {
    "backups": backups,
    "restore-drill": restore_drill,
    "certificates": certificates,
    "doc-reconcile": doc_reconcile,
    "housekeeping": housekeeping,
    "patch-apply": patch_apply,
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_dry_run_changes_nothing(
    operation: str, sandbox: Any, prefect_server: Any, dry_config: Path
) -> None:
    cfg = yaml.safe_load(dry_config.read_text())
    origin = Path(cfg["docs"]["git"]["url"])
    clone = Path(cfg["lab"]["state_dir"]) / "docs-repo"
    if operation == "doc-reconcile" and not clone.exists():
        # As after a real run: labops' clone exists, its fix branch committed and checked out.
        from flows.doc_reconcile import doc_reconcile as reconcile

        written = reconcile(config=str(dry_config), dry_run=False, return_state=True).result()
        branch = getattr(written, "branch", None)
        assert branch and _git(clone, "branch", "--show-current").strip() == branch
    if operation == "housekeeping":
        from tests.platform.test_housekeeping import crash_leftover_runs

        crash_leftover_runs()  # runs killed by earlier tests would keep every slot "in use"
        finished_run(yaml.safe_load(dry_config.read_text())["lab"]["name"])  # one to prune
    slot = held_slot(orphan_limit(dry_config)) if operation == "housekeeping" else nullcontext()
    with slot:
        check_nothing_changed(operation, sandbox, dry_config, origin, clone)


def check_nothing_changed(
    operation: str, sandbox: Any, dry_config: Path, origin: Path, clone: Path
) -> None:
    origin_before = every_file(origin)
    clone_before = clone_state(clone) if clone.exists() else None
    prefect_before = prefect_state()
    mark = sandbox.journal_mark()

    OPERATIONS[operation](dry_config)

    writes = mutating(sandbox.journal(mark))
    assert not writes, f"the dry run wrote, powered or ran {len(writes)} change(s): {writes[:5]}"
    assert every_file(origin) == origin_before, "the docs repository was written"
    if clone_before is not None:
        assert clone_state(clone) == clone_before, "labops' docs clone was written"
    after = prefect_state()
    for kind in ("runs", "artifacts", "automations"):
        gone = prefect_before[kind] - after[kind]
        assert not gone, f"the dry run deleted {len(gone)} {kind}"
    assert set(prefect_before["limits"]) <= set(after["limits"])
    if operation == "housekeeping":
        assert after["limits"][orphan_limit(dry_config)] == 2, "the dry run freed a held slot"
