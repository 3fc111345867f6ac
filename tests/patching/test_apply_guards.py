"""Patch apply's guard rails on the sandbox and a real sshd (issues 14 and 22): a dry run that
changes nothing (the sandbox journal as witness), a window closing mid-run, busy nodes, detached
node upgrades adopted or still running, and the plan shown while the run waits for approval."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from labops.config import load_config
from labops.scope import artifact_key
from tasks.progress import progress_key
from tests.core.test_progress import run_artifact
from tests.journal_rules import is_mutating
from tests.patching.helpers import derived_config, guest, pending_of, report_of, run_paused_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
OPEN = [{"start": "00:00", "end": "23:59"}]


@pytest.fixture(autouse=True)
def _fleet_as_seeded(sandbox: Any) -> Any:
    """These tests change what hosts have pending and upgrade nodes: put every host of the
    session sandbox back as seeded afterwards, for the tests that read the seeded lab."""
    yield
    sandbox.control("fleet", "reset", keep_faults=True)


def test_dry_run_changes_nothing_and_simulates_the_apply_command(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """After a mark, `patch-apply --dry-run` (refresh on, start-check-stop, security only,
    excluded packages) sends no PVE/PBS write and runs only read-only commands; each host's
    simulation is the very command apply would run; a stopped container is reported not
    checked; a hostile package name is refused and never sent."""
    from flows.patching import patch_apply

    sb = sandbox_clean
    sb.control(
        "fleet",
        "set_pending",
        host="jellyfin",
        packages=[
            {"name": "libc6", "security": True},
            {"name": "openssl", "security": True},
            {"name": "curl", "security": True},
            {"name": "tzdata"},
        ],
        held=[],
    )
    sb.control(
        "fleet",
        "set_pending",
        host="pve2",
        packages=[
            {"name": "pve-manager", "from": "9.0.10", "version": "9.0.11", "pve": True},
            {"name": "pve-qemu-kvm", "from": "10.0.2-4", "version": "10.1.2-1", "pve": True},
        ],
        held=[],
    )
    hostile = "evil;reboot$(id)"
    sb.control(
        "fleet",
        "set_pending",
        host="homepage",
        packages=[{"name": "tzdata", "security": True}, {"name": hostile, "security": True}],
        held=[],
    )
    hosts = ["jellyfin", "pve2", "homepage", "headscale", "redis"]
    before = {h: pending_of(sb, h) for h in hosts}
    redis_node, redis_vmid = guest(sb, "redis")
    cfg = derived_config(
        sb,
        tmp_path,
        refresh=True,
        stopped_containers="start-check-stop",
        security_only=True,
        exclusions={"packages": ["curl", "pve-qemu-kvm"]},
    )
    mark = sb.journal_mark()
    report = report_of(patch_apply(config=cfg, dry_run=True, hosts=hosts, return_state=True))
    entries = sb.journal(mark)
    bad = [e for e in entries if is_mutating(e)]
    assert not bad, bad[:5]
    assert [e for e in entries if e["kind"] == "exec"], "the hosts were checked"
    # the simulation per host is what apply would run: security only and exclusions
    sims = {a.host: a for a in report.applied}
    assert sims["jellyfin"].outcome == "simulated"
    assert sims["jellyfin"].simulated == (
        "apt-get -s -o Debug::NoLocking=1 install --only-upgrade libc6 openssl"
    )
    assert sims["jellyfin"].command and sims["jellyfin"].command.endswith(
        " install --only-upgrade libc6 openssl"
    )
    assert sims["pve2"].simulated == (
        "apt-get -s -o Debug::NoLocking=1 dist-upgrade pve-qemu-kvm=10.0.2-4"
    )
    assert sims["pve2"].command and sims["pve2"].command.startswith(
        "apt-mark hold pve-qemu-kvm && "
    )
    assert "Inst pve-manager " in (sims["pve2"].simulation or "")
    assert "Inst pve-qemu-kvm" not in (sims["pve2"].simulation or "")
    ran = {
        e["host"]: e["argv"] for e in entries if e["kind"] == "exec" and e["argv"][0] == "apt-get"
    }
    for host in ("jellyfin", "pve2", "homepage", "headscale"):
        if host in sims:
            assert ran[host] == shlex.split(sims[host].simulated or ""), host
    # the hostile name: refused on its host, never in any command
    rows = {h.host: h for h in report.hosts}
    assert rows["homepage"].refused == [repr(hostile)]
    assert sims["homepage"].simulated.endswith("install --only-upgrade tzdata")  # type: ignore[union-attr]
    assert not [e for e in entries if hostile in str(e.get("argv", e.get("command", "")))]
    assert [f.entity for f in report.failures].count("host homepage") == 1
    # the stopped container: not started, reported as not checked, and why
    assert (
        rows["redis"].state == "skipped" and "a dry run does not start it" in rows["redis"].detail
    )
    status = sb.pve().nodes(redis_node).lxc(redis_vmid).status.current.get()["status"]
    assert status == "stopped"
    assert {h: pending_of(sb, h) for h in hosts} == before


def test_dry_run_against_real_sshd_and_apt_changes_nothing(sshd: Any, tmp_path: Path) -> None:
    """The same dry run against this machine's apt over a real sshd: /var/lib/apt/lists and
    /var/lib/dpkg/status are unchanged (listing, mtimes, hashes), and the simulation is the
    command apply would run (security only named upgrade; a node's dist-upgrade with its
    excluded package pinned, not held). apt sees a world of the test's own (a local repository
    with two security updates and a regular one, through ``APT_CONFIG`` set by the login's key),
    so the test never depends on what this machine has pending."""
    from flows.patching import patch_apply
    from tests.fixtures.local_apt import SECURITY, build_local_apt
    from tests.fixtures.sshd import write_ed25519_key

    world = build_local_apt(tmp_path / "apt")
    key = tmp_path / "apt_key"
    line = write_ed25519_key(key, "labops-local-apt")
    authorized = sshd.dir / "authorized_keys"
    keys_before = authorized.read_text()
    authorized.write_text(f'{keys_before}environment="APT_CONFIG={world.config}" {line}\n')
    security = sorted(SECURITY)
    excluded = security[0]

    def snapshot() -> dict[str, tuple[float, str]]:
        paths = [
            Path("/var/lib/dpkg/status"),
            *sorted(Path("/var/lib/apt/lists").rglob("*")),
            *world.state_files(),
        ]
        return {
            str(p): (
                p.stat().st_mtime,
                hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
            )
            for p in paths
            if p.exists() and os.access(p, os.R_OK)
        }

    cfg = {
        "lab": {"name": "dryrun", "state_dir": str(tmp_path / "state")},
        "systems": {
            "ssh": {
                "user": "root",
                "key_file": str(key),
                "known_hosts": str(sshd.known_hosts),
            }
        },
        "inventory": {
            "discover_from_proxmox": False,
            "hosts": [
                {"name": "self", "kind": "host", "address": sshd.address, "port": sshd.port},
                {"name": "self-node", "kind": "node", "address": sshd.address, "port": sshd.port},
            ],
        },
        "patching": {
            "refresh": True,
            "security_only": True,
            "exclusions": {"packages": [excluded]},
            "check_timeout_s": 120,
        },
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = snapshot()
    try:
        report = report_of(patch_apply(config=str(path), dry_run=True, return_state=True))
    finally:
        authorized.write_text(keys_before)
    assert snapshot() == before
    sims = {a.host: a for a in report.applied}
    assert sims["self"].outcome == "simulated", sims["self"].detail
    named = shlex.split(sims["self"].simulated or "")
    assert named[:5] == ["apt-get", "-s", "-o", "Debug::NoLocking=1", "install"]
    assert excluded not in named and set(named[6:]) == set(security[1:])
    assert f"Inst {security[1]} " in (sims["self"].simulation or "")
    node = sims["self-node"]
    assert node.outcome == "simulated", node.detail
    assert (node.simulated or "").split(" dist-upgrade ")[1].startswith(f"{excluded}=")
    assert f"Inst {excluded} " not in (node.simulation or "")
    assert (node.command or "").startswith(f"apt-mark hold {excluded} && ")


def test_window_closing_mid_run_stops_cleanly(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is asked again before every step: it closes once the canary is done (a fake
    clock, no waiting), so the batch is reported not run with the time it closed, the canary's
    snapshot is settled and the run says it stopped."""
    import flows.patching as patching

    hosts = ["authentik", "n8n", "docmost"]
    for h in hosts:
        sandbox.control("fleet", "set_pending", host=h, packages=[{"name": "tzdata"}], held=[])
    opened = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)

    def clock() -> datetime:  # open (01:00) until the canary is patched, then 03:30
        done = not pending_of(sandbox, "authentik")
        return opened + timedelta(hours=2, minutes=30) if done else opened

    monkeypatch.setattr(patching, "now", clock)
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=[{"start": "00:30", "end": "03:00"}],
        refresh=False,
        canaries=["authentik"],
        delete_snapshots_after_h=0,
        reboot="never",
    )
    state, paused = run_paused_flow(
        lambda: patching.patch_apply(config=cfg, hosts=hosts, return_state=True),
        cfg,
        {"approve": True},
    )
    assert paused is not None
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["authentik"].outcome == "patched"
    assert {done["n8n"].outcome, done["docmost"].outcome} == {"not-run"}
    assert done["n8n"].detail == "window closed at 03:00"
    assert report.stopped == "window closed at 03:00"
    assert state.is_failed() and "window closed at 03:00: 2 hosts not run" in str(
        [f.reason for f in report.failures]
    )
    assert pending_of(sandbox, "n8n") == ["tzdata"] and pending_of(sandbox, "docmost") == ["tzdata"]
    assert report.deleted_snapshots and "authentik" in report.deleted_snapshots[0]
    # the UI's progress stops where the rollout did: the canary of the three hosts
    key = progress_key(load_config(Path(cfg)).lab.name, "patch_apply")
    progress = run_artifact(state.state_details.flow_run_id, key)
    assert progress.description == "1 of 3 hosts (authentik patched)"
    assert round(float(progress.data)) == 33


