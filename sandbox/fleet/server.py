"""The SSH fleet: one asyncssh listener per Proxmox node and per LXC container with sshd.

Every host has its own port, its own persisted Ed25519 host key and its own OS state in
``lab.hosts``; commands are interpreted by :mod:`sandbox.fleet.shell` (no process per command), so
hundreds of hosts share one event loop. A reconcile loop keeps the listeners in step with the lab
and the faults: stopped containers, offline nodes, reboots and ``unreachable_hosts`` close the port,
``changed_host_keys`` reopens it with a second key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from sandbox.fleet import listening, tools  # noqa: F401 - registers the command handlers
from sandbox.fleet.jobs import HostJobs
from sandbox.fleet.shell import CallbackSink, ExitShell, Io, Rebooting, Shell
from sandbox.fleet.state import (
    HostState,
    host_names,
    new_host_state,
    no_sshd_names,
    seed_hosts,
)
from sandbox.fleet.tools import new_boot
from sandbox.service import Context, Faults, Service

log = logging.getLogger("sandbox.fleet")
# asyncssh logs every connection at INFO; 200 hosts would drown the sandbox log.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

RECONCILE_S = 0.25
NODE_REBOOT_S = 8.0  # down time, times the time scale
CT_REBOOT_S = 3.0


@dataclass
class HostSpec:
    name: str
    kind: str  # node | container
    port: int | None  # None: no sshd (reached through `pct exec` on its node)
    vmid: int | None
    node: str | None
    tags: list[str]


class _HostServer(asyncssh.SSHServer):
    """Authentication of one connection: root with the fleet's client key, publickey only."""

    def __init__(self, fleet: FleetService, host: str) -> None:
        self.fleet, self.host = fleet, host
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.fleet._conns.setdefault(self.host, {})[conn] = set()

    def connection_lost(self, exc: Exception | None) -> None:
        tasks = self.fleet._conns.get(self.host, {}).pop(self.conn, set())  # type: ignore[arg-type]
        for t in tasks:  # a hanging command ends with its connection
            t.cancel()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username != "root" or self.fleet.in_fault("auth_fail_hosts", self.host):
            return False
        return bool(key.public_data == self.fleet.client_public.public_data)


