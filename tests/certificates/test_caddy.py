"""A certificate issued over real ACME by Caddy's acme_server (step-ca's library), checked by
the certificates flow: trusted through the CA's root, short-lived and judged by its lifetime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labops.certificates.classify import CertStatus
from labops.certificates.report import CertificateReport


def test_flow_checks_a_real_acme_certificate(
    caddy_acme: Any, prefect_server: Any, tmp_path: Path
) -> None:
    from flows.certificates import certificates

    config = {
        "lab": {"name": "caddy", "state_dir": str(tmp_path / "state")},
        "inventory": {
            "discover_from_proxmox": False,
            "endpoints": [
                {
                    "name": caddy_acme.site_name,
                    "address": "127.0.0.1",
                    "port": caddy_acme.site_port,
                },
                # The same endpoint named twice (e.g. config and DNS): probed once.
                {
                    "name": caddy_acme.site_name,
                    "address": "127.0.0.1",
                    "port": caddy_acme.site_port,
                    "group": "acme",
                },
            ],
        },
        "certificates": {"trusted_roots": [str(caddy_acme.root_pem)], "use_system_store": False},
    }
    path = tmp_path / "labops.yaml"
    path.write_text(yaml.safe_dump(config))
    state = certificates(config=str(path), return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, CertificateReport)
    assert report.duplicates == 1 and len(report.endpoints) == 1
    result = report.endpoints[0]
    assert result.status is CertStatus.OK, result.reason
    leaf = result.leaf
    assert leaf is not None and leaf.dns_names == ["localhost"]
    assert "labops test ACME CA" in leaf.issuer and "Intermediate" in leaf.issuer
    lifetime_h = leaf.lifetime_s / 3600
    assert 1 <= lifetime_h <= 24  # Caddy's ACME CA issues 12 h certificates
    assert result.anchor is not None and result.anchor.self_signed
    assert "Root" in result.anchor.subject
    # Judged against its own lifetime: the renewal point is 2/3 into those hours.
    due = result.classification.renewal_due
    assert due is not None
    assert abs((due - leaf.not_before).total_seconds() - leaf.lifetime_s * 2 / 3) < 2


def test_a_real_acme_chain_without_its_root_names_the_unknown_issuer(caddy_acme: Any) -> None:
    """Caddy serves leaf + intermediate; with its root not trusted, the endpoint is untrusted
    with that root named as the unknown issuer (not "incomplete": no path to a trusted root);
    with the root as the endpoint's system CA bundle it is trusted."""
    from labops.certificates.check import anchors_per_bundle, check_endpoints, lab_anchors
    from labops.certificates.models import Target
    from labops.config.policies.certificates import CertificatePolicy

    policy = CertificatePolicy(use_system_store=False)
    site = {"name": caddy_acme.site_name, "address": "127.0.0.1", "port": caddy_acme.site_port}
    service = Target(**site)
    own = Target(**site, kind="ca", ca_bundle=str(caddy_acme.root_pem), sources=("step_ca",))
    base = lab_anchors([], [], policy)
    bundles = anchors_per_bundle([service, own], [], [], policy)
    untrusted, trusted = check_endpoints([service, own], base, policy, bundles=bundles)
    assert untrusted.status is CertStatus.UNTRUSTED, untrusted.reason
    head = untrusted.reason.split(")")[0]
    assert head.startswith("untrusted (issuer 'labops test ACME CA") and "Root' unknown" in head, (
        untrusted.reason
    )
    assert trusted.status is CertStatus.OK, trusted.reason
