"""Chain validation on real certificates (made by the sandbox CA helper), no network."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificates

from labops.tls.chain import TrustAnchors, cert_info, check_chain
from labops.tls.models import ChainVerdict
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
    unknown = check_chain("a.lab", only_leaf, anchors())
    assert unknown.verdict is ChainVerdict.INCOMPLETE
    assert "Test Intermediate" in unknown.detail


def test_self_signed_and_unknown_root() -> None:
    own = self_signed_server_cert(["a.lab"])
    check = check_chain("a.lab", der_chain(own.chain_pem), anchors())
    assert check.verdict is ChainVerdict.SELF_SIGNED
    foreign = SandboxCA.create("Other Root").issue_intermediate("Other Issuing")
    leaf = ROOT.issue_server_cert(["a.lab"], issuer=foreign)
    check = check_chain("a.lab", der_chain(leaf.chain_pem), anchors())
    assert check.verdict is ChainVerdict.UNKNOWN_ROOT and "Other Root" in check.detail


def test_cert_facts() -> None:
    leaf = ROOT.issue_server_cert(["a.lab"], ["127.0.0.1"], issuer=INTER, key_type="rsa")
    info = cert_info(leaf.cert.public_bytes(Encoding.DER))
    assert info.key_type == "RSA" and info.key_bits == 2048
    assert info.dns_names == ["a.lab"] and info.ip_addresses == ["127.0.0.1"]
    assert info.signature_algorithm == "ecdsa-with-sha256"
    assert info.issuer == "Test Intermediate" and not info.is_ca
