"""Health probes: an HTTP URL (the patch flow's post-check), a TCP port (the restore drill)."""

from __future__ import annotations

import socket

import httpx
from prefect import task


@task(name="http-health")
def probe_url(url: str, timeout_s: float = 10.0, ca_bundle: str | None = None) -> str:
    """GET ``url``; returns "" when it answers 2xx/3xx, else why not. Reads only."""
    try:
        resp = httpx.get(url, timeout=timeout_s, verify=ca_bundle or True)
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    if resp.status_code >= 400:
        return f"{url}: HTTP {resp.status_code}"
    return ""


@task(name="tcp-port")
def port_open(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host`` accepts a TCP connection on ``port`` within ``timeout_s``. Reads only."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
