"""The commands a host understands, printing what the real tools print.

Formats come from real output (``data/captured/`` holds what a Debian 12 machine printed) and from
the tools' sources: apt/apt-get, apt-mark, dpkg/dpkg-query, needrestart batch mode, Ubuntu's
apt-check, apk, systemctl, pct and pveversion. Exit statuses are the real ones (apt 100 on errors,
dpkg-query 1 on no match, systemctl is-active 3, unknown command 127).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import zlib
from typing import Any

from sandbox.fleet.catalog import PVE_KERNEL_NEW, RELEASES
from sandbox.fleet.shell import (
    BUILTINS,
    ExitShell,
    Io,
    Rebooting,
    Shell,
    Sink,
    tool,
    tool_paths,
)
from sandbox.fleet.state import HostState, os_release

NEW_APT = ("debian13", "ubuntu2404")  # apt >= 2.7 adds the "N: Be aware..." lock hint
_APT_WARNING = (
    "\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n\n"
)
_RESTART_LIBS = {
    "libc6",
    "libssl3",
    "libssl3t64",
    "openssl",
    "libcurl4",
    "libcurl4t64",
    "libsystemd0",
    "libexpat1",
    "musl",
    "libcrypto3",
}


# ------------------------------------------------------------------------------------- helpers


def fault(sh: Shell, key: str) -> Any:
    """This host's entry of a fault: the dict value, True for list membership, else None."""
    val = sh.rt.faults().extra.get(key)
    if isinstance(val, dict):
        return val.get(sh.host)
    if isinstance(val, list | tuple | set) and sh.host in val:
        return True
    return None


def kernel_of(sh: Shell) -> str:
    st = sh.state
    if st.kind == "node":
        return st.kernel_running or PVE_KERNEL_NEW
    node = sh.rt.lab.hosts.get(st.node or "")
    return getattr(node, "kernel_running", None) or "6.14.11-2-pve"


def size_to_str(n: float) -> str:
    """apt's SizeToStr: at most 4 digits, one decimal below 100 once scaled."""
    units = ["", "k", "M", "G", "T"]
    i, v = 0, float(n)
    while v >= 10000 and i < 4:
        v /= 1000
        i += 1
    if v < 100 and i:
        return f"{v:.1f} {units[i]}"
    return f"{v:.0f} {units[i]}"


def pkg_size(name: str) -> int:
    return 20_000 + zlib.crc32(name.encode()) % 3_000_000


def wrap_list(names: list[str]) -> str:
    """apt's package lists: two-space indent, wrapped before 80 columns."""
    lines, cur = [], " "
    for n in names:
        if len(cur) + 1 + len(n) >= 80 and cur.strip():
            lines.append(cur)
            cur = " "
        cur += " " + n
    lines.append(cur)
    return "\n".join(lines) + "\n"


def virtual_file(sh: Shell, path: str) -> str | None:
    st = sh.state
    path = re.sub(r"/+", "/", path)
    if path.startswith("/var/run/"):
        path = "/run/" + path[len("/var/run/") :]
    if path in st.files:
        return st.files[path]
    if path in ("/etc/os-release", "/usr/lib/os-release"):
        return os_release(st.os)
    if path == "/etc/hostname":
        return st.name + "\n"
    if path == "/etc/debian_version" and st.family == "debian":
        return str(RELEASES[st.os]["debian_version"]) + "\n"
    if path == "/etc/alpine-release" and st.family == "alpine":
        return "3.20.3\n"
    if path == "/etc/apk/world" and st.family == "alpine":
        top = ["alpine-base"] + [n for n in ("curl", "openssh-server") if n in st.packages]
        world = [n for n in top if n not in st.held]
        world += [f"{n}={st.packages[n][0]}" for n in st.held if n in st.packages]
        return "".join(w + "\n" for w in sorted(world))
    if path == "/run/reboot-required" and st.reboot_required:
        return "*** System restart required ***\n" if st.os.startswith("ubuntu") else ""
    if path == "/run/reboot-required.pkgs" and st.reboot_required:
        return "".join(p + "\n" for p in st.reboot_pkgs)
    if path == "/proc/uptime":
        up = max(time.time() - st.booted_at, 0.5)
        return f"{up:.2f} {up * 1.9:.2f}\n"
    if path == "/proc/sys/kernel/random/boot_id":
        return st.boot_id + "\n"
    if path == "/proc/loadavg":
        return "0.08 0.03 0.01 1/123 4567\n"
    if path == "/proc/version":
        return f"Linux version {kernel_of(sh)} (build@proxmox) #1 SMP PREEMPT_DYNAMIC PMX\n"
    return None


_DIRS = {
    "/",
    "/etc",
    "/run",
    "/tmp",
    "/root",
    "/var",
    "/var/lib",
    "/var/lib/dpkg",
    "/proc",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/lib",
    "/dev",
}


def service_paths(st: HostState) -> dict[str, str]:
    """The configuration a host's own service keeps ("d" folder, "f" file): /etc/<service>/,
    Traefik's static file and dynamic folder, a node's /etc/network/interfaces."""
    if st.kind == "node":
        return {"/etc/network": "d", "/etc/network/interfaces": "f", "/etc/pve/storage.cfg": "f"}
    main = st.main_service or ""
    out = {f"/etc/{main}": "d"} if main else {}
    if main == "traefik":
        out |= {"/etc/traefik/traefik.yml": "f", "/etc/traefik/dynamic": "d"}
    return out


def path_kind(sh: Shell, path: str) -> str | None:
    """ "f" file, "d" directory, "x" executable, None missing."""
    path = path.rstrip("/") or "/"
    if path in _DIRS or (path == "/etc/pve" and sh.state.kind == "node"):
        return "d"
    if path in service_paths(sh.state):
        return service_paths(sh.state)[path]
    if path == "/run/systemd/system" and sh.state.family == "debian":
        return "d"  # systemd is PID 1 on Debian and Ubuntu (sd_booted); Alpine runs OpenRC
    if path == "/dev/null":
        return "c"
    if path in tool_paths(sh.state).values():
        return "x"
    if sh.state.family == "debian" and path in (
        "/var/lib/dpkg/lock-frontend",
        "/var/lib/dpkg/lock",
        "/var/lib/apt/lists/lock",
    ):
        return "f"
    return "f" if virtual_file(sh, path) is not None else None


# ------------------------------------------------------------------------------------ builtins


@tool("true", ":")
async def _true(sh: Shell, argv: list[str], io: Io) -> int:
    return 0


@tool("false")
async def _false(sh: Shell, argv: list[str], io: Io) -> int:
    return 1


@tool("echo")
async def _echo(sh: Shell, argv: list[str], io: Io) -> int:
    args, newline = argv[1:], True
    if args and args[0] == "-n":
        args, newline = args[1:], False
    elif args and args[0] == "-e":
        args = [a.encode().decode("unicode_escape") for a in args[1:]]
    io.out.write(" ".join(args) + ("\n" if newline else ""))
    return 0


@tool("printf")
async def _printf(sh: Shell, argv: list[str], io: Io) -> int:
    if len(argv) < 2:
        io.err.write("printf: usage: printf format [arguments]\n")
        return 2
    fmt = argv[1].replace("\\n", "\n").replace("\\t", "\t")
    args = argv[2:]
    conv = re.compile(r"%(%|[-0-9.]*[sdiu])")
    uses = len([m for m in conv.finditer(fmt) if m.group(1) != "%"])

    def render(chunk: list[str]) -> str:
        it = iter(chunk)

        def one(m: re.Match[str]) -> str:
            if m.group(1) == "%":
                return "%"
            val = next(it, "")
            spec = m.group(1)
            if spec[-1] in "diu":
                return ("%" + spec[:-1] + "d") % int(val or 0)
            return ("%" + spec) % val

        return conv.sub(one, fmt)

    # The shell's printf reuses the format until the arguments run out.
    out = render(args[:uses])
    rest = args[uses:] if uses else []
    while rest:
        out += render(rest[:uses])
        rest = rest[uses:]
    io.out.write(out)
    return 0


@tool("exit")
async def _exit(sh: Shell, argv: list[str], io: Io) -> int:
    raise ExitShell(
        int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else int(sh.vars.get("?", "0"))
    )


@tool("export", "set", "unset", "cd")
async def _export(sh: Shell, argv: list[str], io: Io) -> int:
    if argv[0] == "export":
        for a in argv[1:]:
            k, _, v = a.partition("=")
            sh.vars[k] = v
    return 0


@tool("exec")
async def _exec(sh: Shell, argv: list[str], io: Io) -> int:
    return await sh.exec_argv(argv[1:], io) if len(argv) > 1 else 0


