"""The one SSH runner (paramiko): key auth, strict host keys, timeouts, bounded output, jump host.

INTERFACE (implemented by the foundation work; flows and tasks rely on exactly this):

    runner = SshRunner(settings: SshSettings, key_passphrase: SecretStr | None = None)
    with runner.session(target: SshTarget) as s:        # one connection, many commands
        r: CommandResult = s.run("apt list --upgradable", timeout=60)
        r = s.run_in_guest(vmid=105, command="cat /etc/os-release")   # `pct exec` via the node
    r = runner.run(target, command, timeout=None)        # one-off convenience

Errors (labops.errors): Unreachable (connect refused/timeout), HostKeyRejected (unknown or changed
key; never overwritten; unknown keys accepted and recorded only with trust_on_first_use),
AuthFailed (key refused), CommandTimeout (command past its timeout; the channel is closed).
A non-zero exit status is NOT an error: it is in CommandResult.exit_status.

One runner serves many threads at once: every session owns its Transport; the private key and the
parsed known_hosts are shared (read once, re-read only when the file changes on disk). With a jump
host, sessions share one Transport to the jump host and each opens its own direct-tcpip channel.
"""

from __future__ import annotations

import hmac
import logging
import os
import select
import shlex
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry
from pydantic import BaseModel, Field, SecretStr

from labops.errors import AuthFailed, CommandTimeout, ConfigError, HostKeyRejected, Unreachable
from labops.ssh_settings import SshSettings

log = logging.getLogger("labops.ssh")

_READ_CHUNK = 65536


class SshTarget(BaseModel):
    """Where one host answers SSH."""

    name: str = Field(..., description="The host's name in reports.")
    address: str
    port: int = 22
    user: str | None = Field(None, description="None: the configured default user.")


class CommandResult(BaseModel):
    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def known_hosts_name(address: str, port: int) -> str:
    """The host's name as OpenSSH writes it in known_hosts (``[addr]:port`` off port 22)."""
    return address if port == 22 else f"[{address}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


# One lock per known_hosts file in this process, so two runners never interleave appends.
_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault(str(path.resolve()), threading.Lock())


