"""The fleet inside the real sandbox runner: the config it writes reaches every SSH host, and the
runner's fault endpoint steers the fleet at once."""

from __future__ import annotations

import socket

import paramiko

from tests.fixtures.sandbox import SandboxHandle


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_runner_config_reaches_fleet_and_faults_apply(sandbox_clean: SandboxHandle) -> None:
    from labops.config import load_config

    config = load_config(sandbox_clean.config_path)
    ssh = config.systems.ssh
    assert ssh is not None
    hosts = {h.name: h for h in config.inventory.hosts}
    assert hosts["pve1"].kind == "node" and hosts["pve1"].access == "ssh"
    assert any(h.access == "pct" for h in hosts.values())
    host = next(h for h in hosts.values() if h.kind == "container" and h.access == "ssh")
    assert host.port is not None

    def run(command: str) -> str:
        c = paramiko.SSHClient()
        c.load_host_keys(str(ssh.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect(
            host.address or "127.0.0.1",
            port=host.port,
            username=ssh.user,
            key_filename=str(ssh.key_file),
            allow_agent=False,
            look_for_keys=False,
            timeout=5,
        )
        try:
            _, out, _ = c.exec_command(command, timeout=10)
            return str(out.read().decode())
        finally:
            c.close()

    assert run("hostname") == f"{host.name}\n"
    sandbox_clean.set_faults("fleet", extra={"unreachable_hosts": [host.name]})
    assert not _port_open(host.port)  # closed before the endpoint answered
    state = sandbox_clean.control("fleet", "state", host=host.name)
    assert state["listening"] is False and state["name"] == host.name
    sandbox_clean.reset_faults()
    summary = sandbox_clean.state()["services"]["fleet"]
    assert summary["hosts"] == len(hosts)
