"""The sandbox's journal: what it received that could change the lab, the witness of every
dry-run test. A read leaves no entry; a write, an SSH command line and each simple command a
host's shell runs (also inside a container through ``pct exec``) do."""

from __future__ import annotations

from typing import Any

from blocks.context import LabContext
from labops.ssh import SshTarget


def test_reads_leave_no_entry_and_writes_do(sandbox: Any) -> None:
    pve = sandbox.pve()
    mark = sandbox.journal_mark()
    pve.nodes.get()
    pve.cluster.resources.get(type="vm")
    sandbox.pbs().admin.datastore.get()
    assert sandbox.journal(mark) == []

    guest = next(g for g in pve.cluster.resources.get(type="vm") if g["type"] == "lxc")
    pve.nodes(guest["node"]).lxc(guest["vmid"]).config.put(description="journal test")
    entries = sandbox.journal(mark)
    assert [(e["system"], e["method"], e["path"]) for e in entries] == [
        ("pve", "PUT", f"/nodes/{guest['node']}/lxc/{guest['vmid']}/config")
    ]
    assert entries[0]["args"]["description"] == "journal test"
    assert sandbox.journal(mark, system="pbs") == []


def test_ssh_command_lines_and_the_commands_hosts_ran(sandbox: Any) -> None:
    ctx = LabContext.load(str(sandbox.config_path))
    runner = ctx.ssh()
    node = next(h for h in ctx.config.inventory.hosts if h.name == "pve1")
    target = SshTarget(name="pve1", address=node.address or node.name, port=node.port)
    guest = next(
        g
        for g in sandbox.pve().cluster.resources.get(type="vm")
        if g["type"] == "lxc" and g["status"] == "running" and g["node"] == "pve1"
    )
    mark = sandbox.journal_mark()
    try:
        with runner.session(target) as s:
            assert s.run("uname -r && sudo cat /etc/os-release >/dev/null").ok
            assert s.run_in_guest(guest["vmid"], "cat /etc/os-release").ok
    finally:
        runner.close()
    entries = sandbox.journal(mark, system="fleet")
    lines = [e["command"] for e in entries if e["kind"] == "ssh"]
    assert lines[0] == "uname -r && sudo cat /etc/os-release >/dev/null"
    assert any(f"pct exec {guest['vmid']}" in line for line in lines[1:])
    ran = [(e["host"], e["argv"], e.get("via")) for e in entries if e["kind"] == "exec"]
    assert ("pve1", ["uname", "-r"], None) in ran
    assert ("pve1", ["cat", "/etc/os-release"], None) in ran  # sudo unwrapped
    inside = [r for r in ran if r[2] == "pve1" and r[0] != "pve1"]
    assert [r[1] for r in inside][-1][-1] == "/etc/os-release"