@tool("command", "type")
async def _command(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    if argv[0] == "command" and args and args[0] not in ("-v", "-V"):
        return await sh.exec_argv(args, io)
    if args and args[0] in ("-v", "-V"):
        args = args[1:]
    paths = tool_paths(sh.state)
    status = 0
    for a in args:
        if a in BUILTINS and a not in paths:
            io.out.write(a + "\n" if argv[0] == "command" else f"{a} is a shell builtin\n")
        elif a in paths or a in paths.values():
            p = paths.get(a, a)
            io.out.write(p + "\n" if argv[0] == "command" else f"{a} is {p}\n")
        else:
            status = 1
            if argv[0] == "type":
                io.err.write(f"bash: type: {a}: not found\n")
    return status


@tool("test", "[")
async def _test(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            io.err.write("[: missing `]'\n" if sh.dialect == "bash" else "sh: 1: [: missing ]\n")
            return 2
        args = args[:-1]
    neg = False
    if args and args[0] == "!":
        neg, args = True, args[1:]
    result = False
    if not args:
        result = False
    elif len(args) == 1:
        result = args[0] != ""
    elif len(args) == 2:
        op, a = args
        kind = path_kind(sh, a)
        result = {
            "-e": kind is not None,
            "-f": kind in ("f", "x"),
            "-d": kind == "d",
            "-x": kind in ("x", "d"),
            "-r": kind is not None,
            "-w": kind is not None,
            "-s": bool(kind == "x" or (kind == "f" and virtual_file(sh, a))),
            "-L": False,
            "-n": a != "",
            "-z": a == "",
            "-c": kind == "c",
        }.get(op, False)
    elif len(args) == 3:
        a, op, b = args
        try:
            result = (
                {
                    "=": a == b,
                    "==": a == b,
                    "!=": a != b,
                }[op]
                if op in ("=", "==", "!=")
                else {
                    "-eq": int(a) == int(b),
                    "-ne": int(a) != int(b),
                    "-lt": int(a) < int(b),
                    "-le": int(a) <= int(b),
                    "-gt": int(a) > int(b),
                    "-ge": int(a) >= int(b),
                }[op]
            )
        except (KeyError, ValueError):
            io.err.write(f"test: {op}: binary operator expected\n")
            return 2
    return 0 if result != neg else 1


# ------------------------------------------------------------------------------- simple tools


@tool("hostname")
async def _hostname(sh: Shell, argv: list[str], io: Io) -> int:
    if "-f" in argv or "--fqdn" in argv:
        io.out.write(f"{sh.host}.{sh.rt.lab.domain}\n")
    elif "-I" in argv or "-i" in argv:
        io.out.write("127.0.0.1 \n")
    else:
        io.out.write(sh.host + "\n")
    return 0


@tool("uname")
async def _uname(sh: Shell, argv: list[str], io: Io) -> int:
    k = kernel_of(sh)
    build = "#1 SMP PREEMPT_DYNAMIC PMX 6.14.11-2 (2025-09-12T09:46Z)"
    tail = "GNU/Linux" if sh.state.family == "debian" else "Linux"
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-"))
    if not flags:
        flags = "s"
    if "a" in flags:
        io.out.write(f"Linux {sh.host} {k} {build} x86_64 {tail}\n")
        return 0
    parts = {"s": "Linux", "n": sh.host, "r": k, "v": build, "m": "x86_64", "o": tail}
    io.out.write(" ".join(parts[f] for f in "snrvmo" if f in flags) + "\n")
    return 0


@tool("id")
async def _id(sh: Shell, argv: list[str], io: Io) -> int:
    if "-u" in argv or "-g" in argv:
        io.out.write("0\n")
    elif "-un" in argv or "-nu" in argv:
        io.out.write("root\n")
    else:
        io.out.write("uid=0(root) gid=0(root) groups=0(root)\n")
    return 0


@tool("whoami")
async def _whoami(sh: Shell, argv: list[str], io: Io) -> int:
    io.out.write("root\n")
    return 0


@tool("nproc")
async def _nproc(sh: Shell, argv: list[str], io: Io) -> int:
    io.out.write("2\n")
    return 0


@tool("sleep")
async def _sleep(sh: Shell, argv: list[str], io: Io) -> int:
    try:
        secs = sum(float(a.rstrip("s")) for a in argv[1:])
    except ValueError:
        io.err.write(f"sleep: invalid time interval '{argv[1]}'\n")
        return 1
    await sh.sleep(secs)
    return 0


@tool("date")
async def _date(sh: Shell, argv: list[str], io: Io) -> int:
    fmt = next((a[1:] for a in argv[1:] if a.startswith("+")), None)
    now = time.time()
    if fmt == "%s":
        io.out.write(f"{int(now)}\n")
    elif fmt:
        io.out.write(time.strftime(fmt, time.gmtime(now)) + "\n")
    else:
        io.out.write(time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(now)) + "\n")
    return 0


@tool("uptime")
async def _uptime(sh: Shell, argv: list[str], io: Io) -> int:
    up = time.time() - sh.state.booted_at
    if "-s" in argv:
        io.out.write(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sh.state.booted_at)) + "\n")
        return 0
    days, rem = divmod(int(up), 86400)
    hours, mins = rem // 3600, rem % 3600 // 60
    dpart = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    io.out.write(
        f" {time.strftime('%H:%M:%S', time.gmtime())} up {dpart}{hours:2d}:{mins:02d},"
        f"  0 users,  load average: 0.08, 0.03, 0.01\n"
    )
    return 0


@tool("cat")
async def _cat(sh: Shell, argv: list[str], io: Io) -> int:
    files = [a for a in argv[1:] if a != "--"]
    if not files:
        io.out.write(io.stdin)
        return 0
    status = 0
    for f in files:
        kind = path_kind(sh, f)
        content = virtual_file(sh, f)
        if kind == "d":
            io.err.write(f"cat: {f}: Is a directory\n")
            status = 1
        elif content is None:
            if kind is not None:
                continue  # an executable or lock file: unreadable binary, print nothing
            io.err.write(f"cat: {f}: No such file or directory\n")
            status = 1
        else:
            io.out.write(content)
    return status