def test_busy_nodes_are_neither_upgraded_nor_rebooted(sandbox_clean: Any, tmp_path: Path) -> None:
    """A running vzdump on one node, a locked guest on another: both are skipped (busy_wait_s 0)
    and say why; nothing ran on them."""
    from flows.patching import patch_apply

    sb = sandbox_clean
    for node in ("pve1", "pve4"):
        sb.control("fleet", "set_pending", host=node, packages=[{"name": "pve-manager"}], held=[])
    _, locked = guest(sb, "syncthing")
    held = sb.control("pve", "task", node="pve1", type="vzdump", id="", vmids=[100, 103])["upid"]
    sb.set_faults("pve", extra={"locked_vmids": {str(locked): "migrate"}})
    cfg = derived_config(
        sb, tmp_path, windows=OPEN, refresh=False, busy_wait_s=0, reboot="when-required"
    )
    mark = sb.journal_mark()
    try:
        state, _ = run_paused_flow(
            lambda: patch_apply(config=cfg, hosts=["pve1", "pve4"], return_state=True),
            cfg,
            {"approve": True},
        )
        status = sb.pve().nodes("pve1").tasks(held).status.get()["status"]
    finally:
        sb.control("pve", "end_task", upid=held)
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["pve1"].outcome == "skipped" and done["pve1"].detail.startswith(
        f"node busy: backup running (vzdump, {held})"
    )
    assert done["pve4"].outcome == "skipped"
    assert done["pve4"].detail == f"node busy: CT {locked} (syncthing) locked: migrate"
    assert status == "running"  # the backup was left alone
    assert pending_of(sb, "pve1") == ["pve-manager"] and pending_of(sb, "pve4") == ["pve-manager"]
    ran = {e["host"] for e in sb.journal(mark) if e["kind"] == "exec" and is_mutating(e)}
    assert not ran & {"pve1", "pve4"}


