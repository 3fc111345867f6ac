"""The sandbox's own certificate authority.

Every TLS service of the sandbox presents a certificate issued here, and the runner writes the root
to ``DIR/ca.pem`` so that clients verify the lab exactly as they would verify step-ca's root.
Services that need broken certificates (expired, short-lived, wrong host, unknown issuer, chains
through an intermediate) ask for them with the knobs of :meth:`SandboxCA.issue_server_cert`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key(key_type: KeyType, bits: int = 2048) -> PrivateKey:
    # EC by default: an RSA key costs ~50 ms and the lab issues dozens at start.
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class IssuedCert:
    """A certificate with its key; ``chain_pem`` is leaf + intermediates (what a server sends)."""

    cert: x509.Certificate
    key: PrivateKey
    chain_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def __iter__(self) -> Iterator[bytes]:
        # Lets callers write ``cert_pem, key_pem = ca.issue_server_cert(...)``.
        return iter((self.chain_pem, self.key_pem))


class SandboxCA:
    """A CA (root or intermediate) that issues server certificates for the sandbox."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: PrivateKey,
        parent: SandboxCA | None = None,
    ) -> None:
        self.cert = cert
        self.key = key
        self.parent = parent

    @classmethod
    def create(
        cls,
        common_name: str = "Sandbox Homelab Root CA",
        days: int = 3650,
        key_type: KeyType = "ec",
    ) -> SandboxCA:
        key = _new_key(key_type)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labops sandbox"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> SandboxCA:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def root(self) -> SandboxCA:
        return self.parent.root if self.parent else self

    @property
    def root_pem(self) -> bytes:
        return self.root.cert_pem

    def chain_pem(self) -> bytes:
        """This CA's certificate plus its parents, excluding the root (what servers send)."""
        if self.parent is None:
            return b""
        return self.cert_pem + self.parent.chain_pem()

    def issue_intermediate(
        self,
        common_name: str = "Sandbox Intermediate CA",
        days: float = 1825,
        key_type: KeyType = "ec",
        not_before: dt.datetime | None = None,
    ) -> SandboxCA:
        """An intermediate valid from ``not_before`` (default: a day ago) for ``days`` more
        days from now (from ``not_before`` when it is given)."""
        key = _new_key(key_type)
        now = _now()
        start = not_before or (now - dt.timedelta(days=1))
        end = (start if not_before else now) + dt.timedelta(days=days)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labops sandbox"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return SandboxCA(cert, key, parent=self)

    def issue_server_cert(
        self,
        names: list[str],
        ips: list[str] | None = None,
        *,
        days: float = 90,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_type: KeyType = "ec",
        key_bits: int = 2048,
        issuer: SandboxCA | None = None,
        common_name: str | None = None,
    ) -> IssuedCert:
        """A leaf for ``names`` (DNS SANs) and ``ips``.

        ``not_before`` defaults to one hour ago; ``not_after`` to ``not_before + days``, so an
        expired cert is ``not_before=now - 100 days, days=10`` and a short-lived one ``days=0.01``.
        ``issuer`` signs instead of this CA (an intermediate, or an unrelated CA for "unknown
        issuer" cases). Unpacks as ``(chain_pem, key_pem)``.
        """
        signer = issuer or self
        key = _new_key(key_type, key_bits)
        start = not_before or (_now() - dt.timedelta(hours=1))
        end = not_after or (start + dt.timedelta(days=days))
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
        cn = common_name or (names[0] if names else (ips or ["sandbox"])[0])
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(signer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), False
            )
            .sign(signer.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + signer.chain_pem()
        return IssuedCert(cert=cert, key=key, chain_pem=chain)


def server_ssl_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server-side context; call :func:`reload_cert` on it to swap the certificate live."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    reload_cert(ctx, chain_pem, key_pem)
    return ctx


def reload_cert(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Replace the context's certificate; new handshakes present the new one."""
    # load_cert_chain only reads files, so the PEMs pass through a private temp dir.
    with tempfile.TemporaryDirectory() as tmp:
        cert_file = Path(tmp) / "cert.pem"
        key_file = Path(tmp) / "key.pem"
        cert_file.write_bytes(chain_pem)
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        ctx.load_cert_chain(cert_file, key_file)


def cert_info(cert: x509.Certificate) -> dict[str, object]:
    """Fields of PVE's ``certificates/info`` items (subject/issuer in OpenSSL oneline form)."""
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        key_type, bits = "rsaEncryption", pub.key_size
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        key_type, bits = "id-ecPublicKey", pub.key_size
    else:
        key_type, bits = "unknown", 0
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "fingerprint": ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)),
        "subject": _oneline(cert.subject),
        "issuer": _oneline(cert.issuer),
        "notbefore": int(cert.not_valid_before_utc.timestamp()),
        "notafter": int(cert.not_valid_after_utc.timestamp()),
        "san": sans,
        "public-key-type": key_type,
        "public-key-bits": bits,
        "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


_SHORT = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.COUNTRY_NAME: "C",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
}


def _oneline(name: x509.Name) -> str:
    parts = []
    for attr in name:
        label = _SHORT.get(attr.oid, attr.oid.dotted_string)
        parts.append(f"/{label}={attr.value!s}")
    return "".join(parts)


def self_signed_server_cert(names: list[str], days: float = 365) -> IssuedCert:
    """A leaf that signs itself (no CA), as appliances and forgotten test hosts serve."""
    key = _new_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    start = _now() - dt.timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(cert=cert, key=key, chain_pem=cert.public_bytes(serialization.Encoding.PEM))
