"""Chain validation on real certificates (made by the sandbox CA helper), no network: trusted,
incomplete only with a known path to a trusted root, untrusted with the unknown issuer named, and
a system's own CA bundle trusted for that system's endpoints."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificates

from labops.certificates.chain import TrustAnchors, cert_info, check_chain
from labops.certificates.check import judge
from labops.certificates.models import ChainVerdict, Target
from labops.certificates.probe import RawProbe
from labops.config.policies.certificates import CertificatePolicy
from sandbox.tls import SandboxCA, self_signed_server_cert

NOW = dt.datetime.now(dt.UTC)
ROOT = SandboxCA.create("Test Root")
INTER = ROOT.issue_intermediate("Test Intermediate", not_before=NOW - dt.timedelta(days=400))


def der_chain(pem: bytes) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in load_pem_x509_certificates(pem)]


def anchors(with_intermediates: bool = False) -> TrustAnchors:
    return TrustAnchors(
        [ROOT.cert], [INTER.cert] if with_intermediates else [], use_system_store=False
    )


def test_trusted_chain_reports_its_root() -> None:
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=INTER)
    check = check_chain("a.lab", der_chain(leaf.chain_pem), anchors())
    assert check.verdict is ChainVerdict.TRUSTED and check.hostname_ok
    assert check.anchor is not None and check.anchor.subject == "Test Root"


def test_wrong_name_is_still_trusted_but_mismatched() -> None:
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=INTER)
    check = check_chain("b.lab", der_chain(leaf.chain_pem), anchors())
    assert check.verdict is ChainVerdict.TRUSTED and not check.hostname_ok


def test_expired_leaf_keeps_its_trust() -> None:
    leaf = ROOT.issue_server_cert(
        ["a.lab"], issuer=INTER, not_before=NOW - dt.timedelta(days=100), days=10
    )
    check = check_chain("a.lab", der_chain(leaf.chain_pem), anchors())
    assert check.verdict is ChainVerdict.TRUSTED


def test_missing_intermediate_with_and_without_the_cas_list() -> None:
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=INTER)
    only_leaf = [leaf.cert.public_bytes(Encoding.DER)]
    known = check_chain("a.lab", only_leaf, anchors(with_intermediates=True))
    assert known.verdict is ChainVerdict.INCOMPLETE
    assert known.completed_with == ["Test Intermediate"]
    # Without the CA's list nothing says the unsent issuer leads to a trusted root: untrusted.
    unknown = check_chain("a.lab", only_leaf, anchors())
    assert unknown.verdict is ChainVerdict.UNKNOWN_ISSUER
    assert unknown.detail == "issuer 'Test Intermediate' unknown"


def test_self_signed_and_unknown_root() -> None:
    own = self_signed_server_cert(["a.lab"])
    check = check_chain("a.lab", der_chain(own.chain_pem), anchors())
    assert check.verdict is ChainVerdict.SELF_SIGNED
    foreign = SandboxCA.create("Other Root").issue_intermediate("Other Issuing")
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=foreign)
    check = check_chain("a.lab", der_chain(leaf.chain_pem), anchors())
    assert check.verdict is ChainVerdict.UNKNOWN_ISSUER
    assert check.detail == "issuer 'Other Root' unknown"
    # The foreign root sent along: a root we do not trust, named as such.
    sent = [*der_chain(leaf.chain_pem), foreign.root.cert.public_bytes(Encoding.DER)]
    check = check_chain("a.lab", sent, anchors())
    assert check.verdict is ChainVerdict.UNKNOWN_ROOT and "Other Root" in check.detail


def _verdict(chain: list[bytes], trust: TrustAnchors) -> tuple[str, str]:
    raw = RawProbe(target=Target(name="a.lab", address="127.0.0.1"), chain_der=chain)
    result = judge(raw, trust, CertificatePolicy(), NOW)
    return result.status.value, result.reason


def test_unknown_issuer_is_untrusted_and_incomplete_needs_a_path_to_a_trusted_root() -> None:
    """A leaf whose issuer is neither sent nor trusted: "untrusted (issuer X unknown)".
    "incomplete chain" only when a known intermediate links it to a trusted root."""
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=INTER)
    only_leaf = [leaf.cert.public_bytes(Encoding.DER)]
    status, reason = _verdict(only_leaf, anchors())
    assert status == "untrusted", reason
    assert reason.startswith("untrusted (issuer 'Test Intermediate' unknown)"), reason
    status, reason = _verdict(only_leaf, anchors(with_intermediates=True))
    assert status == "incomplete chain", reason
    assert "does not send intermediate 'Test Intermediate'" in reason
    # The intermediate is known but its root is not trusted: no path, so untrusted, not
    # "incomplete".
    stranger = TrustAnchors([], [INTER.cert], use_system_store=False)
    status, reason = _verdict(only_leaf, stranger)
    assert status == "untrusted" and "issuer 'Test Intermediate' unknown" in reason, reason
    # Leaf and intermediate sent, root unknown: its issuer is the one named.
    status, reason = _verdict(der_chain(leaf.chain_pem), stranger)
    assert status == "untrusted" and "issuer 'Test Root' unknown" in reason, reason


def test_a_systems_own_bundle_is_trusted_for_its_endpoints_only() -> None:
    """A PVE node serves a leaf of its cluster CA alone (as pveproxy does); the CA is in
    systems.proxmox.tls.ca_bundle. The node's own endpoint is judged with that bundle, as the
    API client trusts it; the same certificate on another endpoint is not."""
    import tempfile
    from pathlib import Path

    from labops.certificates.check import anchors_per_bundle, lab_anchors

    cluster = SandboxCA.create("Proxmox Virtual Environment")
    node_leaf = cluster.issue_server_cert(["pve1.lab"], ["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "pve-root-ca.pem"
        bundle.write_bytes(cluster.cert_pem)
        policy = CertificatePolicy(use_system_store=False)
        node = Target(name="pve1.lab", address="127.0.0.1", kind="node", ca_bundle=str(bundle))
        other = Target(name="pve1.lab", address="127.0.0.2", kind="service")
        base = lab_anchors([ROOT.cert_pem.decode()], [], policy)
        per_bundle = anchors_per_bundle([node, other], [ROOT.cert_pem.decode()], [], policy)
        assert list(per_bundle) == [str(bundle)]
    chain = der_chain(node_leaf.chain_pem)
    for target, trust, want in (
        (node, per_bundle[node.ca_bundle or ""], "ok"),
        (other, base, "untrusted"),
    ):
        result = judge(RawProbe(target=target, chain_der=chain), trust, policy, NOW)
        assert result.status.value == want, (target.kind, result.reason)
    assert "issuer 'Proxmox Virtual Environment' unknown" in result.reason


def test_cert_facts() -> None:
    leaf = ROOT.issue_server_cert(["a.lab"], ["127.0.0.1"], issuer=INTER, key_type="rsa")
    info = cert_info(leaf.cert.public_bytes(Encoding.DER))
    assert info.key_type == "RSA" and info.key_bits == 2048
    assert info.dns_names == ["a.lab"] and info.ip_addresses == ["127.0.0.1"]
    assert info.signature_algorithm == "ecdsa-with-sha256"
    assert info.issuer == "Test Intermediate" and not info.is_ca