def test_node_upgrade_detached_adopted_and_never_killed(sandbox: Any, tmp_path: Path) -> None:
    """A node's upgrade runs detached and is polled. An upgrade a killed run left running on
    pve1 is adopted: waited for (until it is ended here, once the flow has seen it), never
    doubled. On pve2 one that outlasts upgrade_timeout_s is reported still running with where
    to look, and is still running afterwards."""
    import threading

    from flows.patching import patch_apply
    from labops.patching.detached import POLL_COMMAND, parse_poll, start_command

    for node in ("pve1", "pve2"):
        sandbox.control("fleet", "set_pending", host=node, packages=[{"name": "pve-manager"}])
    fleet = FleetSsh(sandbox)
    for node in ("pve1", "pve2"):
        fleet.run(node, start_command("killed-run", "sleep 600", systemd=True))
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        reboot="never",
        max_fail_ratio=1.0,
        max_failures=5,
        upgrade_timeout_s=15,
        upgrade_poll_s=0.5,
    )
    mark = sandbox.journal_mark()
    stop = threading.Event()

    def end_pve1_job_once_polled() -> None:  # the killed run's upgrade ends while it is adopted
        while not stop.wait(0.2):
            polled = [
                e
                for e in sandbox.journal(mark, "fleet")
                if e.get("host") == "pve1"
                and e["kind"] == "exec"
                and e["argv"][:2] == ["kill", "-0"]
            ]
            if polled:
                fleet.run("pve1", "read p < /run/labops-upgrade.pid && kill $p")
                return

    ender = threading.Thread(target=end_pve1_job_once_polled, daemon=True)
    ender.start()
    try:
        state, _ = run_paused_flow(
            lambda: patch_apply(config=cfg, hosts=["pve1", "pve2"], return_state=True),
            cfg,
            {"approve": True},
            timeout=120,
        )
        still = parse_poll(fleet.run("pve2", POLL_COMMAND))
    finally:
        stop.set()
        fleet.run("pve2", "read p < /run/labops-upgrade.pid && kill $p")
        fleet.run("pve1", "read p < /run/labops-upgrade.pid && kill $p")
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["pve1"].outcome == "patched", done["pve1"].detail
    assert done["pve1"].detail == "adopted the running upgrade of killed-run (ended)"
    assert done["pve2"].outcome == "still-running"
    assert "is still running after 15s (not stopped)" in done["pve2"].detail
    assert "systemctl status labops-upgrade" in done["pve2"].detail
    assert still.running and still.job == "killed-run"  # never killed
    entries = sandbox.journal(mark, "fleet")
    starts = [e for e in entries if e["kind"] == "exec" and e["argv"][0] == "systemd-run"]
    assert [e["host"] for e in starts] == ["pve1"]  # pve2's running upgrade was never doubled
    ended = [
        e["seq"]
        for e in entries
        if e.get("host") == "pve1"
        and e["kind"] == "exec"
        and e["argv"][0] == "kill"
        and e["argv"][1] != "-0"
    ]
    assert ended and ended[0] < starts[0]["seq"]  # ours began only after the adopted one ended
    assert pending_of(sandbox, "pve1") == []


