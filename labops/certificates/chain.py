"""Certificates as facts, and validation of a served chain against the lab's roots.

Validation uses ``cryptography.x509.verification`` (RFC 5280 path building, cryptography >= 42)
against the configured internal roots plus the system store. Trust is judged apart from time and
from the host name: expiry and name are the classifier's business, so the chain is verified at a
moment when every served certificate is valid and for a name the leaf carries. That way one
endpoint gets every finding (expired *and* untrusted) instead of the first error.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from labops.certificates.models import CertInfo, ChainCheck, ChainVerdict

_SIG_NAMES = {
    v: k.lower().strip("_").replace("_", "-")
    for k, v in vars(SignatureAlgorithmOID).items()
    if isinstance(v, x509.ObjectIdentifier)
}


@functools.lru_cache(maxsize=4096)
def load_der(der: bytes) -> x509.Certificate:
    """Parse once: a lab's services share intermediates and roots, so the cache hits often."""
    return x509.load_der_x509_certificate(der)


def _name(n: x509.Name) -> str:
    cn = n.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else n.rfc4514_string()


def _key(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return [], []
    assert isinstance(ext, x509.SubjectAlternativeName)
    return (
        [str(v) for v in ext.get_values_for_type(x509.DNSName)],
        [str(v) for v in ext.get_values_for_type(x509.IPAddress)],
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(bc, "ca", False))


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def cert_info(der: bytes) -> CertInfo:
    """The facts of a DER certificate (cached: shared intermediates are parsed once)."""
    cert = load_der(der)
    dns, ips = _sans(cert)
    key_type, bits = _key(cert)
    return CertInfo(
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        serial=format(cert.serial_number, "x"),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        is_ca=_is_ca(cert),
        self_signed=_self_signed(cert),
        key_type=key_type,
        key_bits=bits,
        signature_algorithm=_SIG_NAMES.get(
            cert.signature_algorithm_oid, cert.signature_algorithm_oid.dotted_string
        ),
    )


def hostname_matches(name: str, dns_names: Iterable[str], ips: Iterable[str]) -> bool:
    """RFC 6125 matching: exact names, or a ``*.`` wildcard covering exactly one left label."""
    name = name.strip().rstrip(".").lower()
    try:
        addr = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        addr = None
    if addr is not None:
        return any(ipaddress.ip_address(ip) == addr for ip in ips)
    for pattern in dns_names:
        p = pattern.rstrip(".").lower()
        if p == name:
            return True
        if p.startswith("*.") and "." in name:
            head, rest = name.split(".", 1)
            if head and rest == p[2:] and rest.count(".") >= 1:
                return True
    return False


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Certificates of a PEM bundle; blocks that do not parse are skipped, not fatal."""
    import warnings

    out: list[x509.Certificate] = []
    marker = b"-----END CERTIFICATE-----"
    for block in data.split(marker):
        if b"-----BEGIN CERTIFICATE-----" not in block:
            continue
        try:
            with warnings.catch_warnings():  # old roots with non-positive serials
                warnings.simplefilter("ignore")
                out.append(x509.load_pem_x509_certificate(block.strip() + b"\n" + marker + b"\n"))
        except ValueError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def system_roots() -> tuple[x509.Certificate, ...]:
    """The machine's trust store (the file OpenSSL uses), parsed once per process."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return tuple(load_pem_bundle(Path(candidate).read_bytes()))
    return ()


class TrustAnchors:
    """Roots to trust (internal ones plus, by default, the system store) and intermediates the
    lab's CA publishes (used to tell "incomplete chain" from "untrusted")."""

    def __init__(
        self,
        roots: Iterable[x509.Certificate] = (),
        intermediates: Iterable[x509.Certificate] = (),
        use_system_store: bool = True,
    ) -> None:
        own = list(roots)
        self.roots = own + (list(system_roots()) if use_system_store else [])
        self.intermediates = list(intermediates)
        self.root_fingerprints = {c.fingerprint(hashes.SHA256()) for c in self.roots}
        self._store = Store(self.roots) if self.roots else None
        self._subjects = {c.subject for c in self.roots}

    @classmethod
    def from_pem(
        cls,
        roots_pem: Iterable[bytes] = (),
        intermediates_pem: Iterable[bytes] = (),
        use_system_store: bool = True,
    ) -> TrustAnchors:
        roots = [c for pem in roots_pem for c in load_pem_bundle(pem)]
        inter = [c for pem in intermediates_pem for c in load_pem_bundle(pem)]
        return cls(roots, inter, use_system_store)

    def knows_root(self, name: x509.Name) -> bool:
        return name in self._subjects

    def verify(
        self,
        leaf: x509.Certificate,
        intermediates: list[x509.Certificate],
        at: dt.datetime,
        facts: CertInfo | None = None,
    ) -> list[x509.Certificate]:
        """The verified path (leaf ... root); raises ``VerificationError``."""
        if self._store is None:
            raise VerificationError("no trusted roots configured")
        builder = PolicyBuilder().store(self._store).time(at)
        subject = _subject_of(facts or cert_info(leaf.public_bytes(serialization.Encoding.DER)))
        verifier = builder.build_server_verifier(subject)
        return list(verifier.verify(leaf, intermediates))


def _subject_of(leaf: CertInfo) -> x509.verification.Subject:
    dns, ips = leaf.dns_names, leaf.ip_addresses
    if dns:
        # A wildcard SAN is matched by any name in its domain.
        return x509.DNSName(dns[0].replace("*", "wildcard", 1))
    if ips:
        return x509.IPAddress(ipaddress.ip_address(ips[0]))
    # No SAN: RFC 5280 path building still works; any name will do, the verifier rejects it and
    # the error text explains.
    return x509.DNSName("no-subject-alternative-name.invalid")


def _check_time(chain: list[x509.Certificate], now: dt.datetime) -> dt.datetime:
    """``now`` if every served certificate is valid now, else a moment when they all are."""
    if all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain):
        return now
    latest_start = max(c.not_valid_before_utc for c in chain)
    earliest_end = min(c.not_valid_after_utc for c in chain)
    if latest_start <= earliest_end:
        return latest_start + (earliest_end - latest_start) / 2
    return now


