"""The certificates flow against the sandbox's real TLS endpoints, Traefik, step-ca and PVE.

One module-scoped config derived from the sandbox's (own state dir, 1 s handshake timeout, the
real VictoriaMetrics, node thresholds making pve2's 12-day certificate critical). Flow runs are
kept few: they share the session Prefect server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from blocks.edge import StepCa, TraefikApi
from blocks.proxmox import ProxmoxCredentials
from labops.certificates.chain import TrustAnchors
from labops.certificates.check import check_endpoints
from labops.certificates.classify import CertStatus
from labops.certificates.models import Target
from labops.certificates.report import CertificateReport
from labops.config import load_config
from labops.http_settings import StepCaSettings, TraefikSettings
from labops.models.traefik import tls_hosts
from labops.proxmox_settings import ProxmoxSettings
from tasks.pve import node_certificates
from tasks.stepca import ca_certificates
from tasks.traefik import http_routers

# case host prefix -> words the reason must contain (the status comes from the sandbox).
REASONS = {
    "longlived": "ok",
    "expiring-3d": "expires in 3.0 days",
    "expiring-20d": "expires in 20.0 days",
    "expired": "expired 2.0 days ago",
    "short-3h": "renewal overdue: past 67% of its 24 h lifetime",
    "short-20h": "ok",
    "wrong-host": "does not cover wrong-host.lab.internal",
    "self-signed": "self-signed certificate",
    "untrusted-root": "Foreign Root CA",
    "missing-intermediate": "does not send intermediate 'Sandbox Homelab Intermediate CA'",
    "short-intermediate": "intermediate 'Sandbox Expiring Intermediate' expires in 5.0 days",
    "offline": "connection refused",
    "stalled": "TLS handshake timed out",
}


@pytest.fixture(scope="module")
def cert_config(
    sandbox: Any, victoriametrics: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    tmp = tmp_path_factory.mktemp("certs")
    cfg["lab"]["state_dir"] = str(tmp / "state")
    cfg["systems"]["victoriametrics"] = {"url": victoriametrics.url}
    certs = cfg.setdefault("certificates", {})
    certs.update(handshake_timeout_s=1.0, connect_timeout_s=1.0)
    certs["groups"] = {"nodes": {"warning_days": 30, "critical_days": 14}}
    certs["renewal"] = {"task_timeout_s": 60}
    path = tmp / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    yield path


@pytest.fixture(scope="module")
def node_config(cert_config: Path) -> Path:
    """The same lab with only Proxmox, PBS and the CA as sources (renewal runs stay short)."""
    cfg = yaml.safe_load(cert_config.read_text())
    cfg["certificates"]["sources"] = {"config": False, "traefik": False, "technitium": False}
    path = cert_config.with_name("nodes.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _case(name: str) -> str:
    return name.split(".", 1)[0]


def test_every_sandbox_case_is_classified_with_its_reason(sandbox: Any, cert_config: Path) -> None:
    cases = sandbox.control("traefik", "cases")
    config = load_config(str(cert_config))
    assert config.systems.step_ca is not None and config.systems.step_ca.url is not None
    ca = ca_certificates.fn(
        StepCa(
            settings=StepCaSettings(url=config.systems.step_ca.url, tls=config.systems.step_ca.tls)
        )
    )
    assert ca.healthy and len(ca.roots) == 1 and len(ca.intermediates) == 1
    host, port = cases["entrypoint"].split(":")
    targets = [Target(name=h, address=host, port=int(port)) for h in cases["routers"]]
    targets += [
        Target(name=e.name, address=e.address or e.name, port=e.port)
        for e in config.inventory.endpoints
    ]
    anchors = TrustAnchors.from_pem(
        [r.encode() for r in ca.roots], [i.encode() for i in ca.intermediates]
    )
    results = check_endpoints(targets, anchors, config.certificates)
    expected = {**cases["routers"], **cases["direct"]}
    assert len(results) == len(expected) == len(REASONS)
    for r in results:
        assert r.status.value == expected[r.target.name], (r.target.name, r.reason)
        assert REASONS[_case(r.target.name)] in r.reason, (r.target.name, r.reason)


def test_traefik_discovery_follows_pages(cert_config: Path) -> None:
    config = load_config(str(cert_config))
    t = config.systems.traefik
    assert t is not None
    routers = http_routers.fn(
        TraefikApi(settings=TraefikSettings(url=t.url, entrypoint=t.entrypoint)), page_size=7
    )
    assert len(routers) == 42
    hosts = tls_hosts(routers)
    names = [h for h, _ in hosts]
    # Disabled and plain-HTTP routers are not probed; the two-host rule gives both hosts.
    assert "broken.lab.internal" not in names and "legacy.lab.internal" not in names
    assert {"grafana.lab.internal", "auth.lab.internal"} <= set(names)
    assert names.count("grafana.lab.internal") == 2  # grafana and grafana-api: merged later


def test_proxmox_node_discovery(sandbox: Any, cert_config: Path) -> None:
    config = load_config(str(cert_config))
    pve = config.systems.proxmox
    assert pve is not None
    block = ProxmoxCredentials(
        settings=ProxmoxSettings(url=pve.url, token_id=pve.token_id, nodes=pve.nodes, tls=pve.tls),
        token_secret=sandbox.secret("pve_token"),
    )
    nodes = {n.node: n for n in node_certificates.fn(block)}
    assert set(nodes) == {"pve1", "pve2", "pve3", "pve4"}
    assert nodes["pve1"].acme and nodes["pve2"].acme and not nodes["pve4"].acme
    files = {c.filename for c in nodes["pve2"].certificates}
    assert files == {"pve-root-ca.pem", "pve-ssl.pem", "pveproxy-ssl.pem"}
    assert all(n.url for n in nodes.values())


def _run(config: Path, **kw: Any) -> CertificateReport:
    from flows.certificates import certificates

    state = certificates(config=str(config), return_state=True, **kw)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, CertificateReport), report
    return report


def _cert_messages(sandbox: Any) -> list[str]:
    msgs = sandbox.control("telegram", "messages")["messages"]
    return [str(m.get("text", m)) for m in msgs if "Certificates" in str(m.get("text", m))]


def test_flow_reports_alerts_once_and_pushes_metrics(
    sandbox: Any, cert_config: Path, prefect_server: Any, victoriametrics: Any
) -> None:
    before = len(_cert_messages(sandbox))
    first = _run(cert_config)
    by_name = {e.target.name: e for e in first.endpoints}
    # Discovery: every Traefik TLS host, the config endpoints, nodes, PBS, the CA; grafana once.
    assert first.sources["traefik"] == 40 and first.duplicates == 1
    assert {"expiring-3d.lab.internal", "offline.lab.internal"} <= set(by_name)
    nodes = {e.target.node: e for e in first.endpoints if e.target.kind == "node"}
    assert set(nodes) == {"pve1", "pve2", "pve3", "pve4"}
    assert nodes["pve2"].status is CertStatus.CRITICAL  # 12 days < the group's 14
    assert any(e.target.kind == "pbs" for e in first.endpoints)
    assert sum(e.target.kind == "ca" for e in first.endpoints) == 2  # CA port + its root
    bad = [e for e in first.endpoints if e.status is not CertStatus.OK]
    assert len(first.alerts) == len(bad) == 12  # 9 router cases, 2 direct, pve2
    rows = first.table()
    assert rows[0]["status"] == "unreachable"  # nothing known sorts first, then by expiry
    lefts = [
        e.classification.seconds_left
        for e in first.by_expiry()
        if e.classification.seconds_left is not None
    ]
    assert lefts == sorted(lefts)
    assert len(_cert_messages(sandbox)) == before + 1

    # Metrics, read back from the real VictoriaMetrics.
    leaf = by_name["expiring-3d.lab.internal"].leaf
    assert leaf is not None
    q = 'labops_cert_not_after_timestamp_seconds{name="expiring-3d.lab.internal",role="leaf"}'
    series = victoriametrics.wait_for(q)
    assert abs(float(series[0]["value"][1]) - leaf.not_after.timestamp()) < 1
    errors = victoriametrics.wait_for('labops_cert_probe_error{name="offline.lab.internal"}')
    assert errors[0]["value"][1] == "1"
    assert victoriametrics.wait_for('labops_flow_last_run_timestamp_seconds{flow="certificates"}')

    # Same states again: no alert, no message.
    second = _run(cert_config)
    assert second.alerts == []
    assert len(_cert_messages(sandbox)) == before + 1

    # "Traefik renews" the 3-day certificate: exactly one change, one message.
    sandbox.control("traefik", "reissue", host="expiring-3d.lab.internal", lifetime_h=24, left_h=20)
    third = _run(cert_config)
    assert [(a.target.split(":")[0], a.kind.value, a.previous, a.status) for a in third.alerts] == [
        ("expiring-3d.lab.internal", "recovered", CertStatus.CRITICAL, CertStatus.OK)
    ]
    assert len(_cert_messages(sandbox)) == before + 2


def test_node_renewal_dry_run_failure_success(
    sandbox_clean: Any, node_config: Path, prefect_server: Any
) -> None:
    sandbox, cert_config = sandbox_clean, node_config
    dry = _run(cert_config, dry_run=True, renew=True)
    assert [(r.node, r.action) for r in dry.renewals] == [("pve2", "planned")]
    again = {
        e.target.node: e
        for e in _run(cert_config, renew=False).endpoints
        if e.target.kind == "node"
    }
    assert again["pve2"].status is CertStatus.CRITICAL  # the dry run changed nothing

    sandbox.set_faults("pve", extra={"acme_fail_nodes": ["pve2"]})
    failed = _run(cert_config, renew=True)
    assert [(r.node, r.action) for r in failed.renewals] == [("pve2", "failed")]
    assert "status: invalid" in failed.renewals[0].detail
    assert failed.failed and failed.failures[0].entity == "node pve2"

    sandbox.reset_faults()
    done = _run(cert_config, renew=True)
    assert [(r.node, r.action) for r in done.renewals] == [("pve2", "renewed")]
    r = done.renewals[0]
    assert r.old_not_after and r.new_not_after and r.new_not_after > r.old_not_after
    node = next(e for e in done.endpoints if e.target.node == "pve2")
    left = node.classification.seconds_left
    assert node.status is CertStatus.OK and left is not None and left > 80 * 86400


def test_technitium_records_become_targets_through_traefik(sandbox: Any, cert_config: Path) -> None:
    from blocks.factory import block_for
    from labops.certificates.discover import dns_targets
    from tasks.technitium import zone_records

    config = load_config(str(cert_config))
    records = zone_records.fn(block_for(config, "technitium"))  # type: ignore[arg-type]
    by_name = {r.name: r for r in records}
    assert by_name["pve1.lab.internal"].type == "A"
    traefik_ip = by_name["traefik.lab.internal"].value
    assert config.systems.traefik is not None
    entry = config.systems.traefik.entrypoint
    targets = dns_targets([(r.name, r.value) for r in records], [traefik_ip], entry, [])
    # Only names pointing at Traefik, reached at its entrypoint; the wildcard is not probed;
    # nothing is sent to the records' own (non-loopback) addresses.
    assert targets and all(f"{t.address}:{t.port}" == entry for t in targets)
    assert "traefik.lab.internal" in {t.name for t in targets}
    assert not any(t.name.startswith("*") for t in targets)


def test_sandbox_traefik_and_step_ca_answer_like_the_products(
    sandbox: Any, cert_config: Path
) -> None:
    import httpx

    config = load_config(str(cert_config))
    assert config.systems.traefik and config.systems.step_ca
    api = str(config.systems.traefik.url).rstrip("/")
    last = httpx.get(f"{api}/api/http/routers", params={"per_page": 40, "page": 2})
    assert last.status_code == 200 and last.headers["X-Next-Page"] == "1"
    assert isinstance(last.json(), list) and len(last.json()) == 2
    out = httpx.get(f"{api}/api/http/routers", params={"per_page": 40, "page": 9})
    assert out.status_code == 400 and out.json()["message"].startswith("invalid request")
    assert httpx.get(f"{api}/api/http/routers/nope@docker").status_code == 404
    assert httpx.get(f"{api}/api/overview").json()["http"]["routers"]["errors"] == 1
    assert "Version" in httpx.get(f"{api}/api/version").json()
    ca = str(config.systems.step_ca.url).rstrip("/")
    with httpx.Client(verify=str(sandbox.ca_path)) as client:
        assert client.get(f"{ca}/health").json() == {"status": "ok"}
        roots = client.get(f"{ca}/roots")
        assert roots.status_code == 201 and roots.json()["crts"][0].startswith("-----BEGIN")
        assert client.get(f"{ca}/intermediates").status_code == 201
        assert client.get(f"{ca}/roots.pem").text.startswith("-----BEGIN CERTIFICATE-----")
        directory = client.get(f"{ca}/acme/acme/directory").json()
        assert directory["newOrder"].endswith("/acme/acme/new-order")
        assert client.get(f"{ca}/acme/other/directory").status_code == 404


def test_a_failed_source_is_reported_and_the_rest_still_checked(
    sandbox_clean: Any, cert_config: Path, prefect_server: Any
) -> None:
    cfg = yaml.safe_load(cert_config.read_text())
    cfg["lab"]["state_dir"] = str(cert_config.parent / "state-faults")
    cfg["systems"]["traefik"]["retry"] = {"attempts": 1}
    path = cert_config.with_name("faults.yaml")
    path.write_text(yaml.safe_dump(cfg))
    assert _run(path).alerts  # the baseline: every problem is new once
    sandbox_clean.set_faults("traefik", error_rate=1.0)
    report = _run(path)
    assert report.failed
    assert [f.entity for f in report.failures] == ["traefik"]
    assert "discovery failed" in report.failures[0].reason
    kinds = {e.target.kind for e in report.endpoints}
    assert {"node", "pbs", "ca"} <= kinds  # everything else was still probed
    assert "offline.lab.internal" in {e.target.name for e in report.endpoints}
    assert report.alerts == []
    # Traefik answers again: its targets' states were kept, so nothing is notified twice.
    sandbox_clean.reset_faults()
    back = _run(path)
    assert back.failures == [] and back.alerts == []
    # still failed: the sandbox's offline and stalled endpoints could not be checked
    assert back.failed and len(back.unchecked()) == 2


def test_system_endpoints_are_judged_with_their_systems_ca_bundle(
    sandbox: Any, cert_config: Path, prefect_server: Any
) -> None:
    """No lab-wide root at all (no trusted_roots, no step-ca roots, no system store): the PVE
    nodes and PBS are still trusted through systems.proxmox/pbs.tls.ca_bundle, as their API
    clients trust them. The same node certificate reached as a plain service is untrusted with
    its issuer named (the server sends only the leaf), not an "incomplete chain". An endpoint
    that does not answer is a could-not-check row whose "since" survives the next run."""
    import socket
    from urllib.parse import urlsplit

    cfg = yaml.safe_load(cert_config.read_text())
    cfg["lab"]["state_dir"] = str(cert_config.parent / "state-bundles")
    certs = cfg["certificates"]
    certs.update(trusted_roots=[], use_system_store=False)
    certs["sources"] = {"traefik": False, "technitium": False, "step_ca": False}
    node = urlsplit(cfg["systems"]["proxmox"]["nodes"]["pve1"]["url"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone_port = int(s.getsockname()[1])  # closed again when the socket goes
    cfg["inventory"]["endpoints"] = [
        {"name": "localhost", "address": node.hostname, "port": node.port},
        {"name": "gone.lab.internal", "address": "127.0.0.1", "port": gone_port},
    ]
    path = cert_config.with_name("bundles.yaml")
    path.write_text(yaml.safe_dump(cfg))

    first = _run(path)
    own = [e for e in first.endpoints if e.target.kind in ("node", "pbs")]
    assert {e.target.kind for e in own} == {"node", "pbs"}
    for e in own:
        assert e.status not in (CertStatus.UNTRUSTED, CertStatus.INCOMPLETE_CHAIN), (
            e.target.label,
            e.reason,
        )
        assert e.anchor is not None and e.anchor.subject == "Sandbox Homelab Root CA"
    service = next(e for e in first.endpoints if e.target.name == "localhost")
    assert service.status is CertStatus.UNTRUSTED
    assert "untrusted (issuer 'Sandbox Homelab Root CA' unknown)" in service.reason

    def gone_row(report: CertificateReport) -> dict[str, Any]:
        return next(r for r in report.table() if r["target"].startswith("gone.lab.internal"))

    row = gone_row(first)
    assert (row["status"], row["severity"], row["check"]) == ("unreachable", "warning", "unknown")
    assert row["could not check"] == "unreachable: connection refused"
    assert row["unknown since"]
    assert gone_row(_run(path))["unknown since"] == row["unknown since"]  # the first failure


def test_the_run_leaves_its_progress_artifact(
    sandbox: Any, node_config: Path, prefect_server: Any
) -> None:
    """Every endpoint to probe is counted in the UI's progress artifact as its batch ends."""
    import re

    from flows.certificates import certificates
    from tasks.progress import progress_key
    from tests.core.test_progress import run_artifact

    state = certificates(config=str(node_config), return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, CertificateReport), report
    lab = load_config(node_config).lab.name
    progress = run_artifact(state.state_details.flow_run_id, progress_key(lab, "certificates"))
    assert float(progress.data) == 100.0
    counted = re.fullmatch(r"(\d+) of (\d+) endpoints", progress.description)
    assert counted and counted[1] == counted[2] and int(counted[1]) > 0, progress.description

    # The run's log counts endpoints the way the report's title does (probed plus the nodes
    # read from the API), not only the probed ones.
    from tests.core.test_quiet_failures import flow_run_logs

    title = report.markdown().splitlines()[0]
    assert title == f"# Certificates: {len(report.endpoints)} endpoints", title
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    logs = flow_run_logs(run_id, want="certificates: ")
    done = [m for m in logs if m.startswith("certificates: ")]
    assert done and done[-1].startswith(f"certificates: {len(report.endpoints)} endpoints"), done
