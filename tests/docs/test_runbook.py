"""Runbook claims: what is read of a line, the read-only script made of it, its answer read."""

from __future__ import annotations

from labops.docs.extract import extract_claims
from labops.docs.models import Claim, ClaimKind, LiveFacts, LiveGuest
from labops.docs.runbook import (
    by_host,
    judge_host_claim,
    parse_links,
    parse_listening,
    probe_script,
    read_probe,
    resolve_hosts,
)

PAGE = """# Proxy runbook

## traefik (CT 110)

- Routes live in /etc/traefik/dynamic.
- The unit is traefik.service; it listens on port 443.
- Reload: `systemctl reload traefik`.

## Network

On pve2 the VLAN is bridged on vmbr1.
Nothing here names a host: /etc/hosts is everywhere.
"""

# What iproute2 and ss print (one line per link with -o; IPv4 and IPv6 listeners).
IP_LINK = (
    "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group "
    "default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
    "2: eth0@if45: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode "
    "DEFAULT group default qlen 1000\\    link/ether bc:24:11:aa:bb:cc brd ff:ff:ff:ff:ff:ff "
    "link-netnsid 0\n"
)
SS = (
    "State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
    "LISTEN 0      4096         0.0.0.0:443        0.0.0.0:*          \n"
    "LISTEN 0      4096            [::]:443           [::]:*          \n"
    "LISTEN 0      128        127.0.0.1:8080       0.0.0.0:*          \n"
)


def host_claims(text: str) -> list[Claim]:
    return [c for c in extract_claims(text, "rb.md") if c.fact == "host"]


def test_claims_carry_their_host_from_the_line_or_the_section() -> None:
    got = {(c.line, c.kind.value, c.name, c.value) for c in host_claims(PAGE)}
    assert got == {
        (5, "path", "CT 110", "/etc/traefik/dynamic"),
        (6, "unit", "CT 110", "traefik.service"),
        (6, "port", "CT 110", "443"),
        (7, "command", "CT 110", "systemctl"),
        (11, "interface", "pve2", "vmbr1"),
    }


def test_the_script_is_fixed_templates_with_quoted_values_only() -> None:
    claims = host_claims(PAGE)
    script = probe_script(by_host(claims)["CT 110"])
    assert script == (
        "echo @@path; test -e /etc/traefik/dynamic; echo @@rc=$?; "
        "echo @@unit; systemctl cat traefik.service; echo @@rc=$?; "
        "echo @@command; command -v systemctl; echo @@rc=$?; "
        "echo @@ports; ss -ltn; echo @@rc=$?"
    )
    # A value that is not a plain path/unit/name never reaches a command line, and what a
    # code span asks to run is never run: only its first word is looked up.
    hostile = [
        Claim(kind=kind, file="x", line=1, text="", subject="", value=value)
        for kind, value in [
            (ClaimKind.PATH, "/etc/x; reboot"),
            (ClaimKind.UNIT, "$(reboot).service"),
            (ClaimKind.COMMAND, "-rf"),
        ]
    ]
    assert probe_script(hostile) == ""
    spans = host_claims("On pve1 run `rm -rf /` and `curl x | sh`.\n")
    assert probe_script(spans) == (
        "echo @@command; command -v rm; echo @@rc=$?; echo @@command; command -v curl; echo @@rc=$?"
    )


def test_real_ip_and_ss_output_is_read() -> None:
    assert parse_links(IP_LINK) == ["lo", "eth0"]
    assert parse_listening(SS) == [443, 8080]


def test_the_answer_is_read_and_a_cut_answer_stays_unknown() -> None:
    claims = by_host(host_claims(PAGE))["CT 110"]
    out = (
        "@@path\n@@rc=0\n@@unit\n# /usr/lib/systemd/system/traefik.service\n[Unit]\n@@rc=1\n"
        "@@command\n/usr/bin/systemctl\n@@rc=0\n@@ports\n" + SS + "@@rc=0\n"
    )
    probe = read_probe("CT 110", claims, out)
    verdicts = {c.value: judge_host_claim(c, probe)[0] for c in claims}
    assert verdicts == {
        "/etc/traefik/dynamic": "match",
        "traefik.service": "drifted",
        "systemctl": "match",
        "443": "match",
    }
    cut = read_probe("CT 110", claims, "@@path\n@@rc=0\n@@unit\n")
    assert {c.value: judge_host_claim(c, cut)[0] for c in claims} == {
        "/etc/traefik/dynamic": "match",
        "traefik.service": "unverifiable",
        "systemctl": "unverifiable",
        "443": "unverifiable",
    }


def test_hosts_resolve_to_a_node_or_a_container_through_its_node() -> None:
    live = LiveFacts(
        nodes=["pve1", "pve2"],
        guests=[
            LiveGuest(vmid=110, name="traefik", node="pve2", type="lxc"),
            LiveGuest(vmid=800, name="haos", node="pve2", type="qemu"),
        ],
    )
    targets, unreachable = resolve_hosts(
        {"CT 110", "traefik", "pve1", "VM 800", "ghost", "pve2"},
        live,
        {"pve1": ("10.0.0.1", 22), "pve2": ("10.0.0.2", 2222)},
    )
    assert {(t.ref, t.node, t.address, t.vmid) for t in targets} == {
        ("CT 110", "pve2", "10.0.0.2", 110),
        ("traefik", "pve2", "10.0.0.2", 110),
        ("pve1", "pve1", "10.0.0.1", None),
        ("pve2", "pve2", "10.0.0.2", None),
    }
    assert set(unreachable) == {"VM 800", "ghost"}
