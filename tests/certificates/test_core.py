"""The certificates run's decisions, without I/O: which endpoints it checks, what is read from
APIs instead, what a renewal came to, what it remembers between runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labops.certificates.classify import CertStatus
from labops.certificates.inventory import (
    NODE_GROUP,
    api_only_nodes,
    ca_roots,
    lab_targets,
    missing_roots,
    unread_nodes,
)
from labops.certificates.memory import remember
from labops.certificates.pem import pem_to_der
from labops.certificates.pve import PveCertificateInfo
from labops.certificates.renewed import RenewalOutcome, planned, settle
from labops.certificates.report import CertificateReport, EndpointResult
from labops.certificates.sources import CaBundle, Discovered, DnsRecord, NodeCertificates
from labops.config import LabopsConfig
from labops.config.policies.certificates import CertificatePolicy
from tests.core.test_outcome import cert, endpoint

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def self_signed_pem(days_left: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lab Root CA")])
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=365))
        .not_valid_after(NOW + timedelta(days=days_left))
        .sign(key, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM).decode()


def lab(**systems: object) -> LabopsConfig:
    return LabopsConfig.model_validate(
        {
            "lab": {"name": "home"},
            "inventory": {"endpoints": [{"name": "grafana.lab", "address": "10.0.0.2"}]},
            "certificates": {"dns": {"traefik_addresses": ["10.0.0.2"]}},
            "systems": systems,
        }
    )


def test_targets_come_from_the_config_and_every_source_that_answered_each_once() -> None:
    config = lab(
        pbs={"url": "https://pbs.lab:8007", "token_id": "a@pbs!b", "token_secret": "env:X"},
        step_ca={"url": "https://ca.lab:9000"},
    )
    found = Discovered(
        technitium=[
            DnsRecord(name="grafana.lab", type="A", value="10.0.0.2"),
            DnsRecord(name="old.lab", type="A", value="10.0.0.2", disabled=True),
            DnsRecord(name="alias.lab", type="CNAME", value="grafana.lab"),
        ],
        proxmox=[
            NodeCertificates(node="pve1", online=True, url="https://pve1.lab:8006"),
            NodeCertificates(node="pve2", online=False, url="https://pve2.lab:8006"),
            NodeCertificates(node="pve3", online=True),
        ],
        step_ca=CaBundle(healthy=True),
    )
    inventory = lab_targets(config, found, "10.0.0.2:443")
    names = [(t.name, t.port, t.kind) for t in inventory.targets]
    assert ("pve1.lab", 8006, "node") in names and ("pbs.lab", 8007, "pbs") in names
    assert ("ca.lab", 9000, "ca") in names
    assert not [n for n in names if n[0] in ("old.lab", "alias.lab", "pve2.lab")]
    assert inventory.skipped == ["node pve2: offline, certificate not checked"]
    # traefik did not answer: its entrypoint does not count, DNS names go direct (none here)
    assert inventory.sources.get("traefik") is None
    node = next(t for t in inventory.targets if t.kind == "node")
    assert node.group == NODE_GROUP and node.node == "pve1"


def test_the_ca_endpoint_is_checked_only_when_the_ca_answered() -> None:
    config = lab(step_ca={"url": "https://ca.lab:9000"})
    assert not [t for t in lab_targets(config, Discovered(), None).targets if t.kind == "ca"]


def test_a_node_without_a_probe_url_is_judged_from_the_pem_its_api_serves() -> None:
    pem = self_signed_pem(30)
    served = PveCertificateInfo.model_validate({"filename": "pveproxy-ssl.pem", "pem": pem})
    nodes = [
        NodeCertificates(node="pve3", online=True, certificates=[served]),
        NodeCertificates(node="pve1", online=True, url="https://pve1.lab", certificates=[served]),
        NodeCertificates(node="pve2", online=False, certificates=[served]),
        NodeCertificates(node="pve4", online=True),
    ]
    [(target, got)] = api_only_nodes(nodes, "/etc/pve-ca.pem")
    assert (target.name, target.port, target.ca_bundle, got) == (
        "pve3",
        8006,
        "/etc/pve-ca.pem",
        pem,
    )
    assert target.sources == ("proxmox-api",) and target.group == NODE_GROUP


def test_the_cas_roots_are_judged_by_their_dates() -> None:
    pem = self_signed_pem(3650)
    assert pem_to_der(pem) == x509.load_pem_x509_certificate(pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    [root] = ca_roots([pem], CertificatePolicy(), NOW)
    assert root.target.name == "step-ca root 1" and root.status is CertStatus.OK


def test_a_missing_trusted_root_and_an_unread_node_are_failures() -> None:
    policy = CertificatePolicy(trusted_roots=[Path("/nonexistent/root.pem")])
    assert [f.entity for f in missing_roots(policy)] == ["certificates.trusted_roots"]
    nodes = [
        NodeCertificates(node="pve1", online=True, error="500"),
        NodeCertificates(node="b", online=True),
    ]
    [failure] = unread_nodes(nodes)
    assert (failure.entity, failure.reason) == ("node pve1", "certificates/info: 500")


def node_endpoint(days_left: float, status: CertStatus) -> EndpointResult:
    result = endpoint("pve1.lab", status)
    target = result.target.model_copy(update={"kind": "node", "node": "pve1"})
    return result.model_copy(update={"target": target, "chain": [cert("pve1.lab", days_left)]})


def test_a_renewal_counts_only_when_the_node_serves_a_later_certificate() -> None:
    due = node_endpoint(3, CertStatus.CRITICAL)
    line = planned(due)
    assert line.action == "planned" and line.detail.startswith("would renew (critical")

    ok = RenewalOutcome(node="pve1", upid="UPID:1", ok=True, detail="task OK")
    line, failure = settle(due, ok, node_endpoint(90, CertStatus.OK))
    assert line.action == "renewed" and failure is None and line.detail == "now ok"
    assert line.new_not_after is not None and line.old_not_after is not None
    assert line.new_not_after > line.old_not_after

    line, failure = settle(due, ok, node_endpoint(3, CertStatus.CRITICAL))
    assert line.action == "failed" and failure is not None
    assert failure.reason == "renewed certificate not served"

    refused = RenewalOutcome(node="pve1", ok=False, detail="refused: 403")
    line, failure = settle(due, refused, None)
    assert line.action == "failed" and failure is not None
    assert failure.reason == "certificate renewal failed: refused: 403"


def test_what_a_failed_run_hid_keeps_its_last_state() -> None:
    first = CertificateReport(
        endpoints=[endpoint("a.lab", CertStatus.WARNING), endpoint("b.lab", CertStatus.OK)]
    )
    states = remember(first, None, NOW, 24)
    assert [a.target for a in first.alerts] == ["a.lab:443 via 10.0.0.9"]
    second = CertificateReport(endpoints=[endpoint("b.lab", CertStatus.UNREACHABLE)])
    later = NOW + timedelta(hours=1)
    again = remember(second, states, later, 24)
    assert set(again.targets) == set(states.targets)  # a.lab kept: its source hid it
    assert second.endpoints[0].unknown_since == later
