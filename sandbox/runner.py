"""Runs the whole sandbox in one asyncio process and manages it from the command line.

``run`` starts every service, writes ``DIR/ca.pem``, ``DIR/labops.yaml`` and ``DIR/ready`` and
serves until SIGTERM/SIGINT; ``start`` daemonises ``run`` and waits until it answers; ``stop`` and
``status`` find it through ``DIR/sandbox.pid``.

``--mqtt HOST[:PORT]`` and ``--victoriametrics URL`` add real services running outside the sandbox
(the machine's Mosquitto, a VictoriaMetrics) to the config it writes; without them the config has
neither, so flows skip their MQTT notification and metrics push.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import pkgutil
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sandbox.control import SCENARIOS, ControlServer
from sandbox.lab import generate_lab
from sandbox.service import Context, Service
from sandbox.tls import SandboxCA

CORE_MODULES = ("sandbox.pve", "sandbox.pbs", "sandbox.pbs.offsite", "sandbox.fleet")


def discover() -> list[tuple[str, type[Service] | None, str | None]]:
    """(module, SERVICE class or None, import error) for every service module found."""
    found: list[tuple[str, type[Service] | None, str | None]] = []
    names = list(CORE_MODULES)
    import sandbox.services as services_pkg

    for info in sorted(pkgutil.iter_modules(services_pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            names.append(f"sandbox.services.{info.name}")
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name == "sandbox.fleet" and exc.name == "sandbox.fleet":
                continue  # not written yet; the lab simply has no SSH fleet
            found.append((name, None, f"{type(exc).__name__}: {exc}"))
            continue
        except Exception as exc:
            found.append((name, None, f"{type(exc).__name__}: {exc}"))
            continue
        svc = getattr(module, "SERVICE", None)
        if svc is not None:
            found.append((name, svc, None))
    return found


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def mqtt_broker(value: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); port 1883 when left out."""
    try:
        parts = urlsplit(f"//{value}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST or HOST:PORT")
    if port == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: port 0 is not a broker port")
    return host, 1883 if port is None else port