@tool("grep")
async def _grep(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    flags: set[str] = set()
    pattern: str | None = None
    files: list[str] = []
    while args:
        a = args.pop(0)
        if a == "-e" and args:
            pattern = args.pop(0)
        elif (a.startswith("-") and len(a) > 1 and pattern is None) or a.startswith("--"):
            flags.update(a.lstrip("-") if not a.startswith("--") else [a])
        elif pattern is None:
            pattern = a
        else:
            files.append(a)
    if pattern is None:
        io.err.write("Usage: grep [OPTION]... PATTERNS [FILE]...\n")
        return 2
    text = "".join(virtual_file(sh, f) or "" for f in files) if files else io.stdin
    rx_src = (
        re.escape(pattern)
        if "F" in flags
        else (
            pattern
            if "E" in flags
            else pattern.replace(r"\|", "|").replace(r"\(", "(").replace(r"\)", ")")
        )
    )
    rx = re.compile(rx_src, re.I if "i" in flags else 0)
    lines = [ln for ln in text.splitlines() if bool(rx.search(ln)) != ("v" in flags)]
    if "c" in flags:
        io.out.write(f"{len(lines)}\n")
    elif "q" not in flags:
        io.out.write("".join(ln + "\n" for ln in lines))
    return 0 if lines else 1


@tool("head", "tail")
async def _headtail(sh: Shell, argv: list[str], io: Io) -> int:
    n, files, from_start = 10, [], False
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a == "-n" and args:
            val = args.pop(0)
            from_start = val.startswith("+")  # tail -n +N: from line N on
            n = int(val.lstrip("+"))
        elif re.match(r"^-n?\d+$", a):
            n = int(a.lstrip("-n"))
        else:
            files.append(a)
    text = "".join(virtual_file(sh, f) or "" for f in files) if files else io.stdin
    lines = text.splitlines(keepends=True)
    if argv[0] == "head":
        io.out.write("".join(lines[:n]))
    elif from_start:
        io.out.write("".join(lines[max(n - 1, 0) :]))
    else:
        io.out.write("".join(lines[-n:] if n else []))
    return 0


@tool("wc")
async def _wc(sh: Shell, argv: list[str], io: Io) -> int:
    text = io.stdin
    if "-l" in argv:
        io.out.write(f"{text.count(chr(10))}\n")
    else:
        io.out.write(f"{text.count(chr(10))} {len(text.split())} {len(text.encode())}\n")
    return 0


@tool("sort")
async def _sort(sh: Shell, argv: list[str], io: Io) -> int:
    lines = sorted(io.stdin.splitlines(), reverse="-r" in argv)
    if "-u" in argv:
        lines = list(dict.fromkeys(lines))
    io.out.write("".join(ln + "\n" for ln in lines))
    return 0


@tool("timeout")
async def _timeout(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-s", "-k", "--signal", "--kill-after") and args:
            args.pop(0)
    if len(args) < 2:
        io.err.write("timeout: missing operand\n")
        return 125
    try:
        secs = float(args[0].rstrip("s"))
    except ValueError:
        io.err.write(f"timeout: invalid time interval '{args[0]}'\n")
        return 125
    try:
        return await asyncio.wait_for(sh.exec_argv(args[1:], io), secs or None)
    except TimeoutError:
        return 124


@tool("sh", "bash", "ash", "dash")
async def _sh(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    script: str | None = None
    dialect = (
        "ash" if sh.state.family == "alpine" else ("bash" if argv[0].endswith("bash") else "dash")
    )
    while args:
        a = args.pop(0)
        if a == "-c" and args:
            script = args.pop(0)
            break
        if a.startswith("-") and "c" in a and args:  # -ec, -lc
            script = args.pop(0)
            break
        if not a.startswith("-"):  # `sh FILE`: run the file
            script = virtual_file(sh, a)
            if script is None:
                io.err.write(
                    f"bash: {a}: No such file or directory\n"
                    if dialect == "bash"
                    else f"{argv[0]}: 0: cannot open {a}: No such file\n"
                    if dialect == "dash"
                    else f"{argv[0]}: can't open '{a}': No such file or directory\n"
                )
                return 127 if dialect == "bash" else 2
            break
    if script is None:
        script = io.stdin  # `sh -s` / `ssh host sh < script`
    return await sh.child(dialect).run_script(script, io)


# ------------------------------------------------------------------------ files and processes


@tool("mkdir")
async def _mkdir(sh: Shell, argv: list[str], io: Io) -> int:
    # directories are not modelled: files may be written anywhere; only the errors matter
    if not [a for a in argv[1:] if not a.startswith("-")]:
        io.err.write("mkdir: missing operand\n")
        return 1
    return 0


@tool("rm")
async def _rm(sh: Shell, argv: list[str], io: Io) -> int:
    force = any(a.startswith("-") and "f" in a for a in argv[1:])
    status = 0
    for path in (a for a in argv[1:] if not a.startswith("-")):
        if sh.state.files.pop(path, None) is None and not force:
            io.err.write(f"rm: cannot remove '{path}': No such file or directory\n")
            status = 1
    return status


@tool("mv")
async def _mv(sh: Shell, argv: list[str], io: Io) -> int:
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if len(paths) != 2:
        io.err.write("mv: missing destination file operand\n")
        return 1
    content = sh.state.files.pop(paths[0], None)
    if content is None:
        io.err.write(f"mv: cannot stat '{paths[0]}': No such file or directory\n")
        return 1
    sh.state.files[paths[1]] = content
    return 0


@tool("read")
async def _read(sh: Shell, argv: list[str], io: Io) -> int:
    names = [a for a in argv[1:] if not a.startswith("-")] or ["REPLY"]
    line, newline, _ = io.stdin.partition("\n")
    words = line.split(None, len(names) - 1)
    for k, name in enumerate(names):
        sh.vars[name] = words[k] if k < len(words) else ""
    return 0 if newline or line else 1  # end of file before a line: status 1


@tool("kill")
async def _kill(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    probe = bool(args) and args[0] == "-0"
    if args and args[0].startswith("-"):
        args = args[1:]
    status = 0
    for a in args:
        pid = int(a) if a.isdigit() else -1
        if pid < 0 or not sh.rt.job_alive(sh.host, pid):
            io.err.write(
                f"bash: kill: ({a}) - No such process\n"
                if sh.dialect == "bash"
                else "sh: 1: kill: No such process\n\n"
                if sh.dialect == "dash"
                else f"sh: can't kill pid {a}: No such process\n"
            )
            status = 1
        elif not probe:
            sh.rt.stop_job(sh.host, pid)
    return status


@tool("systemd-run")
async def _systemd_run(sh: Shell, argv: list[str], io: Io) -> int:
    """A transient service: the command runs as a background process of the host, the unit is
    active while it runs; ``--collect`` unloads it afterwards even when it failed."""
    args, unit, collect, quiet = argv[1:], None, False, False
    with_value = ("-p", "--property", "--description", "--slice", "-E", "--setenv")
    while args and args[0].startswith("-"):
        a = args.pop(0)
        if a == "--":
            break
        if a.startswith("--unit="):
            unit = a.split("=", 1)[1]
        elif a in ("-u", "--unit") and args:
            unit = args.pop(0)
        elif a in ("-G", "--collect"):
            collect = True
        elif a in ("-q", "--quiet"):
            quiet = True
        elif a in with_value and args:
            args.pop(0)
        elif not a.startswith(tuple(f"{w}=" for w in with_value if w.startswith("--"))):
            io.err.write(f"systemd-run: unrecognized option '{a}'\n")
            return 1
    if not args:
        io.err.write("Command line to execute required.\n")
        return 1
    name = unit or f"run-r{uuid.uuid4().hex}"
    name = name if "." in name else name + ".service"
    st = sh.state
    if name in st.services:
        io.err.write(
            "Failed to start transient service unit: "
            f"Unit {name} was already loaded or has a fragment file.\n"
        )
        return 1
    st.services[name] = "active"
    st.transient.append(name)
    host, command = sh.host, list(args)

    async def service(pid: int) -> int:
        proc = sh.child("dash")  # systemd execs argv itself; stdout and stderr go to the journal
        proc.vars["$"] = str(pid)
        quiet_io = Io(_NullOut(), _NullOut(), "")
        rc = 1  # killed (by a signal): the unit fails
        try:
            rc = await proc.exec_argv(command, quiet_io)
        except ExitShell as e:
            rc = e.code
        except Exception:
            rc = 1
        finally:
            now = sh.rt.lab.hosts.get(host)
            if isinstance(now, HostState) and name in now.transient:
                if collect or rc == 0:
                    now.services.pop(name, None)
                    now.transient.remove(name)
                else:
                    now.services[name] = "failed"
        return rc

    sh.rt.start_job(host, service)
    if not quiet:
        invocation = f"; invocation ID: {uuid.uuid4().hex}" if st.os == "debian13" else ""
        io.err.write(f"Running as unit: {name}{invocation}\n")  # systemd >= 256 names it
    return 0


# ------------------------------------------------------------------------------------ reboot


@tool("reboot", "shutdown")
async def _reboot(sh: Shell, argv: list[str], io: Io) -> int:
    if argv[0] == "shutdown" and "-r" not in argv and "--reboot" not in argv:
        io.err.write("shutdown: only reboots are simulated\n")
        return 1
    if argv[0] == "shutdown":
        io.out.write(
            f"Broadcast message from root@{sh.host} on pts/0:\n\nThe system will reboot now!\n\n"
        )
    sh.rt.request_reboot(sh.host)
    raise Rebooting()


# ----------------------------------------------------------------------------------- systemctl


def _unit(name: str) -> str:
    return name if "." in name else name + ".service"


@tool("systemctl")
async def _systemctl(sh: Shell, argv: list[str], io: Io) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    quiet = "-q" in argv or "--quiet" in argv
    if not args:
        io.out.write("  UNIT LOAD ACTIVE SUB DESCRIPTION\n")
        return 0
    verb, units = args[0], [_unit(u) for u in args[1:]]
    st = sh.state
    if verb == "reboot":
        sh.rt.request_reboot(sh.host)
        raise Rebooting()
    if verb == "is-active":
        ok = True
        for u in units:
            state = st.services.get(u, "inactive")
            if not quiet:
                io.out.write(state + "\n")
            ok = ok and state == "active"
        return 0 if ok else 3
    if verb == "is-failed":
        failed = any(st.services.get(u) == "failed" for u in units)
        if not quiet:
            io.out.write(
                "".join(
                    ("failed" if st.services.get(u) == "failed" else st.services.get(u, "inactive"))
                    + "\n"
                    for u in units
                )
            )
        return 0 if failed else 1
    if verb == "is-system-running":
        state = "degraded" if "failed" in st.services.values() else "running"
        if not quiet:
            io.out.write(state + "\n")
        return 0 if state == "running" else 1
    if verb in ("restart", "start", "try-restart", "reload-or-restart"):
        status = 0
        for u in units:
            if u not in st.services:
                io.err.write(f"Failed to {verb} {u}: Unit {u} not found.\n")
                status = 5
                continue
            if broken_service(sh) == u:
                io.err.write(
                    f"Job for {u} failed because the control process exited with error "
                    f'code.\nSee "systemctl status {u}" and "journalctl -xeu {u}" for '
                    "details.\n"
                )
                st.services[u] = "failed"
                status = 1
                continue
            st.services[u] = "active"
            if u in st.needrestart_svc:
                st.needrestart_svc.remove(u)
        return status
    if verb == "stop":
        for u in units:
            if u in st.services:
                st.services[u] = "inactive"
        return 0
    if verb == "status":
        status = 0
        for u in units:
            unit_state = st.services.get(u)
            if unit_state is None:
                io.err.write(f"Unit {u} could not be found.\n")
                status = 4
                continue
            sub = {"active": "running", "failed": "failed", "inactive": "dead"}[unit_state]
            io.out.write(
                f"● {u}\n     Loaded: loaded (/usr/lib/systemd/system/{u}; enabled; "
                f"preset: enabled)\n     Active: {unit_state} ({sub})\n"
            )
            status = status or (0 if unit_state == "active" else 3)
        return status
    if verb == "cat":
        status = 0
        for u in units:
            if u not in st.services:
                io.err.write(f"No files found for {u}.\n")
                status = 1
                continue
            name = u.rsplit(".", 1)[0]
            io.out.write(
                f"# /usr/lib/systemd/system/{u}\n[Unit]\nDescription={name}\n"
                "After=network-online.target\n\n[Service]\n"
                f"ExecStart=/usr/bin/{name}\nRestart=on-failure\n\n"
                "[Install]\nWantedBy=multi-user.target\n"
            )
        return status
    if verb == "list-units" or verb == "--failed":
        for u, s in sorted(st.services.items()):
            if "--failed" in argv and s != "failed":
                continue
            io.out.write(f"  {u} loaded {s} {'running' if s == 'active' else s} {u}\n")
        return 0
    io.err.write(f'Unknown command verb "{verb}".\n')
    return 1


# Ports each service listens on (TCP), beside sshd's 22 where it runs.
def _mac(host: str, index: int) -> str:
    digest = zlib.crc32(f"{host}/{index}".encode())
    return "bc:24:11:" + ":".join(f"{(digest >> s) & 0xFF:02x}" for s in (16, 8, 0))


def links(st: HostState) -> list[str]:
    """The host's interfaces: a node's NIC and bridges (pve2 carries a second bridge), a
    container's eth0 veth peer."""
    if st.kind == "node":
        return ["enp3s0", "vmbr0"] + (["vmbr1"] if st.name == "pve2" else [])
    return ["eth0"]


@tool("ip")
async def _ip(sh: Shell, argv: list[str], io: Io) -> int:
    """``ip [-o] link [show]`` as iproute2 prints it (``-o``: one line per link, ``\\`` joins)."""
    args = [a for a in argv[1:] if a not in ("-o", "-oneline", "--oneline")]
    if not args or args[0] not in ("link", "l") or args[1:] not in ([], ["show"], ["list"]):
        io.err.write(f'Object "{args[0] if args else ""}" is unknown, try "ip help".\n')
        return 255 if args else 1
    one = len(args) != len(argv) - 1
    sep = "\\    " if one else "\n    "
    st = sh.state
    io.out.write(
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group "
        f"default qlen 1000{sep}link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
    )
    for i, name in enumerate(links(st), start=2):
        if st.kind == "node" and name.startswith("vmbr"):
            flags, extra = "<BROADCAST,MULTICAST,UP,LOWER_UP>", "qdisc noqueue state UP"
        elif st.kind == "node":
            flags, extra = "<BROADCAST,MULTICAST,UP,LOWER_UP>", "qdisc mq master vmbr0 state UP"
        else:
            name = f"{name}@if{40 + i}"
            flags, extra = "<BROADCAST,MULTICAST,UP,LOWER_UP>", "qdisc noqueue state UP"
        tail = " link-netnsid 0" if st.kind != "node" else ""
        io.out.write(
            f"{i}: {name}: {flags} mtu 1500 {extra} mode DEFAULT group default qlen 1000{sep}"
            f"link/ether {_mac(st.name, i)} brd ff:ff:ff:ff:ff:ff{tail}\n"
        )
    return 0


def broken_service(sh: Shell) -> str | None:
    """The unit the broken_after_upgrade fault breaks on this host (once it has upgraded)."""
    val = fault(sh, "broken_after_upgrade_hosts")
    if val is None:
        return None
    st = sh.state
    return _unit(val if isinstance(val, str) else (st.main_service or "cron"))


@tool("rc-service")
async def _rc_service(sh: Shell, argv: list[str], io: Io) -> int:
    if len(argv) < 3:
        io.err.write(" * rc-service: service name required\n")
        return 1
    name, verb = argv[1], argv[2]
    st = sh.state
    if name not in st.services:
        io.err.write(f" * rc-service: service `{name}' does not exist\n")
        return 1
    if verb == "status":
        state = st.services[name]
        io.out.write(f" * status: {state}\n")
        return {"started": 0, "crashed": 32}.get(state, 3)  # OpenRC's exit codes
    if verb in ("restart", "start"):
        st.services[name] = "started"
        io.err.write(f" * Starting {name} ...\n [ ok ]\n")
    return 0


# ------------------------------------------------------------------------------ apt and friends


def _apt_options(args: list[str]) -> tuple[list[str], set[str], dict[str, str]]:
    """Split apt-get arguments into positional words, short/long flags and -o options."""
    pos: list[str] = []
    flags: set[str] = set()
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "--option") and i + 1 < len(args):
            k, _, v = args[i + 1].partition("=")
            opts[k.lower()] = v
            i += 2
            continue
        if a.startswith("-o") and len(a) > 2 and not a.startswith("--"):
            k, _, v = a[2:].lstrip("=").partition("=")
            opts[k.lower()] = v
        elif a.startswith("--"):
            flags.add(a)
        elif a.startswith("-") and len(a) > 1:
            for ch in a[1:]:
                flags.add("-" + ch)
        else:
            pos.append(a)
        i += 1
    return pos, flags, opts


def _simulate(flags: set[str]) -> bool:
    return bool(flags & {"-s", "--simulate", "--just-print", "--dry-run", "--recon", "--no-act"})


def _yes(flags: set[str], opts: dict[str, str]) -> bool:
    return bool(flags & {"-y", "--yes", "--assume-yes"}) or opts.get(
        "apt::get::assume-yes", ""
    ).lower() in ("1", "true", "yes")


def _lock_msgs(sh: Shell, lockfile: str) -> str:
    st = sh.state
    msg = (
        f"E: Could not get lock {lockfile}. It is held by process {st.lock_pid} "
        f"({st.lock_holder})\n"
    )
    if st.os in NEW_APT:
        msg += (
            "N: Be aware that removing the lock file is not a solution and may break your system.\n"
        )
    return msg


async def acquire_dpkg_lock(sh: Shell, io: Io, opts: dict[str, str]) -> bool:
    """The frontend lock: fail at once, or wait up to DPkg::Lock::Timeout seconds (real apt)."""
    if not sh.state.lock_held():
        return True
    unable = (
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), "
        "is another process using it?\n"
    )
    try:
        timeout = float(opts.get("dpkg::lock::timeout", "0") or 0)
    except ValueError:
        timeout = 0.0
    if timeout == 0:
        io.err.write(_lock_msgs(sh, "/var/lib/dpkg/lock-frontend") + unable)
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else float("inf")
    while sh.state.lock_held():
        left = deadline - loop.time()
        if left <= 0:
            io.err.write(unable)
            return False
        st = sh.state
        io.out.write(
            f"Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. "
            f"It is held by process {st.lock_pid} ({st.lock_holder})...\n"
        )
        await asyncio.sleep(min(1.0, left, max(st.lock_until - time.time(), 0.01)))
    return True


def _origin(st: HostState, p: dict[str, Any]) -> str:
    inst = RELEASES[st.os].get("inst", {})
    assert isinstance(inst, dict)
    if p.get("pve"):
        return "Proxmox:13/stable"
    return ", ".join(inst.get(s, f"Debian:/{s}") for s in p["suites"])


def _get_source(st: HostState, p: dict[str, Any]) -> tuple[str, str]:
    rel = RELEASES[st.os]
    sources = rel["sources"]
    assert isinstance(sources, list)
    if p.get("pve"):
        return "http://mirror.lab.internal/proxmox/debian/pve", "trixie/pve-no-subscription"
    want_sec = p.get("security") and not any(s in p["suites"] for s in rel.get("regular", []))  # type: ignore[operator]
    for url, dist, _ in sources:
        if want_sec == dist.endswith(("-security", "/updates")) and (
            want_sec or not dist.endswith("-backports")
        ):
            comp = "main"
            return url, f"{dist}/{comp}"
    url, dist, _ = sources[0]
    return url, f"{dist}/main"


def plan_upgrade(
    st: HostState, dist: bool, only: list[str] | None = None, keep: list[str] | None = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """(packages to upgrade, new packages pulled in, kept back) as apt-get would decide;
    ``keep``: packages the command line pins at their installed version."""
    upgrades: list[str] = []
    new: list[list[str]] = []
    kept: list[str] = []
    for name in sorted(st.pending):
        if (only is not None and name not in only) or name in (keep or ()):
            continue
        p = st.pending[name]
        if name in st.held or (p.get("pulls") and not dist and only is None):
            kept.append(name)
            continue
        upgrades.append(name)
        for pull in p.get("pulls") or []:
            if pull[0] not in st.packages:
                new.append(pull)
    return upgrades, new, kept


async def apt_update(sh: Shell, io: Io, apt_cli: bool) -> int:
    st = sh.state
    if st.lock_held():
        # The lists lock: DPkg::Lock::Timeout does not apply to update (captured behaviour).
        io.out.write("Reading package lists...\n")
        io.err.write(
            _lock_msgs(sh, "/var/lib/apt/lists/lock")
            + "E: Unable to lock directory /var/lib/apt/lists/\n"
        )
        return 100
    rel = RELEASES[st.os]
    sources = list(rel["sources"])  # type: ignore[call-overload]
    if st.kind == "node":
        from sandbox.fleet.catalog import PVE_SOURCE

        sources.append(PVE_SOURCE)
    await sh.sleep(sh.scaled(1.0))
    fresh = st.files.get("/var/lib/apt/lists/.sandbox-updated") is None
    fetched = 0.0
    lines = []
    for k, (url, dist, kb) in enumerate(sources, 1):
        if fresh and k > 1:
            lines.append(f"Get:{k} {url} {dist} InRelease [{size_to_str(kb * 1000)}B]")
            fetched += kb
        else:
            lines.append(f"Hit:{k} {url} {dist} InRelease")
    st.files["/var/lib/apt/lists/.sandbox-updated"] = str(time.time())
    io.out.write("\n".join(lines) + "\n")
    if fetched:
        io.out.write(
            f"Fetched {size_to_str(fetched * 1000)}B in 1s "
            f"({size_to_str(fetched * 1000 * 0.8)}B/s)\n"
        )
    io.out.write("Reading package lists...\n")
    if apt_cli:
        io.err.write(_APT_WARNING)
        io.out.write("Building dependency tree...\nReading state information...\n")
        n = len(st.pending)
        io.out.write(
            f"{n} package{'s' if n != 1 else ''} can be upgraded. Run 'apt list "
            "--upgradable' to see {0}.\n".format("them" if n != 1 else "it")
            if n
            else "All packages are up to date.\n"
        )
    return 0


async def apt_upgrade(
    sh: Shell, io: Io, verb: str, names: list[str], flags: set[str], opts: dict[str, str]
) -> int:
    """apt-get upgrade | dist-upgrade | full-upgrade | install --only-upgrade, real or -s."""
    simulate = _simulate(flags)
    dist = verb in ("dist-upgrade", "full-upgrade") or (
        verb == "upgrade" and "--with-new-pkgs" in flags
    )
    if verb == "install" and not names:
        verb, dist = "upgrade", False
    if not simulate and not await acquire_dpkg_lock(sh, io, opts):
        return 100
    st = sh.state
    out = io.out
    out.write(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n"
    )
    only: list[str] | None = None
    pinned: list[str] = []
    if verb == "install":
        only = []
        for n in names:
            n = n.split("=")[0]
            if n in st.pending:
                only.append(n)
            elif n in st.packages:
                out.write(f"{n} is already the newest version ({st.packages[n][0]}).\n")
            elif "--only-upgrade" in flags:
                out.write(f"Skipping {n}, it is not installed and only upgrades are requested.\n")
            else:
                io.err.write(f"E: Unable to locate package {n}\n")
                return 100
    else:
        # `dist-upgrade name=version`: apt takes the named packages first (a version equal to
        # the installed one keeps the package there for this run), then upgrades the rest.
        for n in names:
            name, _, ver = n.partition("=")
            if name not in st.packages:
                io.err.write(f"E: Unable to locate package {name}\n")
                return 100
            installed = st.packages[name][0]
            if ver and ver not in (installed, st.pending.get(name, {}).get("version")):
                io.err.write(f"E: Version '{ver}' for '{name}' was not found\n")
                return 100
            if ver == installed or (not ver and name not in st.pending):
                out.write(f"{name} is already the newest version ({installed}).\n")
                out.write(f"{name} set to manually installed.\n")
                pinned.append(name)
        out.write("Calculating upgrade...\n")
    upgrades, new, kept = plan_upgrade(st, dist, only, keep=pinned)
    if kept:
        out.write("The following packages have been kept back:\n" + wrap_list(kept))
    if new:
        out.write(
            "The following NEW packages will be installed:\n" + wrap_list([p[0] for p in new])
        )
    if upgrades:
        out.write("The following packages will be upgraded:\n" + wrap_list(upgrades))
    not_upgraded = len(st.pending) - len(upgrades) - len(set(pinned) & set(st.pending))
    out.write(
        f"{len(upgrades)} upgraded, {len(new)} newly installed, 0 to remove and "
        f"{not_upgraded} not upgraded.\n"
    )
    if st.half_configured:
        out.write(f"{len(st.half_configured)} not fully installed or removed.\n")
    if simulate:
        for name in upgrades:
            p = st.pending[name]
            old = st.packages.get(name, ["?"])[0]
            desc = f"({p['version']} {_origin(st, p)} [{p['arch']}])"
            for pull in p.get("pulls") or []:  # dependencies are unpacked first
                if pull[0] not in st.packages:
                    out.write(f"Inst {pull[0]} ({pull[1]} {_origin(st, p)} [{pull[2]}])\n")
            out.write(f"Inst {name} [{old}] {desc}\n")
            for pull in p.get("pulls") or []:
                if pull[0] not in st.packages:
                    out.write(f"Conf {pull[0]} ({pull[1]} {_origin(st, p)} [{pull[2]}])\n")
            out.write(f"Conf {name} {desc}\n")
        return 0
    if not upgrades and not new and not st.half_configured:
        return 0
    total = sum(pkg_size(n) for n in upgrades) + sum(pkg_size(p[0]) * 30 for p in new)
    if upgrades or new:
        out.write(f"Need to get {size_to_str(total)}B of archives.\n")
        out.write(
            f"After this operation, {size_to_str(total // 40 + 1024)}B of additional "
            "disk space will be used.\n"
        )
    if not _yes(flags, opts):
        out.write("Do you want to continue? [Y/n] Abort.\n")
        return 1
    hang = fault(sh, "hanging_commands")
    del hang  # matched on the whole command line by the server
    per_pkg = sh.scaled(0.25)
    k = 0
    for name in upgrades:
        p = st.pending[name]
        url, dist_comp = _get_source(st, p)
        k += 1
        out.write(
            f"Get:{k} {url} {dist_comp} amd64 {name} {p['arch']} {p['version']} "
            f"[{size_to_str(pkg_size(name))}B]\n"
        )
        for pull in p.get("pulls") or []:
            if pull[0] not in st.packages:
                k += 1
                out.write(
                    f"Get:{k} {url} {dist_comp} amd64 {pull[0]} {pull[2]} {pull[1]} "
                    f"[{size_to_str(pkg_size(pull[0]) * 30)}B]\n"
                )
    if k:
        await sh.sleep(sh.scaled(0.5))
        out.write(f"Fetched {size_to_str(total)}B in 1s ({size_to_str(total * 0.9)}B/s)\n")
    steps = "".join(f"(Reading database ... {pct}%" for pct in range(5, 101, 5))
    out.write(
        f"(Reading database ... {steps}(Reading database ... {st.db_files} files and "
        "directories currently installed.)\n"
    )
    for pull in new:
        out.write(
            f"Selecting previously unselected package {pull[0]}.\n"
            f"Preparing to unpack .../{pull[0]}_{pull[1].replace(':', '%3a')}_{pull[2]}.deb"
            f" ...\nUnpacking {pull[0]} ({pull[1]}) ...\n"
        )
        await sh.sleep(per_pkg)
    for name in upgrades:
        p = st.pending[name]
        old = st.packages.get(name, ["?"])[0]
        out.write(
            f"Preparing to unpack .../{name}_{p['version'].replace(':', '%3a')}_{p['arch']}"
            f".deb ...\nUnpacking {name} ({p['version']}) over ({old}) ...\n"
        )
        await sh.sleep(per_pkg)
    failing = fault(sh, "failing_upgrade_hosts")
    fail_pkg: str | None = None
    if failing is not None:
        candidates = list(st.half_configured) + upgrades
        fail_pkg = failing if isinstance(failing, str) else (candidates[0] if candidates else None)
    # Apply: the state changes even if a postinst fails afterwards (as dpkg leaves it).
    st = sh.state
    configure = list(dict.fromkeys(st.half_configured + [p[0] for p in new] + upgrades))
    for pull in new:
        st.packages[pull[0]] = [pull[1], pull[2], pull[3]]
    restart: list[str] = []
    for name in upgrades:
        p = st.pending.pop(name)
        prev = st.packages.get(name, ["", p["arch"], name])
        st.packages[name] = [p["version"], prev[1], prev[2]]
        if name in _RESTART_LIBS:
            restart = _services_to_restart(st)
        if name == "libc6" and st.os.startswith("ubuntu"):
            _set_reboot(st, name)
        if name.startswith("linux-image-") and st.kind == "vm":
            _set_reboot(st, name)  # a VM boots its own kernel (containers share the node's)
    for pull in new:
        if pull[0].startswith("proxmox-kernel-"):
            if PVE_KERNEL_NEW not in st.kernels:
                st.kernels.append(PVE_KERNEL_NEW)
            _set_reboot(st, pull[0])
    errors: list[str] = []
    for name in configure:
        ver = st.packages.get(name, [""])[0]
        out.write(f"Setting up {name} ({ver}) ...\n")
        if name.startswith("proxmox-kernel-") and name.endswith("-signed"):
            kver = PVE_KERNEL_NEW
            out.write(
                "Examining /etc/kernel/postinst.d.\n"
                f"run-parts: executing /etc/kernel/postinst.d/initramfs-tools {kver} "
                f"/boot/vmlinuz-{kver}\nupdate-initramfs: Generating /boot/initrd.img-{kver}"
                f"\nrun-parts: executing /etc/kernel/postinst.d/proxmox-auto-removal {kver} "
                f"/boot/vmlinuz-{kver}\nrun-parts: executing /etc/kernel/postinst.d/"
                f"zz-proxmox-boot {kver} /boot/vmlinuz-{kver}\n"
            )
        if name == fail_pkg:
            out.write(
                f"dpkg: error processing package {name} (--configure):\n installed {name} "
                "package post-installation script subprocess returned error exit status 1\n"
            )
            errors.append(name)
        elif name in st.half_configured:
            st.half_configured.remove(name)
    if st.family == "debian" and "libc6" in upgrades:
        out.write(f"Processing triggers for libc-bin ({st.packages['libc6'][0]}) ...\n")
    if st.os == "debian12":
        out.write("Processing triggers for man-db (2.11.2-2) ...\n")
    for name in errors:
        if name not in st.half_configured:
            st.half_configured.append(name)
    for svc in restart:
        if svc not in st.needrestart_svc:
            st.needrestart_svc.append(svc)
    broken = broken_service(sh)
    if broken and upgrades:
        st.services[broken] = "failed"
    if errors:
        out.write(
            "Errors were encountered while processing:\n" + "".join(f" {e}\n" for e in errors)
        )
        io.err.write("E: Sub-process /usr/bin/dpkg returned an error code (1)\n")
        return 100
    return 0


def _services_to_restart(st: HostState) -> list[str]:
    if st.kind == "node":
        return ["pvestatd.service", "pvedaemon.service", "pveproxy.service", "cron.service"]
    return sorted({u for u in st.services if u != "ssh.service"})


def _set_reboot(st: HostState, pkg: str) -> None:
    st.reboot_required = True
    if pkg not in st.reboot_pkgs:
        st.reboot_pkgs.append(pkg)


def _quiet(args: list[str]) -> int:
    """apt's quiet level: -q, -qq, -q=2, --quiet, --quiet=2, -o quiet=N."""
    level = 0
    for a in args:
        m = re.match(r"^-(q+)$", a)
        if m:
            level += len(m.group(1))
        elif a.startswith(("-q=", "--quiet=")):
            level = int(a.split("=", 1)[1] or 1)
        elif a == "--quiet":
            level += 1
    return level


_KEEP_QUIET = (
    "Inst ",
    "Conf ",
    "Remv ",
    "E: ",
    "W: ",
    "dpkg: ",
    " ",
    "Preparing to unpack",
    "Unpacking ",
    "Setting up ",
    "Selecting previously",
    "Processing triggers",
    "(Reading database",
    "Errors were encountered",
    "Examining ",
    "run-parts:",
    "update-initramfs:",
)


class _QuietSink(Sink):
    """-qq: apt drops its own progress and summary lines; Inst/Conf lines, errors and dpkg's
    output (which apt does not filter) still come through."""

    def __init__(self, inner: Sink) -> None:
        self.inner, self.buf = inner, ""

    def write(self, text: str) -> None:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for ln in lines:
            # apt's package lists are indented by two spaces; dpkg's error details by one.
            if ln.startswith(_KEEP_QUIET) and not ln.startswith("  "):
                self.inner.write(ln + "\n")


@tool("apt-get")
async def _apt_get(sh: Shell, argv: list[str], io: Io) -> int:
    if _quiet(argv[1:]) >= 2:
        io = Io(_QuietSink(io.out), io.err, io.stdin)
    pos, flags, opts = _apt_options(argv[1:])
    if not pos:
        io.err.write(
            "E: Invalid operation \n"
            if False
            else "apt 2.6.1 (amd64)\nUsage: apt-get [options] command\n"
        )
        return 1
    verb, names = pos[0], pos[1:]
    if verb == "update":
        return await apt_update(sh, io, apt_cli=False)
    if verb in ("upgrade", "dist-upgrade", "full-upgrade", "install"):
        return await apt_upgrade(
            sh, io, "dist-upgrade" if verb == "full-upgrade" else verb, names, flags, opts
        )
    if verb in ("clean", "autoclean", "check"):
        if verb == "check":
            io.out.write(
                "Reading package lists...\nBuilding dependency tree...\n"
                "Reading state information...\n"
            )
        return 0
    if verb in ("autoremove", "autopurge"):
        if not _simulate(flags) and not await acquire_dpkg_lock(sh, io, opts):
            return 100
        io.out.write(
            "Reading package lists...\nBuilding dependency tree...\n"
            f"Reading state information...\n0 upgraded, 0 newly installed, 0 to remove "
            f"and {len(sh.state.pending)} not upgraded.\n"
        )
        return 0
    io.err.write(f"E: Invalid operation {verb}\n")
    return 100


@tool("apt")
async def _apt(sh: Shell, argv: list[str], io: Io) -> int:
    pos, flags, opts = _apt_options(argv[1:])
    if not pos:
        io.out.write("apt 2.6.1 (amd64)\nUsage: apt [options] command\n")
        return 1
    verb = pos[0]
    st = sh.state
    if verb == "list":
        io.err.write(_APT_WARNING)
        io.out.write("Listing...\n")
        if "--upgradable" in flags or "--upgradeable" in flags:
            for name in sorted(st.pending):
                p = st.pending[name]
                old = st.packages.get(name, ["?"])[0]
                io.out.write(
                    f"{name}/{','.join(p['suites'])} {p['version']} {p['arch']} "
                    f"[upgradable from: {old}]\n"
                )
        else:
            regular = ",".join(RELEASES[st.os].get("regular") or ["now"])  # type: ignore[call-overload]
            for name in sorted(st.packages):
                ver, arch, _ = st.packages[name]
                status = "[installed]"
                if name in st.pending:
                    status = f"[installed,upgradable to: {st.pending[name]['version']}]"
                io.out.write(f"{name}/{regular},now {ver} {arch} {status}\n")
        return 0
    if verb == "update":
        return await apt_update(sh, io, apt_cli=True)
    if verb in ("upgrade", "full-upgrade", "dist-upgrade", "install"):
        io.err.write(_APT_WARNING)
        # `apt upgrade` installs new dependencies, unlike `apt-get upgrade`.
        if verb == "upgrade":
            flags.add("--with-new-pkgs")
        return await apt_upgrade(
            sh, io, "dist-upgrade" if verb == "full-upgrade" else verb, pos[1:], flags, opts
        )
    io.err.write(f"E: Invalid operation {verb}\n")
    return 100


@tool("apt-mark")
async def _apt_mark(sh: Shell, argv: list[str], io: Io) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    st = sh.state
    if not args:
        io.err.write("E: No command given\n")
        return 100
    verb, names = args[0], args[1:]
    if verb == "showhold":
        io.out.write("".join(n + "\n" for n in sorted(st.held)))
        return 0
    if verb in ("hold", "unhold"):
        # apt-mark's DoSelection: unknown names are errors (exit 100) but the known ones are
        # still changed; the unchanged ones are reported first, then the changes.
        unknown = [n for n in names if n not in st.packages]
        known = list(dict.fromkeys(n for n in names if n in st.packages))
        errors = [f"E: Unable to locate package {n}\n" for n in unknown]
        if not known:
            io.err.write("".join(errors) + "E: No packages found\n")
            return 100
        hold = verb == "hold"
        done = [n for n in known if (n in st.held) == hold]
        change = [n for n in known if (n in st.held) != hold]
        for n in done:
            io.out.write(
                f"{n} was already set on hold.\n" if hold else f"{n} was already not on hold.\n"
            )
        for n in change:
            if hold:
                st.held.append(n)
                io.out.write(f"{n} set on hold.\n")
            else:
                st.held.remove(n)
                io.out.write(f"Canceled hold on {n}.\n")
        io.err.write("".join(errors))
        return 100 if errors else 0
    if verb in ("showmanual", "showauto"):
        io.out.write("".join(n + "\n" for n in sorted(st.packages)) if verb == "showmanual" else "")
        return 0
    io.err.write(f"E: Invalid operation {verb}\n")
    return 100


@tool("apt-cache")
async def _apt_cache(sh: Shell, argv: list[str], io: Io) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    st = sh.state
    if args and args[0] == "policy":
        for n in args[1:]:
            if n not in st.packages:
                continue
            cand = st.pending.get(n, {}).get("version", st.packages[n][0])
            io.out.write(f"{n}:\n  Installed: {st.packages[n][0]}\n  Candidate: {cand}\n")
        return 0
    return 0


def _dpkg_status(st: HostState, name: str) -> tuple[str, str]:
    """(dpkg -l two-letter state, ${Status} text)."""
    want = "hold" if name in st.held else "install"
    if name in st.half_configured:
        return ("hF" if want == "hold" else "iF"), f"{want} ok half-configured"
    return ("hi" if want == "hold" else "ii"), f"{want} ok installed"


def _match(names: list[str], patterns: list[str]) -> list[str]:
    if not patterns:
        return names
    out: list[str] = []
    for pat in patterns:
        rx = re.compile("^" + re.escape(pat).replace(r"\*", ".*").replace(r"\?", ".") + "$")
        out.extend(n for n in names if rx.match(n) and n not in out)
    return out


@tool("dpkg")
async def _dpkg(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    st = sh.state
    if not args:
        io.err.write("dpkg: error: need an action option\n")
        return 2
    if args[0] in ("-l", "--list"):
        return _dpkg_list(sh, args[1:], io)
    if args[0] in ("-s", "--status"):
        status = 0
        for n in args[1:]:
            if n not in st.packages:
                io.err.write(
                    f"dpkg-query: package '{n}' is not installed and no information is available\n"
                )
                status = 1
                continue
            ver, arch, desc = st.packages[n]
            io.out.write(
                f"Package: {n}\nStatus: {_dpkg_status(st, n)[1]}\nPriority: optional\n"
                f"Architecture: {arch}\nVersion: {ver}\nDescription: {desc}\n\n"
            )
        return status
    if args[0] == "--print-architecture":
        io.out.write("amd64\n")
        return 0
    if args[0] == "--configure":
        if not await acquire_dpkg_lock(sh, io, {}):
            return 2
        failing = fault(sh, "failing_upgrade_hosts")
        for name in list(st.half_configured):
            io.out.write(f"Setting up {name} ({st.packages[name][0]}) ...\n")
            if failing is not None:
                io.out.write(
                    f"dpkg: error processing package {name} (--configure):\n installed "
                    f"{name} package post-installation script subprocess returned error "
                    f"exit status 1\nErrors were encountered while processing:\n {name}\n"
                )
                return 1
            st.half_configured.remove(name)
        return 0
    if args[0] in ("-W", "--show"):
        return await _dpkg_query(sh, ["dpkg-query", *args], io)
    io.err.write(f"dpkg: error: unknown option {args[0]}\n")
    return 2


def _dpkg_list(sh: Shell, patterns: list[str], io: Io) -> int:
    st = sh.state
    names = _match(sorted(st.packages), patterns)
    if not names:
        io.err.write(f"dpkg-query: no packages found matching {' '.join(patterns)}\n")
        return 1
    # Not a tty: dpkg sizes the columns to the longest value, with 14/12/12/33 as minimums.
    nw = max([14] + [len(n) for n in names])
    vw = max([12] + [len(st.packages[n][0]) for n in names])
    aw = max([12] + [len(st.packages[n][1]) for n in names])
    dw = max([33] + [len(st.packages[n][2]) for n in names])
    out = [
        "Desired=Unknown/Install/Remove/Purge/Hold",
        "| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend",
        "|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)",
        f"||/ {'Name':<{nw}} {'Version':<{vw}} {'Architecture':<{aw}} Description",
        f"+++-{'=' * nw}-{'=' * vw}-{'=' * aw}-{'=' * dw}",
    ]
    for n in names:
        ver, arch, desc = st.packages[n]
        out.append(f"{_dpkg_status(st, n)[0]}  {n:<{nw}} {ver:<{vw}} {arch:<{aw}} {desc}")
    io.out.write("\n".join(out) + "\n")
    return 0


@tool("dpkg-query")
async def _dpkg_query(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    fmt = "${binary:Package}\t${Version}\n"
    pats: list[str] = []
    mode = "-W"
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-f", "--showformat") and i + 1 < len(args):
            fmt = args[i + 1]
            i += 1
        elif a.startswith(("-f=", "--showformat=")):
            fmt = a.split("=", 1)[1]
        elif a.startswith("-f") and len(a) > 2:
            fmt = a[2:]
        elif a in ("-W", "--show", "-l", "--list", "-s", "--status"):
            mode = a
        elif not a.startswith("-"):
            pats.append(a)
        i += 1
    if mode in ("-l", "--list"):
        return _dpkg_list(sh, pats, io)
    st = sh.state
    fmt = fmt.replace("\\n", "\n").replace("\\t", "\t")
    names = _match(sorted(st.packages), pats)
    missing = [p for p in pats if not _match(sorted(st.packages), [p])]
    for n in names:
        ver, arch, desc = st.packages[n]
        abbrev, status = _dpkg_status(st, n)
        fields = {
            "Package": n,
            "binary:Package": n,
            "Version": ver,
            "Architecture": arch,
            "Status": status,
            "db:Status-Abbrev": abbrev + " ",
            "Description": desc,
            "binary:Summary": desc,
            "Installed-Size": str(pkg_size(n) // 300),
        }

        def sub(m: re.Match[str], fields: dict[str, str] = fields) -> str:
            val = fields.get(m.group(1), "")
            if m.group(2):
                w = int(m.group(2))
                return f"{val:<{-w}}" if w < 0 else f"{val:>{w}}"
            return val

        io.out.write(re.sub(r"\$\{([^};]+)(?:;(-?\d+))?\}", sub, fmt))
    for p in missing:
        io.err.write(f"dpkg-query: no packages found matching {p}\n")
    return 1 if missing else 0


# ------------------------------------------------------------------------- needrestart, apt-check


@tool("needrestart")
async def _needrestart(sh: Shell, argv: list[str], io: Io) -> int:
    st = sh.state
    ver = RELEASES[st.os].get("needrestart") or "3.6"
    batch = "-b" in argv or any(
        a.startswith("-") and not a.startswith("--") and "b" in a for a in argv[1:]
    )
    only_kernel, only_libs = "-k" in argv, "-l" in argv
    kcur = kernel_of(sh)
    newest = max(st.kernels, key=_kver) if st.kernels else kcur
    ksta = 1 if newest == kcur else 3
    if batch:
        lines = [f"NEEDRESTART-VER: {ver}"]
        if st.kind == "node" and not only_libs:  # inside containers kernel checks are skipped
            lines += [
                f"NEEDRESTART-KCUR: {kcur}",
                f"NEEDRESTART-KEXP: {newest}",
                f"NEEDRESTART-KSTA: {ksta}",
                "NEEDRESTART-UCSTA: 1",
                "NEEDRESTART-UCCUR: 0x000000f8",
                "NEEDRESTART-UCEXP: 0x000000f8",
            ]
        if not only_kernel:
            lines += [f"NEEDRESTART-SVC: {s}" for s in st.needrestart_svc]
        io.out.write("\n".join(lines) + "\n")
        return 0
    io.out.write("Scanning processes...\nScanning candidates...\n")
    if st.kind == "node":
        io.out.write("Scanning linux images...\n\n")
        if ksta == 1:
            io.out.write("No pending kernel upgrade.\n\n")
        else:
            io.out.write(
                f"Pending kernel upgrade!\nRunning kernel version:\n  {kcur}\n"
                f"Diagnostics:\n  The currently running kernel version is not the "
                f"expected kernel version {newest}.\n\n"
            )
    if st.needrestart_svc:
        io.out.write(
            "Services to be restarted:\n"
            + "".join(f" systemctl restart {s}\n" for s in st.needrestart_svc)
        )
    else:
        io.out.write("No services need to be restarted.\n")
    return 0


def _kver(k: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", k))


@tool("apt-check")
async def _apt_check(sh: Shell, argv: list[str], io: Io) -> int:
    st = sh.state
    pending = [n for n in st.pending if n not in st.held]
    sec = [n for n in pending if st.pending[n].get("security")]
    if "--package-names" in argv or "-p" in argv:
        io.err.write("".join(n + "\n" for n in sorted(pending)))
    elif "--human-readable" in argv:
        io.out.write(f"{len(pending)} updates can be applied immediately.\n")
        if sec:
            io.out.write(f"{len(sec)} of these updates are standard security updates.\n")
        if pending:
            io.out.write("To see these additional updates run: apt list --upgradable\n")
    else:
        io.err.write(f"{len(pending)};{len(sec)}")  # no newline, as the real tool
    return 0


# ---------------------------------------------------------------------------------------- apk


class _NullOut(Sink):
    def write(self, text: str) -> None:
        pass


def _apk_locked(sh: Shell, io: Io) -> bool:
    if sh.state.lock_held():
        io.err.write(
            "ERROR: Unable to lock database: temporary error (try again later)\n"
            "ERROR: Failed to open apk database: temporary error (try again later)\n"
        )
        return True
    return False


@tool("apk")
async def _apk(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    flags = {a for a in args if a.startswith("-")}
    pos = [a for a in args if not a.startswith("-")]
    st = sh.state
    if not pos:
        io.out.write("apk-tools 2.14.4, compiled for x86_64.\n")
        return 1
    verb = pos[0]
    if flags & {"-q", "--quiet"}:  # verbosity 0: apk prints nothing but errors
        io = Io(_NullOut(), io.err, io.stdin)
    if verb == "update" or (flags & {"-U", "--update-cache"} and verb in ("upgrade", "add")):
        if _apk_locked(sh, io):
            return 99
        await sh.sleep(sh.scaled(1.0))
        base = "http://mirror.lab.internal/alpine/v3.20"
        if verb == "update" or "-q" not in flags:
            io.out.write(
                f"fetch {base}/main/x86_64/APKINDEX.tar.gz\n"
                f"fetch {base}/community/x86_64/APKINDEX.tar.gz\n"
            )
        if verb == "update":
            io.out.write(
                f"v3.20.3-184-g1ee5e7b8f6e [{base}/main]\n"
                f"v3.20.3-182-g58ec8fb7a2a [{base}/community]\n"
                "OK: 24172 distinct packages available\n"
            )
            return 0
    if verb == "version":
        lim = None
        rest = args[args.index("version") + 1 :]
        for k, a in enumerate(rest):
            if a == "-l" and k + 1 < len(rest):
                lim = rest[k + 1]
            elif a.startswith("-l") and len(a) > 2:
                lim = a[2:]
        width = max([39] + [len(f"{n}-{st.packages[n][0]}") for n in st.packages])
        io.out.write(f"{'Installed:':<{width}}   Available:\n")
        for n in sorted(st.packages):
            ver = st.packages[n][0]
            op = "<" if n in st.pending else "="
            if lim is not None and op not in lim:
                continue
            if lim is None and op == "=":
                continue
            avail = st.pending[n]["version"] if n in st.pending else ver
            io.out.write(f"{n + '-' + ver:<{width}} {op} {avail} \n")
        return 0
    if verb == "list":
        for n in sorted(st.packages):
            ver, arch, _ = st.packages[n]
            if flags & {"-u", "--upgradable", "--upgradeable"}:
                if n not in st.pending:
                    continue
                io.out.write(
                    f"{n}-{st.pending[n]['version']} {arch} {{{n}}} (MIT) "
                    f"[upgradable from: {n}-{ver}]\n"
                )
            elif flags & {"-I", "--installed"} or True:
                io.out.write(f"{n}-{ver} {arch} {{{n}}} (MIT) [installed]\n")
        return 0
    if verb == "upgrade":
        simulate = bool(flags & {"-s", "--simulate"})
        if not simulate and _apk_locked(sh, io):
            return 99
        wanted = set(pos[1:])  # `apk upgrade pkg...` upgrades just those
        names = [
            n for n in sorted(st.pending) if n not in st.held and (not wanted or n in wanted)
        ]  # held: pinned in world
        for k, n in enumerate(names, 1):
            p = st.pending[n]
            io.out.write(
                f"({k}/{len(names)}) Upgrading {n} ({st.packages[n][0]} -> {p['version']})\n"
            )
            if not simulate:
                await sh.sleep(sh.scaled(0.2))
                if n == "busybox":
                    io.out.write(f"Executing busybox-{p['version']}.post-upgrade\n")
        if not simulate:
            for n in names:
                p = st.pending.pop(n)
                st.packages[n][0] = p["version"]
                if n in _RESTART_LIBS:
                    st.needrestart_svc = sorted(st.services)
            if "busybox" in names:
                io.out.write(f"Executing busybox-{st.packages['busybox'][0]}.trigger\n")
            broken = fault(sh, "broken_after_upgrade_hosts")
            if broken is not None and names:
                st.services[broken if isinstance(broken, str) else (st.main_service or "")] = (
                    "crashed"
                )
        io.out.write(f"OK: 9 MiB in {len(st.packages) + 8} packages\n")
        return 0
    if verb == "info":
        io.out.write(
            "".join(
                f"{n}-{st.packages[n][0]}\n" if "-v" in flags else n + "\n"
                for n in sorted(st.packages)
            )
        )
        return 0
    io.err.write(f"apk: unknown command '{verb}'\n")
    return 1


# ------------------------------------------------------------------------ Proxmox node commands


@tool("pveversion")
async def _pveversion(sh: Shell, argv: list[str], io: Io) -> int:
    st = sh.state
    mgr = st.packages.get("pve-manager", ["9.0.10"])[0]
    build = "3bf5476b8a4699e2" if mgr != "9.0.10" else "deb1ca707ec72a89"
    io.out.write(f"pve-manager/{mgr}/{build} (running kernel: {kernel_of(sh)})\n")
    if "-v" in argv or "--verbose" in argv:
        io.out.write(
            f"proxmox-ve: {st.packages.get('proxmox-ve', ['9.0.0'])[0]} "
            f"(running kernel: {kernel_of(sh)})\n"
        )
        for n in sorted(st.packages):
            if n.startswith(("pve-", "proxmox-", "lxc-pve", "libpve-")) and n != "proxmox-ve":
                io.out.write(f"{n}: {st.packages[n][0]}\n")
    return 0


@tool("pct")
async def _pct(sh: Shell, argv: list[str], io: Io) -> int:
    args = argv[1:]
    lab = sh.rt.lab
    if not args:
        io.err.write("ERROR: no command specified\n")
        return 255
    verb = args[0]
    if verb == "list":
        rows = [
            g
            for g in sorted(lab.guests, key=lambda g: g.vmid)
            if g.type == "lxc" and g.node == sh.host
        ]
        io.out.write(f"{'VMID':<10} {'Status':<10} {'Lock':<12} {'Name':<20}\n")
        for g in rows:
            io.out.write(f"{g.vmid:<10} {g.status:<10} {g.lock or '':<12} {g.name:<20}\n")
        return 0
    if verb in ("exec", "status", "enter", "config"):
        if len(args) < 2 or not args[1].isdigit():
            io.err.write("400 not enough arguments\npct " + verb + " <vmid> [<extra-args>]\n")
            return 255
        vmid = int(args[1])
        guest = lab.guest(vmid)
        if guest is None or guest.type != "lxc" or guest.node != sh.host:
            io.err.write(f"Configuration file 'nodes/{sh.host}/lxc/{vmid}.conf' does not exist\n")
            return 255
        if verb == "status":
            io.out.write(f"status: {guest.status}\n")
            return 0
        if verb == "config":
            io.out.write(
                f"arch: amd64\nhostname: {guest.name}\nmemory: {guest.maxmem // 2**20}\n"
                f"ostype: {'alpine' if guest.os.startswith('alpine') else 'debian'}\n"
            )
            return 0
        if guest.status != "running" or guest.name not in lab.hosts:
            io.err.write(f"CT {vmid} not running\n")
            return 255
        cmd = args[2:]
        if cmd and cmd[0] == "--keep-env":
            cmd = cmd[2:]
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        if not cmd:
            io.err.write("missing command\n")
            return 255
        inner = Shell(sh.rt, guest.name, "lxc")
        inner.via = sh.host
        hang = fault(inner, "hanging_commands")
        hangs = [hang] if isinstance(hang, str) else list(hang or [])
        if any(h and h in " ".join(cmd) for h in hangs):
            await asyncio.Event().wait()
        try:
            return await inner.exec_argv(cmd, io)
        except Rebooting:
            return 0  # the container goes down; the node's session carries on
        except ExitShell as e:
            return e.code
    io.err.write(f"ERROR: unknown command 'pct {verb}'\n")
    return 255


def new_boot(st: HostState) -> None:
    """What a reboot does to a host's state."""
    if st.kernels:
        st.kernel_running = max(st.kernels, key=_kver)
    st.reboot_required = False
    st.reboot_pkgs = []
    st.needrestart_svc = []
    st.boot_id = str(uuid.uuid4())
    st.booted_at = time.time()
    st.lock_until, st.lock_hold_s = 0.0, 0.0
    for unit in st.transient:  # transient units do not survive a boot, nor does /run
        st.services.pop(unit, None)
    st.transient = []
    st.files = {p: c for p, c in st.files.items() if not p.startswith("/run/")}
    for u, s in st.services.items():
        if s == "inactive":
            st.services[u] = "active" if st.family == "debian" else "started"