class FleetSsh:
    """Runs a command on a sandbox host over SSH (labops' runner, the sandbox's key), as another
    run of labops would."""

    def __init__(self, sandbox: Any) -> None:
        from blocks.context import LabContext

        ctx = LabContext.load(str(sandbox.config_path))
        self.runner = ctx.ssh_block().get_client()
        self.hosts = {h.name: h for h in ctx.config.inventory.hosts}

    def run(self, host: str, command: str) -> str:
        from labops.ssh import SshTarget

        h = self.hosts[host]
        target = SshTarget(name=host, address=h.address or host, port=h.port)
        return self.runner.run(target, command, timeout=60).stdout


def test_plan_shown_while_paused_and_applied_as_approved(
    sandbox: Any, tmp_path: Path, prefect_server: Any
) -> None:
    """While the run waits, the plan table artifact exists (read through the Prefect API) and the
    Resume form gives the totals; a package added between the plan and the approval is not
    applied and is reported; the narrowed approval is echoed in the report."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.input import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    from flows.patching import patch_apply

    plan_pkgs: dict[str, list[dict[str, Any]]] = {
        "listmonk": [{"name": "libc6", "security": True}, {"name": "tzdata"}],
        "plausible": [{"name": "openssl", "security": True}],
        "changedetection": [{"name": "curl", "security": True}],
    }
    for host, pkgs in plan_pkgs.items():
        sandbox.control("fleet", "set_pending", host=host, packages=pkgs, held=[])
    hosts = [*plan_pkgs, "mealie", "glance"]
    cfg = derived_config(
        sandbox,
        tmp_path,
        windows=OPEN,
        refresh=False,
        canaries=["listmonk"],
        delete_snapshots_after_h=0,
        reboot="never",
        step_estimate_s=86400,  # longer than any window: the approval must say so
    )
    seen: dict[str, Any] = {}

    def while_paused(run: Any) -> None:
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            seen["artifacts"] = {a.key: a for a in arts}
            paused = client.read_flow_run(run.id)
        assert paused.state is not None
        keys = keyset_from_paused_state(paused.state)
        seen["form"] = str(read_flow_run_input(keys["description"], flow_run_id=run.id))
        # between the plan and the approval a new update appears on plausible
        sandbox.control(
            "fleet",
            "set_pending",
            host="plausible",
            packages=[*plan_pkgs["plausible"], {"name": "libxml2", "security": True}],
        )

    state, paused = run_paused_flow(
        lambda: patch_apply(config=cfg, hosts=hosts, return_state=True),
        cfg,
        {"approve": True, "exclude_hosts": ["changedetection"], "note": "ok"},
        on_pause=while_paused,
    )
    assert paused is not None
    lab = yaml.safe_load(Path(cfg).read_text())["lab"]["name"]
    table = seen["artifacts"][artifact_key(lab, "patch-plan", "table")]
    assert table.type == "table"
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    rows = {r["host"]: r for r in data}
    assert rows["listmonk"]["phase"] == "canary 1"
    assert rows["listmonk"]["packages"] == "libc6 (security), tzdata"
    assert rows["listmonk"]["protection"] == "snapshot"
    assert rows["mealie"]["left out because"] == "up to date"
    assert rows["glance"]["left out because"] == "stopped"
    assert artifact_key(lab, "patch-plan", "summary") in seen["artifacts"]
    form = seen["form"]
    assert "3 hosts (0 nodes), 4 packages, 3 security updates, 0 reboots expected" in form
    assert "Hosts without a rollback point: 0" in form and "the window closes at 23:59" in form
    assert "the plan needs about 2880 min (2 steps)" in form
    assert f"/artifacts/artifact/{table.id})" in form
    report = report_of(state)
    done = {a.host: a for a in report.applied}
    assert done["plausible"].outcome == "patched" and done["plausible"].upgraded == ["openssl"]
    assert pending_of(sandbox, "plausible") == ["libxml2"]  # never silently added
    assert report.plan_changes[1:] == ["plausible: new since the plan, not applied: libxml2"]
    assert report.plan_changes[0].startswith("window: closes at 23:59, the plan needs about 2880")
    assert "changedetection" not in done and pending_of(sandbox, "changedetection") == ["curl"]
    assert report.narrowed == ["hosts excluded: changedetection"]
    text = report.markdown()
    assert "Narrowed at approval: hosts excluded: changedetection" in text
    assert "- plausible: new since the plan, not applied: libxml2" in text
