"""Pure parts of the certificates flow: classifier (fixture files), rules, de-dup, alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labops.certificates.alerts import AlertKind, CertStates, plan_alerts
from labops.certificates.chain import hostname_matches
from labops.certificates.classify import CertStatus, classify
from labops.certificates.discover import dns_targets, split_hostport, traefik_targets
from labops.certificates.models import CertInfo, ChainCheck, Target
from labops.certificates.targets import merge_targets
from labops.config.policies.certificates import CertificatePolicy, Thresholds
from labops.models.traefik import parse_routers, rule_hosts, tls_hosts

DATA = Path(__file__).parents[1] / "data" / "certs"
CASES = sorted((DATA / "classify").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_classify_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    verdict = classify(
        case["name"],
        [CertInfo.model_validate(c) for c in case["chain"]],
        ChainCheck.model_validate(case["check"]) if case["check"] else None,
        Thresholds(),
        datetime.fromisoformat(case["now"]),
        error=case["error"],
    )
    assert verdict.status.value == case["expect"]["status"], verdict.reason
    for text in case["expect"]["reason_contains"]:
        assert text in verdict.reason
    if verdict.status is CertStatus.OK:
        assert verdict.reason == "ok"


def test_unreachable_is_never_ok() -> None:
    v = classify("x.lab", [], None, Thresholds(), datetime.now(UTC), error=None)
    assert v.status is CertStatus.UNREACHABLE


def test_days_threshold_not_applied_to_short_lived() -> None:
    # A 24 h certificate with 20 h left is far inside "21 days", yet fine for its lifetime.
    case = json.loads((DATA / "classify" / "short-lived-20h-left.json").read_text())
    leaf = CertInfo.model_validate(case["chain"][0])
    v = classify("svc.lab", [leaf], None, Thresholds(), datetime.fromisoformat(case["now"]))
    assert v.status is CertStatus.OK
    strict = Thresholds(days_max_lifetime_fraction=1.0, warning_days=0.9, critical_days=0.5)
    v = classify("svc.lab", [leaf], None, strict, datetime.fromisoformat(case["now"]))
    assert v.status is CertStatus.WARNING


def test_thresholds_reject_inverted_order() -> None:
    with pytest.raises(ValueError, match="critical_days"):
        Thresholds(warning_days=5, critical_days=10)


def test_thresholds_per_target_then_group() -> None:
    policy = CertificatePolicy(
        groups={"nodes": Thresholds(warning_days=40, critical_days=14)},
        targets={"pve1.lab": Thresholds(warning_days=50, critical_days=30)},
    )
    assert policy.thresholds_for("pve1.lab", "nodes").critical_days == 30
    assert policy.thresholds_for("pve2.lab", "nodes").critical_days == 14
    assert policy.thresholds_for("x.lab", None).critical_days == 7


def test_traefik_rules_from_fixture() -> None:
    data = json.loads((DATA / "traefik_routers.json").read_text())
    routers = parse_routers(data["routers"])
    assert [list(x) for x in tls_hosts(routers)] == data["expected_tls_hosts"]
    assert rule_hosts(data["hostsni"]["rule"]) == data["hostsni"]["hosts"]


@pytest.mark.parametrize(
    ("rule", "hosts"),
    [
        ("Host(`a.lab`)", ["a.lab"]),
        ("Host(`a.lab`) || Host(`b.lab`)", ["a.lab", "b.lab"]),
        ("Host(`a.lab`) && PathPrefix(`/api`)", ["a.lab"]),
        ("Host(`a.lab`,`b.lab`)", ["a.lab", "b.lab"]),
        ("(Host(`a.lab`) || Host(`a.lab`)) && Method(`GET`)", ["a.lab"]),
        ("HostSNI(`db.lab`)", ["db.lab"]),
        ("HostRegexp(`{sub:[a-z]+}.lab`)", []),
        ("!Host(`a.lab`)", []),
        ("PathPrefix(`/`)", []),
    ],
)
def test_rule_hosts(rule: str, hosts: list[str]) -> None:
    assert rule_hosts(rule) == hosts


def test_bad_router_names_itself() -> None:
    with pytest.raises(ValueError, match="traefik router r1@docker"):
        parse_routers([{"name": "r1@docker", "rule": 5, "tls": "yes"}])


def test_hostname_matching() -> None:
    assert hostname_matches("a.lab", ["A.LAB"], [])
    assert hostname_matches("x.apps.lab", ["*.apps.lab"], [])
    assert not hostname_matches("y.x.apps.lab", ["*.apps.lab"], [])
    assert not hostname_matches("apps.lab", ["*.apps.lab"], [])
    assert hostname_matches("127.0.0.1", [], ["127.0.0.1"])
    assert not hostname_matches("127.0.0.2", ["127.0.0.2"], [])


def test_dedup_keeps_every_source_and_the_node_kind() -> None:
    found = [
        Target(name="Grafana.lab", address="10.0.0.2", port=443, sources=("traefik:grafana",)),
        Target(name="grafana.lab", address="10.0.0.2", port=443, sources=("traefik:api",)),
        Target(name="grafana.lab", address="10.0.0.2", port=443, sources=("config",), group="web"),
        Target(name="grafana.lab", address="10.0.0.3", port=443, sources=("dns",)),
        Target(name="pve1.lab", address="pve1.lab", port=8006, sources=("config",)),
        Target(
            name="pve1.lab",
            address="pve1.lab",
            port=8006,
            sources=("proxmox",),
            kind="node",
            node="pve1",
        ),
    ]
    merged, dupes = merge_targets(found)
    assert dupes == 3 and len(merged) == 3
    assert merged[0].sources == ("traefik:grafana", "traefik:api", "config")
    assert merged[0].group == "web"
    assert merged[2].kind == "node" and merged[2].node == "pve1"


def test_discovery_helpers() -> None:
    assert split_hostport("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert split_hostport("[::1]:443") == ("::1", 443)
    assert split_hostport("lab") == ("lab", 443)
    with pytest.raises(ValueError, match="invalid port"):
        split_hostport("lab:http")
    routers = parse_routers(json.loads((DATA / "traefik_routers.json").read_text())["routers"])
    targets = traefik_targets(routers, "10.0.0.2:443")
    assert {t.address for t in targets} == {"10.0.0.2"}
    dns = dns_targets(
        [("app.lab", "10.0.0.2"), ("db.lab", "10.0.0.9"), ("*.lab", "10.0.0.2")],
        ["10.0.0.2"],
        "10.0.0.2:443",
        [],
    )
    assert [(t.name, t.address) for t in dns] == [("app.lab", "10.0.0.2")]
    dns = dns_targets([("db.lab", "10.0.0.9")], [], None, [8443])
    assert [(t.address, t.port) for t in dns] == [("10.0.0.9", 8443)]


def test_alerts_only_on_change_and_daily_for_critical() -> None:
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    run1 = {
        "a": ("a", CertStatus.OK, "ok"),
        "b": ("b", CertStatus.WARNING, "w"),
        "c": ("c", CertStatus.CRITICAL, "c"),
    }
    alerts, state = plan_alerts(None, run1, t0)
    assert sorted(a.key for a in alerts) == ["b", "c"]
    assert all(a.kind is AlertKind.NEW for a in alerts)
    # Same states an hour later: nothing.
    alerts, state = plan_alerts(state, run1, t0 + timedelta(hours=1))
    assert alerts == []
    # A day later: the critical one is reminded, the warning is not repeated.
    alerts, state = plan_alerts(state, run1, t0 + timedelta(hours=25))
    assert [(a.key, a.kind) for a in alerts] == [("c", AlertKind.REMINDER)]
    # b crosses into critical, c recovers.
    run2 = {**run1, "b": ("b", CertStatus.CRITICAL, "c"), "c": ("c", CertStatus.OK, "ok")}
    alerts, state = plan_alerts(
        CertStates.model_validate(state.model_dump()), run2, t0 + timedelta(hours=26)
    )
    kinds = {a.key: (a.kind, a.previous) for a in alerts}
    assert kinds == {
        "b": (AlertKind.CHANGED, CertStatus.WARNING),
        "c": (AlertKind.RECOVERED, CertStatus.CRITICAL),
    }
