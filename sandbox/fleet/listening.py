"""What listens inside a sandbox host, and the tools that look at it from inside: ``ss`` and
``curl`` (Debian/Ubuntu), busybox ``netstat`` and ``wget`` and OpenRC's ``rc-status`` (Alpine).

A host listens on 22 when it runs sshd and on its main service's port while that service runs;
HTTP services answer 200 on every path. Faults (fleet ``extra``, by host name):
``closed_ports: {host: [port, ...]}`` (nothing listens there), ``extra_ports: {host: [port,
...]}`` (a web app listens there too) and
``http_status: {host: {"<port><path>": status}}`` (that URL answers with that status)."""

from __future__ import annotations

import re

from sandbox.fleet.shell import Io, Shell, tool
from sandbox.fleet.tools import fault

# What each main service listens on (the first port is the one a web check looks at).
PORTS: dict[str, list[int]] = {
    "pveproxy": [8006, 3128],
    "traefik": [80, 443, 8080],
    "grafana-server": [3000],
    "postgresql": [5432],
    "redis-server": [6379],
    "mosquitto": [1883],
    "beszel": [8090],
    "dns": [53, 853, 5380],
    "wazuh-manager": [1514, 1515, 55000],
    "proxmox-backup-proxy": [8007],
    "home-assistant": [8123],
}
_NOT_HTTP = {5432, 53, 853, 1883, 6379, 1514, 1515, 22}
_DEFAULT_PORT = 8080  # any other main service: a web app


def _running(sh: Shell, unit: str) -> bool:
    st = sh.state
    state = st.services.get(unit) or st.services.get(f"{unit}.service")
    return state in ("active", "started")


def listening(sh: Shell) -> set[int]:
    st = sh.state
    ports: set[int] = set()
    if st.sshd and _running(sh, "ssh"):
        ports.add(22)
    if st.main_service and _running(sh, st.main_service):
        ports |= set(PORTS.get(st.main_service, [_DEFAULT_PORT]))
    ports |= {int(p) for p in fault(sh, "extra_ports") or []}
    closed = fault(sh, "closed_ports") or []
    return ports - {int(p) for p in closed}


def _http(sh: Shell, url: str) -> int | None:
    """The status ``url`` answers with inside the host; None: connection refused."""
    m = re.match(r"^http://(?:127\.0\.0\.1|localhost|\[::1\])(?::(\d+))?(/[^\s]*)?$", url)
    if not m:
        return None
    port, path = int(m.group(1) or 80), m.group(2) or "/"
    if port not in listening(sh) or port in _NOT_HTTP:
        return None
    statuses = fault(sh, "http_status") or {}
    return int(statuses.get(f"{port}{path}", 200))


def _listen_line(port: int) -> str:
    return f"LISTEN 0      4096         0.0.0.0:{port}        0.0.0.0:*\n"


@tool("ss")
async def _ss(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    header = not any(
        a in ("-H", "--no-header") or (a[:2] != "--" and "H" in a)
        for a in args
        if a.startswith("-")
    )
    words = [a for a in args if not a.startswith("-")]
    wanted: int | None = None
    text = " ".join(words)
    m = re.search(r"sport\s*=\s*:(\d+)", text)
    if m:
        wanted = int(m.group(1))
    elif text:
        io.err.write(f"ss: bad filter: {text}\n")
        return 1
    if header:
        io.out.write("State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n")
    for port in sorted(listening(sh)):
        if wanted is None or port == wanted:
            io.out.write(_listen_line(port))
    return 0


@tool("netstat")
async def _netstat(sh: Shell, argv: list[str], io: Io) -> int:
    io.out.write(
        "Active Internet connections (only servers)\n"
        "Proto Recv-Q Send-Q Local Address           Foreign Address         State       \n"
    )
    for port in sorted(listening(sh)):
        local = f"0.0.0.0:{port}"
        io.out.write(f"tcp        0      0 {local:<23} 0.0.0.0:*               LISTEN      \n")
    return 0


@tool("curl")
async def _curl(sh: Shell, argv: list[str], io: Io) -> int:
    urls = [a for a in argv[1:] if a.startswith("http")]
    fail = (
        any(
            a == "-f" or (a.startswith("-") and not a.startswith("--") and "f" in a)
            for a in argv[1:]
        )
        or "--fail" in argv
    )
    if not urls:
        io.err.write("curl: no URL specified\n")
        return 2
    status = _http(sh, urls[0])
    if status is None:
        port = re.search(r":(\d+)", urls[0][7:])
        io.err.write(
            f"curl: (7) Failed to connect to 127.0.0.1 port {port.group(1) if port else 80} "
            "after 0 ms: Couldn't connect to server\n"
        )
        return 7
    if status >= 400 and fail:
        io.err.write(f"curl: (22) The requested URL returned error: {status}\n")
        return 22
    return 0


@tool("wget")
async def _wget(sh: Shell, argv: list[str], io: Io) -> int:
    urls = [a for a in argv[1:] if a.startswith("http")]
    if not urls:
        io.err.write("BusyBox v1.36.1 multi-call binary.\n\nUsage: wget [-cqS] URL...\n")
        return 1
    status = _http(sh, urls[0])
    if status is None:
        io.err.write("wget: can't connect to remote host (127.0.0.1): Connection refused\n")
        return 1
    if status >= 400:
        io.err.write(f"wget: server returned error: HTTP/1.1 {status} \n")
        return 1
    return 0


@tool("rc-status")
async def _rc_status(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    st = sh.state
    if "--runlevel" in args or "-r" in args:
        io.out.write("default\n")
        return 0
    if "--crashed" in args or "-c" in args:
        for name, state in sorted(st.services.items()):
            if state in ("crashed", "failed"):
                io.out.write(name + "\n")
        return 0
    io.out.write("Runlevel: default\n")
    for name, state in sorted(st.services.items()):
        io.out.write(f" {name:<40} [  {state}  ]\n")
    return 0