class KnownHosts:
    """known_hosts parsed once and re-read only when the file changes (mtime, size).

    Plain host names are indexed in a dict: paramiko's ``HostKeys.lookup`` compares the name with
    every entry of the file, so a sweep over N hosts listed in a file of N entries would cost
    N x N comparisons. Hashed (``|1|...``) entries cannot be indexed and are still matched one by
    one, but only those. Every entry of a name counts, in file order (first of a key type wins),
    as in paramiko, and ``@revoked``/``@cert-authority`` lines are ignored the same way.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _lock_for(path)
        self._stamp: tuple[float, int] | None = None
        self._plain: dict[str, list[tuple[int, paramiko.PKey]]] = {}
        self._hashed: list[tuple[int, str, paramiko.PKey]] = []
        self._cache: dict[str, dict[str, paramiko.PKey]] = {}

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    def _refresh(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp and self._stamp is not None:
            return
        plain: dict[str, list[tuple[int, paramiko.PKey]]] = {}
        hashed: list[tuple[int, str, paramiko.PKey]] = []
        for i, entry in enumerate(self._entries() if stamp is not None else []):
            for host in entry.hostnames:
                if host.startswith("|1|"):
                    hashed.append((i, host, entry.key))
                else:
                    plain.setdefault(host, []).append((i, entry.key))
        self._plain, self._hashed, self._cache, self._stamp = plain, hashed, {}, stamp

    def _entries(self) -> list[HostKeyEntry]:
        """The file's entries as paramiko's ``HostKeys.load`` reads them (bad lines skipped)."""
        entries = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, lineno)
                except paramiko.SSHException:
                    continue
                if entry is not None and entry.key is not None:
                    entries.append(entry)
        return entries

    def _find(self, name: str) -> dict[str, paramiko.PKey]:
        matches = list(self._plain.get(name, ()))
        if not name.startswith("|1|"):
            matches += [
                (i, key)
                for i, host, key in self._hashed
                if hmac.compare_digest(paramiko.HostKeys.hash_host(name, host), host)
            ]
        found: dict[str, paramiko.PKey] = {}
        for _, key in sorted(matches, key=lambda m: m[0]):
            found.setdefault(key.get_name(), key)
        return found

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        """Known keys of ``name`` by key type (empty: unknown host)."""
        with self._lock:
            self._refresh()
            found = self._cache.get(name)
            if found is None:
                found = self._find(name)
                self._cache[name] = found
            return found

    def record(self, name: str, key: paramiko.PKey) -> None:
        """Append one entry (trust on first use); existing entries are never rewritten."""
        with self._lock:
            self._refresh()
            if self._find(name):
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")
            self._stamp = None  # re-read on next lookup
            self._refresh()


def _preferred_key_types(known: dict[str, paramiko.PKey]) -> list[str]:
    """Server key types to negotiate first, so a host with several keys shows the one we know."""
    types: list[str] = []
    for t in known:
        if t == "ssh-rsa":
            types += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        else:
            types.append(t)
    return types


def _same_key(known: dict[str, paramiko.PKey], key: paramiko.PKey) -> bool:
    name = key.get_name()
    if name in ("rsa-sha2-512", "rsa-sha2-256"):
        name = "ssh-rsa"
    ours = known.get(name)
    return ours is not None and ours.asbytes() == key.asbytes()


class SshRunner:
    """Runs commands on hosts over SSH with the settings of ``systems.ssh``."""

    def __init__(self, settings: SshSettings, key_passphrase: SecretStr | None = None) -> None:
        self.settings = settings
        self._passphrase = key_passphrase
        self._key: paramiko.PKey | None = None
        self._key_lock = threading.Lock()
        self.known_hosts = KnownHosts(Path(settings.known_hosts).expanduser())
        self._jump: paramiko.Transport | None = None
        self._jump_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------

    def session(self, target: SshTarget) -> SshSession:
        """One connection to ``target`` for many commands (connects on ``with``)."""
        return SshSession(self, target)

    def run(self, target: SshTarget, command: str, timeout: float | None = None) -> CommandResult:
        """Connect, run one command, disconnect."""
        with self.session(target) as s:
            return s.run(command, timeout=timeout)

    def close(self) -> None:
        """Close the shared jump-host connection, if any."""
        with self._jump_lock:
            if self._jump is not None:
                self._jump.close()
                self._jump = None

    # -- connection building ---------------------------------------------------------------

    def private_key(self) -> paramiko.PKey:
        """The client key, loaded (and decrypted) once per runner."""
        with self._key_lock:
            if self._key is None:
                self._key = self._load_key()
            return self._key

    def _load_key(self) -> paramiko.PKey:
        path = Path(self.settings.key_file).expanduser()
        # from_path hands the passphrase to cryptography, which wants bytes (despite the hint).
        password: Any = self._passphrase.get_secret_value().encode() if self._passphrase else None
        try:
            return paramiko.PKey.from_path(path, password)
        except FileNotFoundError:
            raise ConfigError(f"systems.ssh.key_file: {path} does not exist") from None
        except (paramiko.PasswordRequiredException, TypeError):
            # paramiko >= 3.2 lets cryptography's TypeError through for a missing passphrase
            raise ConfigError(
                f"systems.ssh.key_file: {path} is encrypted; set systems.ssh.key_passphrase"
            ) from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise ConfigError(
                f"systems.ssh.key_file: cannot load {path} ({exc}); "
                "wrong passphrase or not an OpenSSH private key"
            ) from None

    def _open_socket(
        self, system: str, address: str, port: int
    ) -> socket.socket | paramiko.Channel:
        timeout = self.settings.connect_timeout_s
        if self.settings.jump_host is None:
            try:
                return socket.create_connection((address, port), timeout=timeout)
            except TimeoutError:
                raise Unreachable(system, f"connect to {address}:{port} timed out") from None
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise Unreachable(system, f"cannot connect to {address}:{port}: {reason}") from None
        jump = self._jump_transport()
        try:
            return jump.open_channel(
                "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            raise Unreachable(
                system, f"jump host cannot reach {address}:{port}: {exc.text or exc.code}"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()  # a dead jump connection is rebuilt by the next session
            raise Unreachable(system, f"jump host connection failed: {exc}") from None

    def _jump_transport(self) -> paramiko.Transport:
        jump = self.settings.jump_host
        assert jump is not None
        with self._jump_lock:
            if self._jump is not None and self._jump.is_active():
                return self._jump
            system = f"ssh:jump:{jump.host}"
            try:
                sock = socket.create_connection(
                    (jump.host, jump.port), timeout=self.settings.connect_timeout_s
                )
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise Unreachable(
                    system, f"cannot connect to jump host {jump.host}:{jump.port}: {reason}"
                ) from None
            self._jump = self._handshake(system, sock, jump.host, jump.port, jump.user)
            return self._jump

    def connect(self, target: SshTarget) -> paramiko.Transport:
        """An authenticated Transport to ``target`` (host key checked before authenticating)."""
        system = f"ssh:{target.name}"
        sock = self._open_socket(system, target.address, target.port)
        return self._handshake(
            system, sock, target.address, target.port, target.user or self.settings.user
        )

    def _handshake(
        self,
        system: str,
        sock: socket.socket | paramiko.Channel,
        address: str,
        port: int,
        user: str,
    ) -> paramiko.Transport:
        timeout = self.settings.connect_timeout_s
        name = known_hosts_name(address, port)
        known = self.known_hosts.lookup(name)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        if known:
            opts = transport.get_security_options()
            preferred = [t for t in _preferred_key_types(known) if t in opts.key_types]
            opts.key_types = preferred + [t for t in opts.key_types if t not in preferred]
        try:
            try:
                transport.start_client(timeout=timeout)
                server_key = transport.get_remote_server_key()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                reason = transport.get_exception() or exc
                raise Unreachable(system, f"SSH handshake with {name} failed: {reason}") from None
            self._check_host_key(system, name, known, server_key)
            try:
                transport.auth_publickey(user, self.private_key())
            except paramiko.AuthenticationException as exc:
                raise AuthFailed(
                    system,
                    f"key {self.settings.key_file} refused for {user}@{name} ({exc}); add its "
                    "public key to the host's authorized_keys or fix systems.ssh.user/key_file",
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Unreachable(system, f"authentication with {name} broke off: {exc}") from None
        except BaseException:
            transport.close()
            raise
        return transport

    def _check_host_key(
        self, system: str, name: str, known: dict[str, paramiko.PKey], key: paramiko.PKey
    ) -> None:
        path = self.known_hosts.path
        if not known:
            if self.settings.trust_on_first_use:
                log.info(
                    "%s: recording new host key %s (trust on first use)", name, _fingerprint(key)
                )
                self.known_hosts.record(name, key)
                return
            raise HostKeyRejected(
                system,
                f"unknown host key for {name} ({_fingerprint(key)}); add it to known_hosts "
                f"{path} (ssh-keyscan) or set systems.ssh.trust_on_first_use",
            )
        if not _same_key(known, key):
            raise HostKeyRejected(
                system,
                f"host key CHANGED for {name} (now {_fingerprint(key)}), refusing; never "
                f"overwritten: check the host, then fix its entry in {path} by hand",
            )


class SshSession:
    """One SSH connection to one host; commands run one after another on their own channels."""

    def __init__(self, runner: SshRunner, target: SshTarget) -> None:
        self.runner = runner
        self.target = target
        self.system = f"ssh:{target.name}"
        self._transport: paramiko.Transport | None = None

    def __enter__(self) -> SshSession:
        self._connected()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _connected(self) -> paramiko.Transport:
        if self._transport is None or not self._transport.is_active():
            self.close()
            self._transport = self.runner.connect(self.target)
        return self._transport

    def run_in_guest(self, vmid: int, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` inside LXC ``vmid`` through ``pct exec`` on this node."""
        wrapped = f"pct exec {int(vmid)} -- sh -c {shlex.quote(command)}"
        return self.run(wrapped, timeout=timeout)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run one command; a non-zero exit is reported in the result, not raised."""
        settings = self.runner.settings
        limit = timeout if timeout is not None else settings.command_timeout_s
        started = time.monotonic()
        transport = self._connected()
        try:
            chan = transport.open_session(timeout=settings.connect_timeout_s)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise Unreachable(self.system, f"cannot start a command: {exc}") from None
        try:
            out, err, truncated, status = self._collect(chan, started + limit, limit)
        except CommandTimeout:
            chan.close()
            self.close()  # a timed-out command may hold the connection: never reuse it
            raise
        finally:
            chan.close()
        return CommandResult(
            host=self.target.name,
            command=command,
            exit_status=status,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            truncated=truncated,
            duration_s=round(time.monotonic() - started, 3),
        )

    def _collect(
        self, chan: paramiko.Channel, deadline: float, limit: float
    ) -> tuple[bytes, bytes, bool, int]:
        cap = self.runner.settings.max_output_bytes
        out = bytearray()
        err = bytearray()
        truncated = False

        def take(buf: bytearray, data: bytes) -> None:
            nonlocal truncated
            room = cap - len(buf)
            if len(data) > room:
                truncated = True
                data = data[: max(room, 0)]
            buf.extend(data)

        # The channel's fileno() is a pipe that becomes readable when stdout or stderr data (or
        # EOF) arrives, so waiting costs no CPU.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(limit)
            while chan.recv_stderr_ready():
                take(err, chan.recv_stderr(_READ_CHUNK))
            if chan.recv_ready():
                take(out, chan.recv(_READ_CHUNK))
                continue
            if chan.eof_received or chan.closed:
                break
            select.select([chan], [], [], remaining)
        # Data that arrived between the last check and EOF is already buffered: take it too.
        while chan.recv_ready():
            take(out, chan.recv(_READ_CHUNK))
        while chan.recv_stderr_ready():
            take(err, chan.recv_stderr(_READ_CHUNK))
        if not chan.status_event.wait(max(deadline - time.monotonic(), 0.0)):
            self._timed_out(limit)
        return bytes(out), bytes(err), truncated, chan.recv_exit_status()

    def _timed_out(self, limit: float) -> None:
        raise CommandTimeout(
            self.system, f"command ran past its {limit:g}s timeout; channel closed"
        )
