"""The HTTP policy over real TLS: the lab's CA, SNI/name override, refusals not retried."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labops.config.systems import HttpRetry, TlsOptions
from labops.errors import TlsRejected
from labops.http import HttpClient

RETRY = HttpRetry(timeout_s=5, attempts=4, backoff_s=0.5)


def test_lab_ca_and_server_name(sandbox: Any) -> None:
    url = f"https://127.0.0.1:{sandbox.node_port('pve1')}"
    tls = TlsOptions(ca_bundle=sandbox.ca_path, server_name="pve1.lab.internal")
    with HttpClient("proxmox", url, retry=RETRY, tls=tls) as client:
        resp = client.request("GET", "/api2/json/version", ok=(200, 401))
    assert resp.status_code == 401  # TLS verified against the name; the API wants a token


@pytest.mark.parametrize(
    ("tls", "why"),
    [
        (TlsOptions(), "certificate not trusted"),  # system store only: the lab CA is unknown
        (TlsOptions(server_name="grafana.lab.internal"), "certificate not trusted"),
    ],
)
def test_untrusted_or_wrong_name_fails_fast(sandbox: Any, tls: TlsOptions, why: str) -> None:
    if tls.server_name:
        tls = TlsOptions(ca_bundle=sandbox.ca_path, server_name=tls.server_name)
    url = f"https://127.0.0.1:{sandbox.node_port('pve1')}"
    started = time.monotonic()
    with (
        HttpClient("proxmox", url, retry=RETRY, tls=tls) as client,
        pytest.raises(TlsRejected, match=why) as caught,
    ):
        client.request("GET", "/api2/json/version")
    assert "tls.ca_bundle" in str(caught.value)
    assert time.monotonic() - started < 1.5  # no backoff: retrying cannot fix a certificate
