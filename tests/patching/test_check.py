"""Patch check mode on the sandbox fleet (real SSH, real PVE API, real Prefect server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.patching.helpers import derived_config, report_of

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_check_mode_whole_lab(sandbox: Any, tmp_path: Path, victoriametrics: Any) -> None:
    from flows.patching import patch_check
    from labops.patching.report import PatchReport

    cfg = derived_config(
        sandbox, tmp_path, systems={"victoriametrics": {"url": victoriametrics.url}}, refresh=True
    )
    report = report_of(patch_check(config=cfg, return_state=True))
    assert isinstance(report, PatchReport)
    rows = {h.host: h for h in report.hosts}
    assert not report.failures, report.failures
    # every node and every running container is checked; stopped ones reported as skipped
    nodes = [h for h in report.hosts if h.kind == "node"]
    assert {h.host for h in nodes} == {"pve1", "pve2", "pve3", "pve4"}
    assert all(h.known for h in nodes)
    stopped = [h for h in report.hosts if h.state == "skipped" and h.detail == "stopped"]
    assert stopped and all(h.kind == "container" for h in stopped)
    # pct-reached containers (no sshd) are checked through their node
    pct = [h for h in report.hosts if h.access == "pct" and h.known]
    assert pct, "containers without sshd must be reached with pct exec"
    # security by suite; apk has no security flag (n/a), EOL releases flagged
    apt_rows = [h for h in report.hosts if h.known and h.package_manager == "apt"]
    assert sum(h.security for h in apt_rows) > 0
    assert any(p.security is False for h in apt_rows for p in h.packages)
    alpine = [h for h in report.hosts if h.package_manager == "apk"]
    assert alpine and all(report._row(h)["security"] == "n/a" for h in alpine)
    assert any(h.eol for h in report.hosts)
    assert any(h.held for h in report.hosts)
    # views: JSON, table, metrics (no sample for unknown hosts), notification
    again = PatchReport.model_validate_json(report.model_dump_json())
    assert len(again.hosts) == len(report.hosts)
    table = report.table()
    assert set(table[0]) == {
        "host",
        "os",
        "pending",
        "security",
        "held",
        "reboot",
        "restart services",
        "last checked",
        "state",
        "check",
        "could not check",
        "unknown since",
    }
    names = {m.name for m in report.metrics()}
    assert {
        "labops_patch_pending_updates",
        "labops_patch_security_updates",
        "labops_patch_reboot_required",
    } <= names
    note = report.notification()
    assert note is not None and "pending" in note.title
    assert rows["pve1"].last_checked is not None
    # the same numbers reached VictoriaMetrics, with the flow's heartbeat
    known = [h for h in report.hosts if h.known]
    series = victoriametrics.wait_for("labops_patch_pending_updates", len(known))
    got = {s["metric"]["host"]: float(s["value"][1]) for s in series}
    assert all(got[h.host] == h.pending for h in known)
    assert victoriametrics.wait_for('labops_flow_up{flow="patch_check"}')


def test_a_started_container_whose_sshd_is_slow_is_asked_until_it_answers(
    sandbox_clean: Any, tmp_path: Path
) -> None:
    """start-check-stop: a container whose sshd answers 10 s after its start is checked, not
    left unreachable after one more try."""
    check_a_stopped_container(sandbox_clean, tmp_path, slow_sshd_s=10)


def test_check_faults_are_reported_never_up_to_date(sandbox_clean: Any, tmp_path: Path) -> None:
    """Unreachable, changed host key (refused, known_hosts untouched), auth failure, a held
    dpkg lock (waited for) and a hanging command (timed out), in one run."""
    from flows.patching import patch_check

    sb = sandbox_clean
    cfg = derived_config(sb, tmp_path, check_timeout_s=3, lock_wait_s=30, refresh_timeout_s=30)
    sb.set_faults(
        "fleet",
        extra={
            "unreachable_hosts": ["gitea"],
            "changed_host_keys": ["grafana"],
            "auth_fail_hosts": ["jellyfin"],
            "dpkg_locked_hosts": {"minio": 8},
            "hanging_commands": {"ollama": "apt list"},
        },
    )
    import yaml

    known_hosts = Path(yaml.safe_load(Path(cfg).read_text())["systems"]["ssh"]["known_hosts"])
    before = known_hosts.read_bytes()
    hosts = ["gitea", "grafana", "jellyfin", "minio", "ollama", "postgres"]
    state = patch_check(config=cfg, refresh=True, hosts=hosts, return_state=True)
    assert state.is_failed()
    report = report_of(state)
    rows = {h.host: h for h in report.hosts}
    assert rows["gitea"].state == "unreachable"
    assert rows["grafana"].state == "host-key-rejected" and "CHANGED" in rows["grafana"].detail
    assert rows["jellyfin"].state == "auth-failed"
    assert rows["ollama"].state == "timeout"
    assert rows["minio"].known and rows["postgres"].known
    assert "waited for the apt lock" in rows["minio"].detail  # waited, did not fail
    assert known_hosts.read_bytes() == before, "a changed host key must never be written"
    failed = {f.entity for f in report.failures}
    assert failed == {"host gitea", "host grafana", "host jellyfin", "host ollama"}
    # unknown is never "up to date": no pending metric for them, "?" in the table
    pending = {
        m.labels["host"] for m in report.metrics() if m.name == "labops_patch_pending_updates"
    }
    assert not pending & {"gitea", "grafana", "jellyfin", "ollama"}
    assert report._row(rows["gitea"])["pending"] == "?"
    # each is a could-not-check row: why and since when (the check's time on a first failure)
    for name, kind in (
        ("gitea", "unreachable"),
        ("grafana", "host-key-rejected"),
        ("jellyfin", "auth-failed"),
        ("ollama", "timeout"),
    ):
        row = report._row(rows[name])
        assert row["check"] == "unknown" and row["could not check"].startswith(f"{kind}: "), row
        assert row["unknown since"] == row["last checked"]


def check_a_stopped_container(sandbox: Any, tmp_path: Path, slow_sshd_s: float = 0) -> None:
    """start-check-stop on the first stopped container: it is checked, then stopped again."""
    from flows.patching import patch_check

    stopped = [
        g
        for g in sandbox.pve().cluster.resources.get(type="vm")
        if g["type"] == "lxc" and g["status"] == "stopped" and not g.get("template")
    ]
    assert stopped
    name = stopped[0]["name"]
    if slow_sshd_s:
        sandbox.set_faults("fleet", extra={"slow_sshd": {name: slow_sshd_s}})
    cfg = derived_config(sandbox, tmp_path, refresh=False, stopped_containers="start-check-stop")
    report = report_of(patch_check(config=cfg, hosts=[name], return_state=True))
    row = next(h for h in report.hosts if h.host == name)
    assert row.known, row
    status = sandbox.pve().nodes(stopped[0]["node"]).lxc(stopped[0]["vmid"]).status.current.get()
    assert status["status"] == "stopped"


def test_stopped_container_started_checked_and_stopped_again(sandbox: Any, tmp_path: Path) -> None:
    check_a_stopped_container(sandbox, tmp_path)
