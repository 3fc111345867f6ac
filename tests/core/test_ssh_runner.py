"""labops.ssh.SshRunner against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from labops.config.systems import SshJump
from labops.errors import AuthFailed, CommandTimeout, HostKeyRejected, Unreachable
from labops.ssh import SshRunner, SshTarget
from tests.fixtures.sshd import Sshd, free_port, write_ed25519_key


def test_known_host_runs_a_command(sshd: Sshd) -> None:
    result = SshRunner(sshd.settings()).run(sshd.target(), "echo hi; echo oops >&2")
    assert result.ok
    assert result.stdout == "hi\n"
    assert result.stderr == "oops\n"
    assert result.host == "local"
    assert not result.truncated


def test_non_zero_exit_is_reported_not_raised(sshd: Sshd) -> None:
    runner = SshRunner(sshd.settings())
    with runner.session(sshd.target()) as s:
        failed = s.run("echo before; exit 3")
        after = s.run("echo still usable")
    assert failed.exit_status == 3
    assert not failed.ok
    assert failed.stdout == "before\n"
    assert after.ok and after.stdout == "still usable\n"


def test_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    runner = SshRunner(sshd.settings(known_hosts=known))
    with pytest.raises(HostKeyRejected) as err:
        runner.run(sshd.target("web1"), "true")
    assert err.value.system == "ssh:web1"
    assert f"unknown host key for {sshd.known_name}" in str(err.value)
    assert known.read_text() == ""


def test_changed_host_key_is_refused_and_known_hosts_kept(sshd: Sshd, tmp_path: Path) -> None:
    other = write_ed25519_key(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    content = f"{sshd.known_name} {' '.join(other.split()[:2])}\n"
    known.write_text(content)
    for tofu in (False, True):
        runner = SshRunner(sshd.settings(known_hosts=known, trust_on_first_use=tofu))
        with pytest.raises(HostKeyRejected, match="host key CHANGED"):
            runner.run(sshd.target(), "true")
    assert known.read_text() == content


def test_trust_on_first_use_records_the_key(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    runner = SshRunner(sshd.settings(known_hosts=known, trust_on_first_use=True))
    assert runner.run(sshd.target(), "true").ok
    assert known.read_text() == f"{sshd.known_name} {sshd.host_key_line}\n"
    # A strict runner now trusts the recorded key.
    assert SshRunner(sshd.settings(known_hosts=known)).run(sshd.target(), "true").ok
    assert known.read_text().count("\n") == 1


def test_hashed_and_many_known_hosts_entries(sshd: Sshd, tmp_path: Path) -> None:
    """The known_hosts index finds hashed (``ssh-keygen -H``) names and, among hundreds of
    entries, the first key of a type in file order; a changed key after it does not win."""
    import paramiko

    other = " ".join(write_ed25519_key(tmp_path / "other_host_key").split()[:2])
    filler = "".join(f"[10.9.{i // 250}.{i % 250}]:22 {other}\n" for i in range(600))
    hashed = paramiko.HostKeys.hash_host(sshd.known_name)
    known = tmp_path / "known_hosts"
    known.write_text(f"# comment\nshort line\n{filler}{hashed} {sshd.host_key_line}\n")
    assert SshRunner(sshd.settings(known_hosts=known)).run(sshd.target(), "true").ok
    # a plain entry with another key after the hashed one: the first of the type still counts
    known.write_text(known.read_text() + f"{sshd.known_name} {other}\n")
    assert SshRunner(sshd.settings(known_hosts=known)).run(sshd.target(), "true").ok
    # and before it: refused as a changed key
    known.write_text(f"{sshd.known_name} {other}\n{hashed} {sshd.host_key_line}\n")
    with pytest.raises(HostKeyRejected, match="host key CHANGED"):
        SshRunner(sshd.settings(known_hosts=known)).run(sshd.target(), "true")


def test_command_timeout_closes_the_channel(sshd: Sshd) -> None:
    runner = SshRunner(sshd.settings())
    with runner.session(sshd.target()) as s:
        started = time.monotonic()
        with pytest.raises(CommandTimeout, match="1s timeout"):
            s.run("sleep 30", timeout=1)
        assert time.monotonic() - started < 3
        # The session reconnects for the next command.
        assert s.run("echo again").stdout == "again\n"


def test_output_is_bounded(sshd: Sshd) -> None:
    runner = SshRunner(sshd.settings(max_output_bytes=1000))
    result = runner.run(sshd.target(), "head -c 200000 /dev/zero | tr '\\0' x; echo done >&2")
    assert result.truncated
    assert result.stdout == "x" * 1000
    assert result.stderr == "done\n"
    assert result.ok


def test_jump_host_through_the_same_sshd(sshd: Sshd) -> None:
    jump = SshJump(host=sshd.address, port=sshd.port, user="root")
    runner = SshRunner(sshd.settings(jump_host=jump))
    try:
        with runner.session(sshd.target()) as s:
            assert s.run("echo jumped").stdout == "jumped\n"
        # The jump connection is shared by the next session.
        jump_transport = runner._jump
        assert runner.run(sshd.target(), "echo twice").stdout == "twice\n"
        assert runner._jump is jump_transport
    finally:
        runner.close()


def test_jump_host_cannot_reach_target(sshd: Sshd) -> None:
    jump = SshJump(host=sshd.address, port=sshd.port, user="root")
    runner = SshRunner(sshd.settings(jump_host=jump))
    target = SshTarget(name="gone", address="127.0.0.1", port=free_port())
    try:
        with pytest.raises(Unreachable, match="jump host cannot reach"):
            runner.run(target, "true")
    finally:
        runner.close()


def test_wrong_key_is_auth_failed(sshd: Sshd, tmp_path: Path) -> None:
    write_ed25519_key(tmp_path / "wrong_key")
    runner = SshRunner(sshd.settings(key_file=tmp_path / "wrong_key"))
    with pytest.raises(AuthFailed) as err:
        runner.run(sshd.target("pve1"), "true")
    assert err.value.system == "ssh:pve1"
    assert "refused for root@" in str(err.value)


def test_connection_refused_is_unreachable(sshd: Sshd) -> None:
    target = SshTarget(name="down", address="127.0.0.1", port=free_port())
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        SshRunner(sshd.settings()).run(target, "true")
    assert err.value.system == "ssh:down"
    assert time.monotonic() - started < 2


def test_silent_port_times_out_as_unreachable(sshd: Sshd) -> None:
    import socket

    with socket.socket() as listener:  # accepts, never speaks SSH
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        target = SshTarget(name="mute", address="127.0.0.1", port=listener.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(Unreachable):
            SshRunner(sshd.settings(connect_timeout_s=1.0)).run(target, "true")
        assert time.monotonic() - started < 4


def test_run_in_guest_wraps_pct_exec(sshd: Sshd, tmp_path: Path) -> None:
    # A stand-in `pct` on PATH proves the exact command line the node receives.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pct").write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    (bindir / "pct").chmod(0o755)
    runner = SshRunner(sshd.settings())
    with runner.session(sshd.target("pve1")) as s:
        # Prepend our bin dir for this one command only.
        result = s.run(f"PATH={bindir}:$PATH; export PATH; pct exec 105 -- sh -c 'echo a'")
        assert result.stdout == "exec|105|--|sh|-c|echo a|"
        direct = s.run_in_guest(105, "echo 'it''s' && cat /etc/os-release")
    assert direct.command == (
        "pct exec 105 -- sh -c 'echo '\"'\"'it'\"'\"''\"'\"'s'\"'\"' && cat /etc/os-release'"
    )


def test_many_concurrent_sessions(sshd: Sshd) -> None:
    runner = SshRunner(sshd.settings())
    results: list[str] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with runner.session(sshd.target(f"h{i}")) as s:
                results.append(s.run(f"echo {i}").stdout.strip())
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(results, key=int) == [str(i) for i in range(20)]


def test_encrypted_key_needs_its_passphrase(sshd: Sshd, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from pydantic import SecretStr

    from labops.errors import ConfigError

    key = serialization.load_ssh_private_key(sshd.client_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted_key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            # one bcrypt round keeps the test fast; the format is the same as ssh-keygen's
            serialization.PrivateFormat.OpenSSH.encryption_builder()
            .kdf_rounds(1)
            .build(b"correct horse"),
        )
    )
    settings = sshd.settings(key_file=encrypted)
    runner = SshRunner(settings, key_passphrase=SecretStr("correct horse"))
    assert runner.run(sshd.target(), "echo unlocked").stdout == "unlocked\n"
    with pytest.raises(ConfigError, match="key_passphrase"):
        SshRunner(settings).run(sshd.target(), "true")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        SshRunner(settings, key_passphrase=SecretStr("wrong")).run(sshd.target(), "true")