class FleetService(Service):
    name = "fleet"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.lab = ctx.lab
        self.time_scale = ctx.time_scale
        self.dir = Path(ctx.state_dir) / "fleet"
        self.specs: dict[str, HostSpec] = {}
        self.keys: dict[str, dict[str, asyncssh.SSHKey]] = {}
        self._servers: dict[str, tuple[asyncssh.SSHAcceptor, str]] = {}
        self._conns: dict[str, dict[asyncssh.SSHServerConnection, set[asyncio.Task[Any]]]] = {}
        self._down_until: dict[str, float] = {}
        self._seen_running: set[str] = set()
        self._applied_locks: dict[str, float] = {}
        self._was_powered: dict[str, bool] = {}
        self._boots_seen: dict[str, int] = {}
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        # background processes of each host (`cmd &`, systemd-run): pid -> task
        self.jobs = HostJobs(first_pid=4000)
        self.client_key_file = self.dir / "id_ed25519"
        self.known_hosts_file = self.dir / "known_hosts"
        self.client_public: asyncssh.SSHKey

    # ------------------------------------------------------------------------------- set-up

    def faults(self) -> Faults:
        return self.ctx.faults_for("fleet")

    def in_fault(self, key: str, host: str) -> bool:
        val = self.faults().extra.get(key) or ()
        return host in val  # a list of names, or a dict keyed by name

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._kick = asyncio.Event()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hostkeys").mkdir(exist_ok=True)
        seed_hosts(self.lab)
        no_sshd = no_sshd_names(self.lab)
        for name, kind, guest in host_names(self.lab):
            port = self.ctx.port() if name not in no_sshd else None
            self.specs[name] = HostSpec(
                name=name,
                kind=kind,
                port=port,
                vmid=guest.vmid if guest else None,
                node=guest.node if guest else None,
                tags=list(guest.tags) if guest else ["node"],
            )
        client = self._load_or_create(self.client_key_file)
        self.client_public = client.convert_to_public()
        pub = self.client_key_file.with_suffix(".pub")
        pub.write_text(
            self.client_public.export_public_key().decode().strip() + " labops-sandbox\n"
        )
        lines = []
        for name, spec in self.specs.items():
            if spec.port is None:
                continue
            main = self._load_or_create(self.dir / "hostkeys" / f"{name}.key")
            changed = self._load_or_create(self.dir / "hostkeys" / f"{name}.changed.key")
            self.keys[name] = {"main": main, "changed": changed}
            pub_line = main.export_public_key().decode().strip()
            lines.append(f"[{self.ctx.host}]:{spec.port} {pub_line}")
        self.known_hosts_file.write_text("\n".join(lines) + "\n")
        await self._reconcile()
        self._reconciler = asyncio.create_task(self._reconcile_loop())

    def _load_or_create(self, path: Path) -> asyncssh.SSHKey:
        if path.exists():
            return asyncssh.read_private_key(str(path))
        key = asyncssh.generate_private_key("ssh-ed25519")
        path.write_bytes(key.export_private_key())
        os.chmod(path, 0o600)
        return key

    async def stop(self) -> None:
        tasks = [t for t in [self._reconciler, *self._bg] if t is not None]
        for host in self.jobs.hosts_with_jobs():
            self.jobs.end_jobs(host)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in list(self._servers):
            self._close_listener(name)
        for conns in self._conns.values():
            for conn in list(conns):
                conn.abort()
        self._conns.clear()

    # ------------------------------------------------------------------------- listeners

    def _should_listen(self, name: str, now: float) -> bool:
        spec = self.specs[name]
        if spec.port is None or self.in_fault("unreachable_hosts", name):
            return False
        if self._down_until.get(name, 0) > now:
            return False
        if spec.kind == "node":
            node = self.lab.node(name)
            return bool(node and node.online)
        guest = self.lab.guest(spec.vmid or 0)
        if guest is None or guest.status != "running" or guest.name not in self.lab.hosts:
            self._seen_running.discard(name)
            return False
        if name not in self._seen_running:  # just started: a slow sshd answers only later
            self._seen_running.add(name)
            delay = (self.faults().extra.get("slow_sshd") or {}).get(name)
            if isinstance(delay, int | float) and delay > 0:
                self._down_until[name] = now + float(delay)
                return False
        node = self.lab.node(guest.node)
        return bool(node and node.online) and self._down_until.get(guest.node, 0) <= now

    def _powered(self, name: str) -> bool:
        """Whether the host is up at all (node online; container running on an online node)."""
        spec = self.specs[name]
        node = self.lab.node(spec.node or name)
        if node is None or not node.online:
            return False
        if spec.kind == "node":
            return True
        guest = self.lab.guest(spec.vmid or 0)
        return guest is not None and guest.status == "running"

    def _boots(self, name: str) -> int:
        spec = self.specs[name]
        guest = None if spec.kind == "node" else self.lab.guest(spec.vmid or 0)
        return guest.boots if guest is not None else 0

    def _track_power(self) -> None:
        # A container started again through the PVE API, or a node powered back on, has booted:
        # reboot-required clears, the newest kernel runs, services needing a restart are fresh.
        with self.lab.lock:
            for name in self.specs:
                up = self._powered(name)
                boots = self._boots(name)
                rebooted = boots != self._boots_seen.setdefault(name, boots)
                self._boots_seen[name] = boots
                if up and (self._was_powered.get(name) is False or rebooted):
                    st = self.lab.hosts.get(name)
                    if isinstance(st, HostState):
                        new_boot(st)
                if not up and self._was_powered.get(name):
                    self.jobs.end_jobs(name)  # a stopped container's processes are gone
                self._was_powered[name] = up

    async def _reconcile(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._apply_locks()
        self._track_power()
        opens = []
        for name in self.specs:
            want = self._should_listen(name, now)
            variant = "changed" if self.in_fault("changed_host_keys", name) else "main"
            have = self._servers.get(name)
            if have and (not want or have[1] != variant):
                self._close_listener(name)
                have = None
            if want and not have:
                opens.append(self._open_listener(name, variant))
        if opens:
            results = await asyncio.gather(*opens, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    log.warning("fleet: listener failed: %s", r)

    async def _reconcile_loop(self) -> None:
        assert self._kick is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), RECONCILE_S)
            self._kick.clear()
            try:
                await self._reconcile()
            except Exception:  # keep serving whatever one bad host does
                log.exception("fleet reconcile failed")

    async def _open_listener(self, name: str, variant: str) -> None:
        spec = self.specs[name]
        acceptor = await asyncssh.create_server(
            lambda: _HostServer(self, name),
            self.ctx.host,
            spec.port,
            server_host_keys=[self.keys[name][variant]],
            process_factory=lambda proc: self._session(name, proc),
            reuse_address=True,
            encoding="utf-8",
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=30,
            keepalive_interval=0,
            server_version="OpenSSH_9.2p1",
        )
        self._servers[name] = (acceptor, variant)

    def _close_listener(self, name: str) -> None:
        have = self._servers.pop(name, None)
        if have:
            have[0].close()

    def _abort_connections(self, name: str) -> None:
        for conn in list(self._conns.get(name, {})):
            conn.abort()

    def kick(self) -> None:
        """Reconcile soon (thread-safe)."""
        if self._loop is None or self._kick is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._kick.set()
        else:
            self._loop.call_soon_threadsafe(self._kick.set)

    def _apply_locks(self) -> None:
        extra = self.faults().extra
        locks: dict[str, float] = dict(extra.get("dpkg_locked_hosts") or {})
        holder = str(extra.get("dpkg_lock_holder", "apt-get"))
        with self.lab.lock:
            for host, secs in locks.items():
                st = self.lab.hosts.get(host)
                if st is not None and self._applied_locks.get(host) != secs:
                    st.lock_until, st.lock_hold_s = 0.0, float(secs)
                    st.lock_holder = holder
                    self._applied_locks[host] = secs
            for host in list(self._applied_locks):
                if host not in locks:
                    st = self.lab.hosts.get(host)
                    if st is not None:
                        st.lock_until, st.lock_hold_s = 0.0, 0.0
                    del self._applied_locks[host]

    # ---------------------------------------------------------------------------- sessions

    async def _session(self, name: str, process: asyncssh.SSHServerProcess[str]) -> None:
        conn = process.get_extra_info("connection")
        task = asyncio.current_task()
        tasks = self._conns.get(name, {}).get(conn)
        if tasks is not None and task is not None:
            tasks.add(task)
        faults = self.faults()
        try:
            command = process.command
            if command is not None:
                self.ctx.journal.ssh(name, command)
            if command is None:  # an interactive shell: nothing to emulate
                process.stderr.write("This sandbox host runs commands only (ssh host CMD).\n")
                process.exit(1)
                return
            delay = faults.latency_ms / 1000 + float(faults.extra.get("latency_ms", 0)) / 1000
            delay += float(faults.extra.get("command_delay_s", 0))
            if delay > 0:
                await asyncio.sleep(delay)
            if faults.roll(faults.reset_rate, self.ctx.rng):
                conn.abort()
                return
            if faults.roll(faults.stall_rate, self.ctx.rng):
                await asyncio.sleep(faults.stall_s)
                conn.abort()
                return
            hang = (faults.extra.get("hanging_commands") or {}).get(name)
            hangs = [hang] if isinstance(hang, str) else list(hang or [])
            if any(h and h in command for h in hangs):
                await asyncio.Event().wait()  # never returns; cancelled with the connection
            if process.get_terminal_type():
                # With a pty (ssh -tt, Ansible raw) stderr goes to the same tty as stdout;
                # asyncssh's line editor already turns "\n" into "\r\n" as a tty would.
                sink = CallbackSink(process.stdout.write)
                io = Io(sink, sink)
            else:
                io = Io(CallbackSink(process.stdout.write), CallbackSink(process.stderr.write))
            try:
                status = await Shell(self, name).run_script(command, io)
            except Rebooting:
                return  # the reboot task drops the connection; no exit status, like a real one
            except ExitShell as e:
                status = e.code
            process.exit(status)
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            pass
        finally:
            if tasks is not None and task is not None:
                tasks.discard(task)

    # ----------------------------------------------------------------------------- reboots

    def record_exec(self, host: str, argv: list[str], via: str | None) -> None:
        """Called by the shell for every simple command it runs (the journal of the sandbox)."""
        self.ctx.journal.exec(host, argv, via)

    def session_pid(self, host: str) -> int:
        return self.jobs.session_pid(host)

    def start_job(self, host: str, run: Callable[[int], Awaitable[int]]) -> int:
        """A background process of ``host``: it outlives the SSH session that started it and
        ends with the host (reboot, stop) or when ``run`` returns."""
        return self.jobs.start_job(host, run)

    def job_alive(self, host: str, pid: int) -> bool:
        return self.jobs.job_alive(host, pid)

    def stop_job(self, host: str, pid: int) -> None:
        self.jobs.stop_job(host, pid)

    def request_reboot(self, name: str) -> None:
        assert self._loop is not None
        spec = self.specs.get(name)
        if spec is None:
            return
        down = (NODE_REBOOT_S if spec.kind == "node" else CT_REBOOT_S) * self.time_scale
        self._down_until[name] = self._loop.time() + down + 0.2
        t = asyncio.ensure_future(self._reboot(name, down))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _reboot(self, name: str, down: float) -> None:
        spec = self.specs[name]
        affected = [name]
        if spec.kind == "node":
            node = self.lab.node(name)
            if node:
                node.online = False
            affected += [s.name for s in self.specs.values() if s.node == name]
        await asyncio.sleep(0.1)  # let the command's output reach the client first
        for h in affected:
            self._abort_connections(h)
            self.jobs.end_jobs(h)
        self._close_listener(name)
        self.kick()
        await asyncio.sleep(down)
        with self.lab.lock:
            for h in affected:
                st = self.lab.hosts.get(h)
                if isinstance(st, HostState) and (h == name or spec.kind == "node"):
                    new_boot(st)
            if spec.kind == "node":
                node = self.lab.node(name)
                if node:
                    node.online = True
        self._down_until.pop(name, None)
        self.kick()

    # ------------------------------------------------------------------------ config, control

    def config_fragment(self) -> dict[str, Any]:
        hosts: list[dict[str, Any]] = []
        for spec in self.specs.values():
            entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind}
            if spec.port is not None:
                entry.update(address=self.ctx.host, port=spec.port, access="ssh")
            else:
                entry["access"] = "pct"
            if spec.vmid is not None:
                entry.update(vmid=spec.vmid, node=spec.node)
            entry["tags"] = list(spec.tags)
            hosts.append(entry)
        return {
            "systems": {
                "ssh": {
                    "user": "root",
                    "key_file": str(self.client_key_file),
                    "known_hosts": str(self.known_hosts_file),
                }
            },
            "inventory": {"hosts": hosts},
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "set_faults": self._c_set_faults,
            "clear_faults": self._c_clear_faults,
            "set_pending": self._c_set_pending,
            "state": self._c_state,
            "reset": self._c_reset,
            "hosts": self._c_hosts,
            "patch_state": self._c_patch_state,
            "reboot": self._c_reboot,
        }.get(action)
        if handler is None:
            raise KeyError(action)
        result = handler(payload)
        self._apply_locks()
        self._enforce_now()
        self.kick()
        return result

    def on_faults_changed(self) -> None:
        """Called by the runner's control API after ``POST /_sandbox/faults/fleet``."""
        self._apply_locks()
        self._enforce_now()
        self.kick()

    def state(self) -> dict[str, Any]:
        """Summary for ``GET /_sandbox/state``."""
        return {
            "hosts": len(self.specs),
            "listening": len(self._servers),
            "no_sshd": sorted(s.name for s in self.specs.values() if s.port is None),
            "rebooting": sorted(self._down_until),
            "connections": sum(len(c) for c in self._conns.values()),
        }

    def _enforce_now(self) -> None:
        """Close what must be closed at once, so a test sees the fault on its next connect."""
        if self._loop is None or threading.get_ident() != self._loop_thread:
            return
        now = self._loop.time()
        for name in list(self._servers):
            variant = "changed" if self.in_fault("changed_host_keys", name) else "main"
            if not self._should_listen(name, now) or self._servers[name][1] != variant:
                self._close_listener(name)

    def _host(self, payload: dict[str, Any]) -> HostState:
        name = payload.get("host")
        st = self.lab.hosts.get(name or "")
        if not isinstance(st, HostState):
            raise KeyError(f"unknown host {name!r}")
        return st

    def _c_set_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        faults = self.faults()
        for k, v in payload.items():
            if k in ("latency_ms", "error_rate", "reset_rate", "stall_rate", "stall_s"):
                setattr(faults, k, float(v))
            else:
                faults.extra[k] = v
        return {"extra": faults.extra, "latency_ms": faults.latency_ms}

    def _c_clear_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        _reset_in_place(self.faults())
        return {"extra": {}}

    def _c_set_pending(self, payload: dict[str, Any]) -> dict[str, Any]:
        st = self._host(payload)
        with self.lab.lock:
            st.pending = {}
            for item in payload.get("packages", []):
                if isinstance(item, str):
                    item = {"name": item}
                name = item["name"]
                old = item.get("from") or (st.packages.get(name) or ["1.0-1"])[0]
                arch = item.get("arch") or (st.packages.get(name) or ["", "amd64"])[1]
                security = bool(item.get("security", False))
                suites = item.get("suites") or _default_suites(st, security)
                if name not in st.packages or item.get("from"):
                    st.packages[name] = [old, arch, item.get("description", name)]
                st.pending[name] = {
                    "version": item.get("version") or old + "+1",
                    "arch": arch,
                    "suites": suites,
                    "security": security,
                    "pve": bool(item.get("pve", False)),
                    "pulls": item.get("pulls", []),
                }
            if "held" in payload:
                st.held = list(payload["held"])
        return {"host": st.name, "pending": sorted(st.pending), "held": st.held}

    def _c_state(self, payload: dict[str, Any]) -> dict[str, Any]:
        st = self._host(payload)
        data = st.to_json()
        data["files"] = dict(st.files)
        spec = self.specs.get(st.name)
        data["port"] = spec.port if spec else None
        data["listening"] = st.name in self._servers
        # asking the state must not start a pending lock's timer
        data["lock_held"] = st.lock_hold_s > 0 or st.lock_until > time.time()
        return data

    def _c_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        names = payload.get("hosts") or list(self.specs)
        no_sshd = no_sshd_names(self.lab)
        with self.lab.lock:
            for _name, kind, guest in host_names(self.lab):
                if _name in names:
                    self.lab.hosts[_name] = new_host_state(
                        self.lab, _name, kind, guest, _name in no_sshd, _is_eol(self.lab, _name)
                    )
        if not payload.get("keep_faults"):
            _reset_in_place(self.faults())
            self._applied_locks.clear()
        return {"reset": len(names)}

    def _c_hosts(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "hosts": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "port": s.port,
                    "vmid": s.vmid,
                    "node": s.node,
                    "listening": s.name in self._servers,
                }
                for s in self.specs.values()
            ]
        }

    def _c_patch_state(self, payload: dict[str, Any]) -> dict[str, Any]:
        st = self._host(payload)
        with self.lab.lock:
            for k, v in (payload.get("set") or {}).items():
                if not hasattr(st, k):
                    raise KeyError(f"unknown field {k!r}")
                setattr(st, k, v)
        return self._c_state(payload)

    def _c_reboot(self, payload: dict[str, Any]) -> dict[str, Any]:
        st = self._host(payload)
        self.request_reboot(st.name)
        return {"host": st.name, "rebooting": True}


def _default_suites(st: HostState, security: bool) -> list[str]:
    from sandbox.fleet.catalog import RELEASES

    rel = RELEASES.get(st.os, {})
    suites = rel.get("security" if security else "regular") or ["stable"]
    return list(suites)  # type: ignore[call-overload]


def _is_eol(lab: Any, name: str) -> bool:
    from sandbox.fleet.state import eol_name

    return eol_name(lab) == name


def _reset_in_place(faults: Faults) -> None:
    # The runner's control API holds the same Faults object: change it, never replace it.
    default = Faults()
    faults.error_rate, faults.reset_rate = default.error_rate, default.reset_rate
    faults.latency_ms, faults.stall_rate, faults.stall_s = (
        default.latency_ms,
        default.stall_rate,
        default.stall_s,
    )
    faults.extra.clear()