def check_chain(
    name: str, chain_der: list[bytes], anchors: TrustAnchors, now: dt.datetime | None = None
) -> ChainCheck:
    """Trust verdict of a served chain (leaf first) and whether the leaf covers ``name``."""
    now = now or dt.datetime.now(dt.UTC)
    certs = [load_der(d) for d in chain_der]
    leaf = certs[0]
    facts = cert_info(chain_der[0])  # cached: SANs parsed once per certificate
    hostname_ok = hostname_matches(name, facts.dns_names, facts.ip_addresses)
    at = _check_time(certs, now)
    served = certs[1:]
    try:
        path = anchors.verify(leaf, served, at, facts)
        return ChainCheck(
            verdict=ChainVerdict.TRUSTED, hostname_ok=hostname_ok, anchor=_anchor(path, certs)
        )
    except VerificationError as exc:
        first_error = str(exc)
    if "not valid at validation time" in first_error:
        # No moment when the whole path is valid (an expired leaf whose root is younger than
        # it): judge trust by signatures alone; the classifier reports the dates.
        signed = _signed_path(certs, anchors)
        if signed is not None:
            return ChainCheck(
                verdict=ChainVerdict.TRUSTED,
                hostname_ok=hostname_ok,
                anchor=_anchor(signed, certs),
            )
    # Can known intermediates (the lab CA's published ones) complete it up to a trusted root?
    # Then, and only then, the server sends too little: "incomplete chain".
    if anchors.intermediates:
        try:
            path = anchors.verify(leaf, served + anchors.intermediates, at, facts)
            sent = {c.fingerprint(hashes.SHA256()) for c in certs}
            missing = [
                _name(c.subject)
                for c in path[1:]
                if c.fingerprint(hashes.SHA256()) not in sent
                and c.fingerprint(hashes.SHA256()) not in anchors.root_fingerprints
            ]
            return ChainCheck(
                verdict=ChainVerdict.INCOMPLETE,
                hostname_ok=hostname_ok,
                completed_with=missing,
                anchor=_anchor(path, certs),
                detail="server does not send intermediate " + ", ".join(repr(m) for m in missing),
            )
        except VerificationError:
            pass
    if _self_signed(leaf):
        return ChainCheck(
            verdict=ChainVerdict.SELF_SIGNED,
            hostname_ok=hostname_ok,
            detail=f"self-signed certificate {_name(leaf.subject)!r}",
        )
    top = certs[-1]
    subjects = {c.subject for c in certs}
    if _self_signed(top) and not anchors.knows_root(top.subject):
        return ChainCheck(
            verdict=ChainVerdict.UNKNOWN_ROOT,
            hostname_ok=hostname_ok,
            detail=f"chain ends at root {_name(top.subject)!r}, which is not trusted",
        )
    if top.issuer not in subjects and not anchors.knows_root(top.issuer):
        # Neither sent nor trusted: nothing says a trusted root is behind it, so this is
        # "untrusted", not "incomplete" (that needs a known intermediate reaching a trusted root).
        return ChainCheck(
            verdict=ChainVerdict.UNKNOWN_ISSUER,
            hostname_ok=hostname_ok,
            detail=f"issuer {_name(top.issuer)!r} unknown",
        )
    return ChainCheck(verdict=ChainVerdict.INVALID, hostname_ok=hostname_ok, detail=first_error)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def _signed_path(
    served: list[x509.Certificate], anchors: TrustAnchors
) -> list[x509.Certificate] | None:
    """Follow the served certificates by signature up to a trusted root; None if it breaks."""
    path = [served[0]]
    pool = served[1:]
    for _ in range(8):
        current = path[-1]
        root = next((r for r in anchors.roots if _issued_by(current, r)), None)
        if root is not None:
            return [*path, root]
        nxt = next((c for c in pool if c not in path and _issued_by(current, c)), None)
        if nxt is None:
            return None
        path.append(nxt)
    return None


def _anchor(path: list[x509.Certificate], served: list[x509.Certificate]) -> CertInfo | None:
    """The root of a verified path, unless the server sent it itself (then it is in the chain)."""
    root = path[-1]
    if any(c == root for c in served):
        return None
    return cert_info(root.public_bytes(serialization.Encoding.DER))


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
