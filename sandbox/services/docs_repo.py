"""A docs git repository describing the lab, seeded with known drift for doc reconciliation.

The page is written from the lab itself, then changed the way docs drift in real life: the
container count is off by two, one container moved node, one changed IP, and the newest
container is missing from the table. Beside it a runbook about the proxy container and its
node, whose paths, unit, port and bridge partly drifted (checked on the fleet over SSH).
"""

from __future__ import annotations

import subprocess
from typing import Any

from sandbox.lab import Guest, Lab
from sandbox.service import Service
from sandbox.services import sandbox_dir

MOVED = "grafana"  # documented on pve1, lives on pve4
CHANGED_IP = ("wazuh", "192.168.1.140")  # documented IP; the live one is its vmid's address


def known_drift(lab: Lab) -> dict[str, Any]:
    """What a correct reconciliation must find (tests compare against this)."""
    lxc = [g for g in lab.guests if g.type == "lxc" and not g.template]
    newest = max(lxc, key=lambda g: g.vmid)
    moved = next(g for g in lab.guests if g.name == MOVED)
    return {
        "lxc_documented": len(lxc) - 2,
        "lxc_live": len(lxc),
        "moved": {"vmid": moved.vmid, "documented": "pve1", "live": moved.node},
        "changed_ip": {"name": CHANGED_IP[0], "documented": CHANGED_IP[1]},
        "missing": newest.vmid,
        "runbook": {"file": RUNBOOK, "drifted": runbook_drift(lab)},
    }


RUNBOOK = "runbook-proxy.md"


def render_runbook(lab: Lab) -> str:
    """A runbook about the proxy container and its node, drifted the way runbooks drift: a
    folder that was never created, a timer since replaced, a port moved, a bridge renamed."""
    traefik = next(g for g in lab.guests if g.name == "traefik")
    return "\n".join(
        [
            "# Runbook: reverse proxy",
            "",
            "Last reviewed: 2025-01-15",
            "",
            f"## traefik (CT {traefik.vmid})",
            "",
            "- Static config: `/etc/traefik/traefik.yml`; routes live in /etc/traefik/dynamic.",
            "- Certificates are kept in /etc/traefik/acme.",
            "- The unit is traefik.service; renewals run from traefik-renew.timer.",
            "- It listens on port 443, the dashboard on port 8081.",
            "- After a change: `systemctl reload traefik`.",
            "",
            f"## {traefik.node}",
            "",
            "- The lab VLAN is bridged on vmbr1, the uplink is enp3s0.",
            "- Storage traffic goes over vmbr2.",
            "",
        ]
    )


def runbook_drift(lab: Lab) -> list[dict[str, Any]]:
    """The runbook's drifted claims (file line, kind, value): what a check must find."""
    traefik = next(g for g in lab.guests if g.name == "traefik")
    host = f"CT {traefik.vmid}"
    return [
        {"line": 8, "kind": "path", "host": host, "value": "/etc/traefik/acme"},
        {"line": 9, "kind": "unit", "host": host, "value": "traefik-renew.timer"},
        {"line": 10, "kind": "port", "host": host, "value": "8081"},
        {"line": 16, "kind": "interface", "host": traefik.node, "value": "vmbr2"},
    ]


def render_page(lab: Lab) -> str:
    guests = sorted((g for g in lab.guests if not g.template), key=lambda g: g.vmid)
    vms = [g for g in guests if g.type == "qemu"]
    drift = known_drift(lab)

    def row(g: Guest) -> str:
        node = "pve1" if g.name == MOVED else g.node
        ip = CHANGED_IP[1] if g.name == CHANGED_IP[0] else g.ip
        kind = "VM" if g.type == "qemu" else "CT"
        return f"| {kind} {g.vmid} | {g.name} | {node} | {ip} |"

    traefik = next((g for g in guests if g.name == "traefik"), None)
    lines = [
        "# Homelab infrastructure",
        "",
        f"{len(lab.nodes)} Proxmox nodes, {drift['lxc_documented']} LXC containers and "
        f"{len(vms)} VMs, fully self-hosted.",
        "",
        "## Network",
        "",
        "Primary DNS is CT 100 (pve1), the secondary CT 101 (pve2).",
    ]
    if traefik is not None:
        lines += [
            f"Traefik (CT {traefik.vmid}) serves 39 HTTPS services.",
            f"All *.{lab.domain} points to {traefik.ip} (traefik).",
        ]
    lines += [
        "Direct link for migrations: pve1 <-> pve2.",
        "",
        "## Observability",
        "",
        "Beszel watches the lab with 30 deployed agents.",
        "",
        "## Guests",
        "",
        "| ID | Name | Node | IP |",
        "|----|------|------|----|",
    ]
    lines += [row(g) for g in guests if g.vmid != drift["missing"]]
    return "\n".join(lines) + "\n"


class DocsRepoService(Service):
    name = "docs_repo"

    async def start(self) -> None:
        base = sandbox_dir(self.ctx) / "docs-origin.git"
        work = self.ctx.state_dir / "docs-seed"
        self.url = str(base)
        if base.exists():
            return
        work.mkdir(parents=True, exist_ok=True)
        (work / "infrastructure.md").write_text(render_page(self.ctx.lab), encoding="utf-8")
        (work / RUNBOOK).write_text(render_runbook(self.ctx.lab), encoding="utf-8")
        env = ["-c", "user.name=sandbox", "-c", "user.email=sandbox@lab.internal"]
        for args in (
            ["init", "-q", "-b", "main"],
            ["add", "infrastructure.md", RUNBOOK],
            [*env, "commit", "-q", "-m", "Document the lab"],
        ):
            subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(work), str(base)], check=True, capture_output=True
        )

    def config_fragment(self) -> dict[str, Any]:
        return {"docs": {"git": {"url": self.url, "branch": "main"}, "write": True}}

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "known_drift":
            return known_drift(self.ctx.lab)
        if action == "branches":
            out = subprocess.run(
                ["git", "-C", self.url, "branch", "--format=%(refname:short)"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return {"branches": out.split()}
        raise KeyError(action)


SERVICE = DocsRepoService