def http_url(value: str) -> str:
    """An http(s) base URL with a host, without the trailing slash."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def external_systems(opts: argparse.Namespace) -> dict[str, Any]:
    """The config keys of the real services given on the command line (none by default)."""
    systems: dict[str, Any] = {}
    if opts.mqtt is not None:
        host, port = opts.mqtt
        systems["mqtt"] = {"host": host, "port": port}
    if opts.victoriametrics is not None:
        systems["victoriametrics"] = {"url": opts.victoriametrics}
    return {"systems": systems} if systems else {}


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


class Sandbox:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.dir = Path(opts.dir).resolve()
        self.services: dict[str, Service] = {}
        self.ports: dict[str, list[int]] = {}
        self.failed: dict[str, str] = {}
        self.control: ControlServer | None = None
        self.ctx: Context | None = None
        self.t0 = time.monotonic()
        self.startup_s = 0.0

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.dir / "state"
        state.mkdir(exist_ok=True)
        (self.dir / "ready").unlink(missing_ok=True)
        ca = SandboxCA.create()
        _atomic_write(self.dir / "ca.pem", ca.cert_pem.decode())
        _atomic_write(state / "ca-key.pem", ca.key_pem.decode(), 0o600)
        lab = generate_lab(self.opts.containers, self.opts.vms, self.opts.seed)
        self.ctx = ctx = Context(
            lab=lab,
            state_dir=state,
            host="127.0.0.1",
            ca=ca,
            faults={},
            rng=random.Random(self.opts.seed),
            time_scale=self.opts.time_scale,
            base_port=self.opts.base_port,
        )
        self.control = ControlServer(ctx, self.services, info=self._info)
        await self.control.start()
        for module, cls, error in discover():
            if cls is None:
                self.failed[module] = error or "no SERVICE"
                continue
            before = len(ctx._allocated)
            try:
                svc = cls(ctx)
                await svc.start()
            except Exception as exc:
                self.failed[module] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                continue
            self.services[svc.name] = svc
            self.ports[svc.name] = ctx._allocated[before:]
        config: dict[str, Any] = {
            "lab": {"name": lab.cluster_name, "state_dir": str(self.dir / "labops-state")},
        }
        for name, svc in self.services.items():
            try:
                config = deep_merge(config, svc.config_fragment())
            except Exception as exc:
                self.failed[name] = f"config_fragment: {exc}"
        config = deep_merge(config, external_systems(self.opts))
        header = (
            "# Written by the labops sandbox (python -m sandbox); points at local simulators.\n"
        )
        _atomic_write(
            self.dir / "labops.yaml", header + yaml.safe_dump(config, sort_keys=False), 0o600
        )
        if self.opts.scenario and self.opts.scenario != "default":
            await self.control.apply_scenario(self.opts.scenario)
        self.startup_s = time.monotonic() - self.t0
        ready = {
            "pid": os.getpid(),
            "base_port": self.opts.base_port,
            "control_url": f"http://127.0.0.1:{self.opts.base_port}",
            "config": str(self.dir / "labops.yaml"),
            "ca": str(self.dir / "ca.pem"),
            "ports": self.ports,
            "check_ports": [self.opts.base_port] + [p[0] for p in self.ports.values() if p],
            "services": sorted(self.services),
            "failed": self.failed,
            "startup_s": round(self.startup_s, 3),
            "time_scale": self.opts.time_scale,
        }
        _atomic_write(self.dir / "ready", json.dumps(ready, indent=2))

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "ports": self.ports,
            "failed": self.failed,
            "startup_s": round(self.startup_s, 3),
        }
        if self.ctx is not None:
            from sandbox.pbs.store import seed_info

            info["seed"] = seed_info(self.ctx.lab)
        return info

    async def stop(self) -> None:
        (self.dir / "ready").unlink(missing_ok=True)

        # Concurrently: shutdown time is the slowest service's, not the sum.
        async def stop_one(svc: Service) -> None:
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(svc.stop(), 5)
            except Exception as exc:
                print(f"stopping {svc.name}: {type(exc).__name__}: {exc}", flush=True)
            spent = time.monotonic() - t0
            if spent > 1:
                print(f"stopping {svc.name} took {spent:.1f}s", flush=True)

        await asyncio.gather(*(stop_one(s) for s in self.services.values()))
        if self.control:
            await self.control.stop()


async def _serve(opts: argparse.Namespace) -> int:
    sandbox = Sandbox(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sandbox.start()
        print(
            f"sandbox ready in {sandbox.startup_s:.2f}s: {sandbox.dir / 'labops.yaml'}", flush=True
        )
        await stop.wait()
    finally:
        t0 = time.monotonic()
        await sandbox.stop()
        print(f"sandbox stopped in {time.monotonic() - t0:.2f}s", flush=True)
    return 0


def cmd_run(opts: argparse.Namespace) -> int:
    pidfile = Path(opts.dir).resolve() / "sandbox.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    try:
        return asyncio.run(_serve(opts))
    finally:
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _running_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "sandbox.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def run_args(opts: argparse.Namespace, directory: Path) -> list[str]:
    """The ``run`` command line that ``start`` daemonises, carrying every option of ``opts``."""
    args = [
        "run",
        "--dir",
        str(directory),
        "--containers",
        str(opts.containers),
        "--vms",
        str(opts.vms),
        "--seed",
        str(opts.seed),
        "--base-port",
        str(opts.base_port),
        "--time-scale",
        str(opts.time_scale),
    ]
    if opts.scenario:
        args += ["--scenario", opts.scenario]
    if opts.mqtt is not None:
        host, port = opts.mqtt
        args += ["--mqtt", f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if opts.victoriametrics is not None:
        args += ["--victoriametrics", opts.victoriametrics]
    return args


def cmd_start(opts: argparse.Namespace) -> int:
    directory = Path(opts.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if _running_pid(directory):
        print(f"sandbox already running in {directory}", file=sys.stderr)
        return 1
    (directory / "ready").unlink(missing_ok=True)
    args = [sys.executable, "-m", "sandbox", *run_args(opts, directory)]
    log = open(directory / "sandbox.log", "ab")  # noqa: SIM115 - handed to the child
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=root,
        env=env,
    )
    log.close()
    deadline = time.monotonic() + opts.timeout
    ready_file = directory / "ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (directory / "sandbox.log").read_text(errors="replace")[-3000:]
            print(f"sandbox exited with {proc.returncode}:\n{tail}", file=sys.stderr)
            return 1
        if ready_file.exists():
            try:
                ready = json.loads(ready_file.read_text())
            except ValueError:
                ready = None
            if (
                ready
                and ready.get("pid") == proc.pid
                and all(_port_open(p) for p in ready.get("check_ports", []))
            ):
                print(ready["config"])
                return 0
        time.sleep(0.05)
    print(f"sandbox did not become ready within {opts.timeout:.0f}s", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    return 1


def cmd_stop(opts: argparse.Namespace) -> int:
    directory = Path(opts.dir).resolve()
    pid = _running_pid(directory)
    if pid is None:
        print("sandbox not running")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + opts.timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"sandbox stopped (pid {pid})")
    if opts.clean:
        shutil.rmtree(directory / "state", ignore_errors=True)
    return 0


def cmd_status(opts: argparse.Namespace) -> int:
    directory = Path(opts.dir).resolve()
    pid = _running_pid(directory)
    ready = directory / "ready"
    if pid is None or not ready.exists():
        print("not running" if pid is None else f"starting (pid {pid})")
        return 3
    print(ready.read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dir", required=True, help="sandbox directory (config, CA, secrets)")

    for name in ("run", "start"):
        sp = sub.add_parser(name)
        common(sp)
        sp.add_argument("--containers", type=int, default=52)
        sp.add_argument("--vms", type=int, default=3)
        sp.add_argument("--seed", type=int, default=42)
        sp.add_argument("--base-port", type=int, default=28100)
        sp.add_argument("--time-scale", type=float, default=1.0)
        sp.add_argument("--scenario", choices=sorted(SCENARIOS), default=None)
        sp.add_argument(
            "--mqtt",
            type=mqtt_broker,
            default=None,
            metavar="HOST[:PORT]",
            help="MQTT broker for systems.mqtt in the config (default: none, no MQTT)",
        )
        sp.add_argument(
            "--victoriametrics",
            type=http_url,
            default=None,
            metavar="URL",
            help="VictoriaMetrics URL for systems.victoriametrics (default: none, no metrics)",
        )
        if name == "start":
            sp.add_argument("--timeout", type=float, default=30.0)
    sp = sub.add_parser("stop")
    common(sp)
    sp.add_argument("--timeout", type=float, default=15.0)
    sp.add_argument("--clean", action="store_true", help="also remove DIR/state")
    sp = sub.add_parser("status")
    common(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    return {"run": cmd_run, "start": cmd_start, "stop": cmd_stop, "status": cmd_status}[opts.cmd](
        opts
    )
