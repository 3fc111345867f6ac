"""``labops init`` against the sandbox homelab: a config that loads and passes ``labops config
check``, counts that match the lab, no secret in the file, the privileges a restricted token
lacks named per operation, no overwrite without --force, and the questions answered on stdin."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labops.config import load_config
from tests.fixtures.sandbox import SandboxHandle

LABOPS = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(private_sandbox: SandboxHandle) -> SandboxHandle:
    # a lab of this module's own: the restricted-token test adds a user, a token and ACLs
    return private_sandbox


def sandbox_flags(lab: SandboxHandle) -> list[str]:
    raw = yaml.safe_load(lab.config_path.read_text())
    pve, traefik = raw["systems"]["proxmox"], raw["systems"]["traefik"]
    return [
        "--pve-url",
        pve["url"],
        "--ca-file",
        str(lab.ca_path),
        "--traefik-url",
        traefik["url"],
        "--traefik-entrypoint",
        traefik["entrypoint"],
    ]


def init(
    cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*LABOPS, "init", "--timeout", "5", *args],
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def root_token_flags(lab: SandboxHandle) -> list[str]:
    return [
        "--token-id",
        "root@pam!labops",
        "--token-secret-ref",
        f"file:{lab.dir / 'secrets' / 'pve_token'}",
    ]


def test_non_interactive_init_writes_a_config_that_checks(
    lab: SandboxHandle, tmp_path: Path
) -> None:
    out = tmp_path / "labops.yaml"
    proc = init(tmp_path, *sandbox_flags(lab), *root_token_flags(lab), "--no-input")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert lab.secret("pve_token") not in text and lab.secret("pve_token") not in proc.stdout
    config = load_config(out)
    assert config.systems.proxmox is not None
    assert config.systems.proxmox.token_secret.startswith("file:")
    assert config.systems.traefik is not None
    assert config.backups.storage == "pbs"  # the storage of type pbs

    root = lab.pve()
    nodes = root.nodes.get()
    guests = root.cluster.resources.get(type="vm")
    lxc = sum(1 for g in guests if g["type"] == "lxc" and not g.get("template"))
    vms = sum(1 for g in guests if g["type"] == "qemu" and not g.get("template"))
    templates = sum(1 for g in guests if g.get("template"))
    assert f"#   nodes: {len(nodes)} (" in text
    plural = "" if templates == 1 else "s"
    assert f"#   guests: {len(guests)} ({lxc} LXC, {vms} VMs, {templates} template{plural})" in text
    assert "#   PBS storage: pbs" in text
    assert config.lab.name == root.cluster.status.get()[0]["name"]

    # the root token holds everything: every operation's row says so
    table = proc.stdout.split("per operation", 1)[1]
    assert "backups" in table and "(held)" in table and "on /" not in table
    # config check ran on the written file and passed; run on its own, it passes too
    assert "0 failed" in proc.stderr
    check = subprocess.run(
        [*LABOPS, "config", "check", "--config", str(out), "--json", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rows = {r["system"]: r["status"] for r in json.loads(check.stdout)}
    assert rows["proxmox"] == "ok" and rows["traefik"] == "ok", rows

    # an existing file is never overwritten without --force
    before = out.read_text() + "# edited by hand\n"
    out.write_text(before)
    again = init(tmp_path, *sandbox_flags(lab), *root_token_flags(lab), "--no-input")
    assert again.returncode == 2 and "--force" in again.stderr
    assert out.read_text() == before
    forced = init(tmp_path, *sandbox_flags(lab), *root_token_flags(lab), "--no-input", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "edited by hand" not in out.read_text()


def test_a_missing_flag_without_input_is_one_line(tmp_path: Path) -> None:
    proc = init(tmp_path, "--pve-url", "https://127.0.0.1:1", "--no-input")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: --token-id is required (or leave out --no-input to be asked)"
    ]
    assert not (tmp_path / "labops.yaml").exists()


def test_the_privileges_a_restricted_token_lacks_are_named(
    lab: SandboxHandle, tmp_path: Path
) -> None:
    from tests.fixtures.pve_acl import apply

    root = lab.pve()
    root.access.users.post(userid="labops@pve", comment="labops automation")
    commands = [
        "pveum user token add labops@pve init --privsep 1",
        'pveum role add LabopsInitAudit --privs "VM.Audit Datastore.Audit"',
        "pveum acl modify / --users labops@pve --tokens labops@pve!init --roles LabopsInitAudit",
    ]
    secrets = apply(root, [shlex.split(c) for c in commands])
    secret_file = tmp_path / "init-token"
    secret_file.write_text(secrets["labops@pve!init"])
    out = tmp_path / "restricted.yaml"
    proc = init(
        tmp_path,
        *sandbox_flags(lab),
        "--token-id",
        "labops@pve!init",
        "--token-secret-ref",
        "env:LABOPS_TEST_INIT_TOKEN",
        "--out",
        str(out),
        "--no-input",
        env={"LABOPS_TEST_INIT_TOKEN": secrets["labops@pve!init"]},
    )
    assert secrets["labops@pve!init"] not in out.read_text()
    assert "token_secret: env:LABOPS_TEST_INIT_TOKEN" in out.read_text()
    table = proc.stdout.split("per operation", 1)[1]
    rows = [line.split(None, 1) for line in table.splitlines() if line and line[0].islower()]
    missing: dict[str, list[str]] = {}
    for op, what in rows:
        missing.setdefault(op, []).append(what)
    assert any(w.startswith("Sys.Audit on / ") for w in missing["backups"]), missing
    assert any(w.startswith("VM.Backup on /vms ") for w in missing["backups"]), missing
    assert any(w.startswith("VM.Snapshot on /vms ") for w in missing["patch-apply"]), missing
    assert not any("VM.Audit" in w for w in missing["backups"]), missing  # held on /


def test_interactive_init_reads_the_answers_from_stdin(lab: SandboxHandle, tmp_path: Path) -> None:
    raw = yaml.safe_load(lab.config_path.read_text())
    answers = "\n".join(
        [
            raw["systems"]["proxmox"]["url"].removeprefix("https://"),  # the scheme is added
            "root@pam!labops",
            "not a reference",  # refused: asked again, never echoed
            f"file:{lab.dir / 'secrets' / 'pve_token'}",
            str(lab.ca_path),
            "",  # no Traefik
            "",
        ]
    )
    proc = init(tmp_path, stdin=answers)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Proxmox VE API URL" in proc.stderr and "Traefik API URL" in proc.stderr
    assert "not a reference" not in proc.stderr + proc.stdout
    config = load_config(tmp_path / "labops.yaml")
    assert config.systems.proxmox is not None and config.systems.traefik is None
    assert str(config.systems.proxmox.url).startswith("https://127.0.0.1:")


def test_an_untrusted_certificate_writes_nothing(lab: SandboxHandle, tmp_path: Path) -> None:
    url = yaml.safe_load(lab.config_path.read_text())["systems"]["proxmox"]["url"]
    proc = init(tmp_path, "--pve-url", url, *root_token_flags(lab), "--no-input")
    assert proc.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr and "--ca-file" in proc.stderr
    assert not (tmp_path / "labops.yaml").exists()
