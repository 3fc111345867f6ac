"""sandbox.tls: the CA every sandbox service's certificate comes from, and its broken variants."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from pathlib import Path

import pytest

from sandbox.tls import SandboxCA, cert_info, server_ssl_context


def _handshake(ca_file: Path, chain: bytes, key: bytes, name: str) -> None:
    """Serve one TLS handshake with (chain, key) and connect to it trusting ``ca_file``."""

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_ssl_context(chain, key)
        )
        port = server.sockets[0].getsockname()[1]
        ctx = ssl.create_default_context(cafile=str(ca_file))

        def connect() -> None:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=name),
            ):
                pass

        try:
            await asyncio.to_thread(connect)
        finally:
            server.close()

    asyncio.run(main())


def test_leaf_intermediate_expired_and_wrong_host(tmp_path: Path) -> None:
    ca = SandboxCA.create()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    chain, key = ca.issue_server_cert(["svc.lab.internal"], ["127.0.0.1"])
    _handshake(ca_file, chain, key, "svc.lab.internal")

    inter = ca.issue_intermediate("Lab Intermediate")
    issued = ca.issue_server_cert(["svc.lab.internal"], issuer=inter, days=1)
    assert issued.chain_pem.count(b"BEGIN CERTIFICATE") == 2
    _handshake(ca_file, issued.chain_pem, issued.key_pem, "svc.lab.internal")

    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca_file, chain, key, "other.lab.internal")

    now = dt.datetime.now(dt.UTC)
    expired = ca.issue_server_cert(
        ["old.lab.internal"], not_before=now - dt.timedelta(days=100), days=10
    )
    info = cert_info(expired.cert)
    assert int(info["notafter"]) < now.timestamp()  # type: ignore[call-overload]
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca_file, expired.chain_pem, expired.key_pem, "old.lab.internal")

    rsa = ca.issue_server_cert(["rsa.lab.internal"], key_type="rsa", days=0.01)
    info = cert_info(rsa.cert)
    assert info["public-key-type"] == "rsaEncryption" and info["public-key-bits"] == 2048
    assert info["subject"] == "/CN=rsa.lab.internal"
    assert info["issuer"] == "/O=labops sandbox/CN=Sandbox Homelab Root CA"

    stranger = SandboxCA.create("Unknown CA")
    foreign = ca.issue_server_cert(["svc.lab.internal"], issuer=stranger)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca_file, foreign.chain_pem, foreign.key_pem, "svc.lab.internal")

    reloaded = SandboxCA.load(ca.cert_pem, ca.key_pem)
    chain2, key2 = reloaded.issue_server_cert(["svc.lab.internal"])
    _handshake(ca_file, chain2, key2, "svc.lab.internal")
