"""A small POSIX-shell subset that interprets a command line against a host's simulated state.

Nothing is spawned: the SSH server hands the exec request's command string to :class:`Shell`, which
lexes, parses and runs it with Python handlers (``sandbox.fleet.tools``). That keeps the per-command
server cost to microseconds, so hundreds of hosts fit one process and benchmarks measure clients.

Supported: ``;``, ``&&``, ``||``, ``|``, newlines, ``!``, quoting and backslashes, ``$VAR``,
``$$``/``$!``, env prefixes (``LANG=C cmd``), ``sudo``/``env``/``nice``/``timeout`` wrappers,
``sh -c``/``bash -c``/``sh FILE``, redirections (``>/dev/null``, ``2>&1``, ``&>``, ``> file``,
``< file``), ``exit``, and ``&``: the and-or list before it runs as a background job of the host
(a pid in ``$!``; it outlives the SSH session, as under ``nohup``, and ends with a reboot). Unlike
sshd, a session does not wait for a background job that still writes to it: redirect its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sandbox.fleet.state import HostState
    from sandbox.lab import Lab
    from sandbox.service import Faults


class Runtime(Protocol):
    """What the interpreter needs from the fleet service."""

    lab: Lab
    time_scale: float

    def faults(self) -> Faults: ...

    def request_reboot(self, name: str) -> None: ...

    def start_job(self, host: str, run: Callable[[int], Awaitable[int]]) -> int:
        """Run ``run(pid)`` as a background process of ``host``; returns its pid."""
        ...

    def job_alive(self, host: str, pid: int) -> bool: ...

    def stop_job(self, host: str, pid: int) -> None: ...

    def session_pid(self, host: str) -> int:
        """A pid for a new shell of ``host`` (what ``$$`` prints)."""
        ...


class Sink:
    """Where a command's output goes; the SSH channel, a buffer or /dev/null."""

    def write(self, text: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class NullSink(Sink):
    def write(self, text: str) -> None:
        pass


class BufferSink(Sink):
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def value(self) -> str:
        return "".join(self.parts)


class CallbackSink(Sink):
    def __init__(self, fn: Callable[[str], Any]) -> None:
        self.fn = fn

    def write(self, text: str) -> None:
        if text:
            self.fn(text)


@dataclass
class Io:
    out: Sink
    err: Sink
    stdin: str = ""


class ExitShell(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class Rebooting(Exception):
    pass


# ---------------------------------------------------------------------------------------- lexer

_OPS = ("&&", "||", ";", "|", "&", "\n")
_VAR = re.compile("\x00([^\x00]*)\x00")


@dataclass
class Cmd:
    argv: list[str] = field(default_factory=list)
    assigns: dict[str, str] = field(default_factory=dict)
    redirs: list[tuple[int, str, str]] = field(default_factory=list)  # (fd, op, target)
    line: int = 1


@dataclass
class Pipeline:
    cmds: list[Cmd]
    negate: bool = False


class ParseError(Exception):
    pass


def lex(src: str, variables: dict[str, str]) -> list[tuple[str, str, int]]:
    """Tokens as (kind, text, line): kind "w" word, "op" operator, "r" redirection operator."""
    toks: list[tuple[str, str, int]] = []
    i, n, line = 0, len(src), 1
    word: list[str] = []
    in_word = False  # a quoted empty string is still a word

    def flush() -> None:
        nonlocal word, in_word
        if in_word:
            toks.append(("w", "".join(word), line))
        word, in_word = [], False

    def expand(j: int) -> tuple[str, int]:
        # $NAME, ${NAME}, $? become markers, expanded when the command runs (so `$?` sees the
        # previous status); anything else stays literal.
        if j + 1 < n and src[j + 1] == "{":
            end = src.find("}", j + 2)
            if end > 0:
                return f"\x00{src[j + 2 : end]}\x00", end + 1
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[?$!]", src[j + 1 :])
        if m:
            return f"\x00{m.group(0)}\x00", j + 1 + len(m.group(0))
        return "$", j + 1

    while i < n:
        c = src[i]
        if c == "\\":
            if i + 1 < n and src[i + 1] == "\n":
                i += 2
                continue
            if i + 1 < n:
                word.append(src[i + 1])
                in_word = True
            i += 2
            continue
        if c == "'":
            end = src.find("'", i + 1)
            if end < 0:
                raise ParseError("Unterminated quoted string")
            word.append(src[i + 1 : end])
            in_word = True
            i = end + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                if src[j] == "\\" and j + 1 < n and src[j + 1] in '"\\$`\n':
                    word.append(src[j + 1])
                    j += 2
                elif src[j] == "$":
                    val, j = expand(j)
                    word.append(val)
                else:
                    word.append(src[j])
                    j += 1
            if j >= n:
                raise ParseError("Unterminated quoted string")
            in_word = True
            i = j + 1
            continue
        if c == "$":
            val, i = expand(i)
            word.append(val)
            in_word = True
            continue
        if c == "#" and not in_word:
            while i < n and src[i] != "\n":
                i += 1
            continue
        if c in " \t":
            flush()
            i += 1
            continue
        if c in "<>" or (c == "&" and src[i + 1 : i + 2] == ">"):
            fd = ""
            if in_word and "".join(word).isdigit() and len(word) == 1:
                fd = word[0]
                word, in_word = [], False
            flush()
            j = i
            op = src[j]
            if c == "&":
                op, j = "&>", j + 1
            if src[j + 1 : j + 2] == ">" and op == ">":
                op, j = ">>", j + 1
            j += 1
            if src[j : j + 1] == "&" and op in (">", "<"):
                m = re.match(r"&(\d|-)", src[j:])
                if m:
                    toks.append(("r", f"{fd}{op}&{m.group(1)}", line))
                    i = j + len(m.group(0))
                    continue
            toks.append(("r", f"{fd}{op}", line))
            i = j
            continue
        matched = next((op for op in _OPS if src.startswith(op, i)), None)
        if matched:
            flush()
            toks.append(("op", ";" if matched == "\n" else matched, line))
            if matched == "\n":
                line += 1
            i += len(matched)
            continue
        word.append(c)
        in_word = True
        i += 1
    flush()
    return toks


AndOr = list[tuple[str, "Pipeline"]]


def parse(src: str, variables: dict[str, str]) -> list[tuple[AndOr, bool]]:
    """And-or lists, each with whether it runs in the background (ended by ``&``): a list is
    [(connector, pipeline)], connector one of ";", "&&", "||" (the first is ";")."""
    toks = lex(src, variables)
    lists: list[tuple[AndOr, bool]] = []
    out: AndOr = []
    conn = ";"
    cmds: list[Cmd] = []
    cur = Cmd()
    negate = False
    i = 0

    def end_cmd() -> None:
        nonlocal cur
        if cur.argv or cur.assigns or cur.redirs:
            cmds.append(cur)
        cur = Cmd()

    while i < len(toks):
        kind, text, line = toks[i]
        if kind == "w":
            if not cur.argv and not cmds and text == "!" and not negate:
                negate = True
            elif not cur.argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", text):
                k, _, v = text.partition("=")
                cur.assigns[k] = v
            else:
                if not cur.argv:
                    cur.line = line
                cur.argv.append(text)
        elif kind == "r":
            m = re.match(r"^(\d?)(&>|>>|>|<)(&(\d|-))?$", text)
            if not m:
                raise ParseError(f"syntax error near unexpected token `{text}'")
            fd = int(m.group(1)) if m.group(1) else (0 if m.group(2) == "<" else 1)
            if m.group(3):
                cur.redirs.append((fd, m.group(2) + "&", m.group(4)))
            else:
                if i + 1 >= len(toks) or toks[i + 1][0] != "w":
                    raise ParseError("syntax error near unexpected token `newline'")
                cur.redirs.append((fd, m.group(2), toks[i + 1][1]))
                i += 1
        else:  # operator
            if text == "|":
                if not (cur.argv or cur.assigns):
                    raise ParseError("syntax error near unexpected token `|'")
                end_cmd()
            else:
                end_cmd()
                if cmds:
                    out.append((conn, Pipeline(cmds, negate)))
                elif text in ("&&", "||", "&"):
                    raise ParseError(f"syntax error near unexpected token `{text}'")
                cmds, negate = [], False
                conn = text
                if text in (";", "&"):
                    if out:
                        lists.append((out, text == "&"))
                    out, conn = [], ";"
        i += 1
    end_cmd()
    if cmds:
        out.append((conn, Pipeline(cmds, negate)))
    elif conn in ("&&", "||", "|"):
        raise ParseError("syntax error: unexpected end of file")
    if out:
        lists.append((out, False))
    return lists


# ----------------------------------------------------------------------------------- executor

Handler = Callable[["Shell", list[str], Io], Awaitable[int]]
TOOLS: dict[str, Handler] = {}


def tool(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            TOOLS[n] = fn
        return fn

    return deco


# Where each tool lives, for `command -v` and absolute-path calls; per OS family.
_DEBIAN_PATHS = {
    "apt": "/usr/bin/apt",
    "apt-get": "/usr/bin/apt-get",
    "apt-mark": "/usr/bin/apt-mark",
    "apt-cache": "/usr/bin/apt-cache",
    "dpkg": "/usr/bin/dpkg",
    "dpkg-query": "/usr/bin/dpkg-query",
    "systemctl": "/usr/bin/systemctl",
    "ip": "/usr/sbin/ip",
    "ss": "/usr/bin/ss",
    "sudo": "/usr/bin/sudo",
    "bash": "/usr/bin/bash",
    "sh": "/usr/bin/sh",
    "cat": "/usr/bin/cat",
    "hostname": "/usr/bin/hostname",
    "uname": "/usr/bin/uname",
    "sleep": "/usr/bin/sleep",
    "id": "/usr/bin/id",
    "whoami": "/usr/bin/whoami",
    "grep": "/usr/bin/grep",
    "head": "/usr/bin/head",
    "tail": "/usr/bin/tail",
    "wc": "/usr/bin/wc",
    "sort": "/usr/bin/sort",
    "date": "/usr/bin/date",
    "uptime": "/usr/bin/uptime",
    "env": "/usr/bin/env",
    "timeout": "/usr/bin/timeout",
    "nice": "/usr/bin/nice",
    "ionice": "/usr/bin/ionice",
    "nohup": "/usr/bin/nohup",
    "systemd-run": "/usr/bin/systemd-run",
    "mkdir": "/usr/bin/mkdir",
    "rm": "/usr/bin/rm",
    "mv": "/usr/bin/mv",
    "reboot": "/usr/sbin/reboot",
    "shutdown": "/usr/sbin/shutdown",
    "test": "/usr/bin/test",
    "[": "/usr/bin/[",
    "true": "/usr/bin/true",
    "false": "/usr/bin/false",
    "echo": "/usr/bin/echo",
    "printf": "/usr/bin/printf",
    "nproc": "/usr/bin/nproc",
    "curl": "/usr/bin/curl",
}
_ALPINE_PATHS = {
    "apk": "/sbin/apk",
    "ip": "/sbin/ip",
    "rc-service": "/sbin/rc-service",
    "sh": "/bin/sh",
    "ash": "/bin/ash",
    "cat": "/bin/cat",
    "hostname": "/bin/hostname",
    "uname": "/bin/uname",
    "sleep": "/bin/sleep",
    "id": "/usr/bin/id",
    "whoami": "/usr/bin/whoami",
    "grep": "/bin/grep",
    "head": "/usr/bin/head",
    "tail": "/usr/bin/tail",
    "wc": "/usr/bin/wc",
    "sort": "/usr/bin/sort",
    "date": "/bin/date",
    "uptime": "/usr/bin/uptime",
    "env": "/usr/bin/env",
    "timeout": "/usr/bin/timeout",
    "nice": "/bin/nice",
    "nohup": "/usr/bin/nohup",
    "mkdir": "/bin/mkdir",
    "rm": "/bin/rm",
    "mv": "/bin/mv",
    "reboot": "/sbin/reboot",
    "test": "/usr/bin/test",
    "[": "/usr/bin/[",
    "true": "/bin/true",
    "false": "/bin/false",
    "echo": "/bin/echo",
    "printf": "/usr/bin/printf",
    "nproc": "/usr/bin/nproc",
    "netstat": "/bin/netstat",
    "wget": "/usr/bin/wget",
    "rc-status": "/bin/rc-status",
}
BUILTINS = {
    "echo",
    "printf",
    "true",
    "false",
    ":",
    "test",
    "[",
    "exit",
    "export",
    "cd",
    "command",
    "set",
    "type",
    "unset",
    "exec",
    "kill",
    "read",
}


def tool_paths(st: HostState) -> dict[str, str]:
    if st.family == "alpine":
        return _ALPINE_PATHS
    paths = dict(_DEBIAN_PATHS)
    if st.needrestart:
        paths["needrestart"] = "/usr/sbin/needrestart"
    if st.os == "ubuntu2404":
        paths["apt-check"] = "/usr/lib/update-notifier/apt-check"
    if st.kind == "node":
        paths["pct"] = "/usr/sbin/pct"
        paths["pveversion"] = "/usr/bin/pveversion"
    return paths


class Shell:
    """Runs command lines for one host. ``dialect`` picks the error messages of the shell that
    OpenSSH would start: root's login shell is bash on Debian/Ubuntu, busybox sh on Alpine, and
    ``sh -c`` on Debian is dash. ``lxc`` is `pct exec`: argv is exec'd with no shell at all."""

    def __init__(self, rt: Runtime, host: str, dialect: str | None = None) -> None:
        self.rt = rt
        self.host = host
        st = self.state
        self.dialect = dialect or ("ash" if st.family == "alpine" else "bash")
        self.vars: dict[str, str] = {
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SHELL": "/bin/bash",
            "?": "0",
            "$": str(rt.session_pid(host)),
        }
        self.env: dict[str, str] = {}
        self.via: str | None = None  # the node whose `pct exec` started this shell

    @property
    def state(self) -> HostState:
        st = self.rt.lab.hosts.get(self.host)
        if st is None:
            raise ExitShell(255)
        return st  # type: ignore[no-any-return]

    def child(self, dialect: str) -> Shell:
        sh = Shell(self.rt, self.host, dialect)
        sh.via = self.via
        sh.vars.update(self.vars)
        sh.env = dict(self.env)
        return sh

    # -- entry points

    async def run_script(self, src: str, io: Io) -> int:
        try:
            items = parse(src, self.vars)
        except ParseError as exc:
            prefix = {"bash": "bash: -c: line 1", "dash": "sh: 1", "ash": "sh"}.get(
                self.dialect, "sh"
            )
            io.err.write(f"{prefix}: {exc}\n")
            return 2
        status = 0
        try:
            for and_or, background in items:
                if background:
                    self.vars["!"] = str(self.background(and_or, io))
                    status = 0
                else:
                    status = await self.run_and_or(and_or, io)
        except ExitShell as e:
            return e.code
        return status

    async def run_and_or(self, and_or: AndOr, io: Io) -> int:
        status = 0
        for conn, pipe in and_or:
            if (conn == "&&" and status != 0) or (conn == "||" and status == 0):
                continue
            status = await self.run_pipeline(pipe, io)
            self.vars["?"] = str(status)
        return status

    def background(self, and_or: AndOr, io: Io) -> int:
        """``list &``: a job of the host with a pid of its own (``$$`` inside it, ``$!`` here)."""
        detached = Io(_Detached(io.out), _Detached(io.err), "")

        async def job(pid: int) -> int:
            sh = self.child(self.dialect)
            sh.vars["$"] = str(pid)
            try:
                return await sh.run_and_or(and_or, detached)
            except ExitShell as e:
                return e.code

        return self.rt.start_job(self.host, job)

    async def run_pipeline(self, pipe: Pipeline, io: Io) -> int:
        stdin = io.stdin
        status = 0
        for k, cmd in enumerate(pipe.cmds):
            last = k == len(pipe.cmds) - 1
            buf = BufferSink()
            status = await self.run_cmd(cmd, Io(io.out if last else buf, io.err, stdin))
            stdin = buf.value()
        if pipe.negate:
            status = 0 if status else 1
        return status

    def expand(self, word: str) -> str:
        if "\x00" not in word:
            return word
        return _VAR.sub(lambda m: self.env.get(m.group(1), self.vars.get(m.group(1), "")), word)

    async def run_cmd(self, cmd: Cmd, io: Io) -> int:
        out, err, stdin = io.out, io.err, io.stdin
        cmd = Cmd(
            [self.expand(a) for a in cmd.argv],
            {k: self.expand(v) for k, v in cmd.assigns.items()},
            [(fd, op, self.expand(t)) for fd, op, t in cmd.redirs],
            cmd.line,
        )
        st = self.state
        for fd, op, target in cmd.redirs:
            if op == "<":
                content = "" if target == "/dev/null" else self.read_file(target)
                if content is None:
                    err.write(self._err_prefix(cmd.line) + f"{target}: No such file or directory\n")
                    return 1
                stdin = content
                continue
            if op.endswith("&"):  # dup: 2>&1, >&2
                if fd == 2 and target == "1":
                    err = out
                elif fd == 1 and target == "2":
                    out = err
                continue
            sink: Sink = (
                NullSink()
                if target == "/dev/null"
                else _FileSink(st.files, target, append=op == ">>")
            )
            if op == "&>":
                out = err = sink
            elif fd == 2:
                err = sink
            else:
                out = sink
        if not cmd.argv:
            self.vars.update(cmd.assigns)
            return 0
        saved_env = self.env
        self.env = {**self.env, **cmd.assigns}
        try:
            return await self.exec_argv(cmd.argv, Io(out, err, stdin), line=cmd.line)
        finally:
            self.env = saved_env

    async def exec_argv(self, argv: list[str], io: Io, line: int = 1) -> int:
        """Run one simple command (after redirections): wrappers, builtins, tools."""
        while argv:
            name = argv[0]
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", name):  # `sudo LANG=C cmd`
                k, _, v = name.partition("=")
                self.env[k] = v
                argv = argv[1:]
                continue
            if name == "sudo" and self.state.family != "alpine":
                rest = argv[1:]
                while rest and rest[0].startswith("-"):
                    opt = rest.pop(0)
                    if opt in ("-u", "-g", "-C", "-D", "-p") and rest:
                        rest.pop(0)
                argv = rest
                continue
            if name == "env":
                rest = argv[1:]
                while rest and ("=" in rest[0] or rest[0] in ("-i", "-")):
                    k, _, v = rest.pop(0).partition("=")
                    if v or k:
                        self.env[k] = v
                if not rest:
                    io.out.write(
                        "".join(
                            f"{k}={v}\n" for k, v in {**self.vars, **self.env}.items() if k != "?"
                        )
                    )
                    return 0
                argv = rest
                continue
            if name in ("nice", "nohup", "ionice", "stdbuf"):
                rest = argv[1:]
                while rest and rest[0].startswith("-"):
                    opt = rest.pop(0)
                    if opt in ("-n", "-c", "-o", "-e") and rest and not rest[0].startswith("-"):
                        rest.pop(0)
                argv = rest
                continue
            break
        if not argv:
            return 0
        record = getattr(self.rt, "record_exec", None)
        if record is not None:
            record(self.host, list(argv), self.via)
        name = argv[0]
        tool_name = name
        paths = tool_paths(self.state)
        if "/" in name:
            by_path = {p: n for n, p in paths.items()}
            by_path.update(
                {
                    p.replace("/usr/bin/", "/bin/").replace("/usr/sbin/", "/sbin/"): n
                    for n, p in paths.items()
                }
            )
            tool_name = by_path.get(name, "")
            if not tool_name:
                return self._not_found(name, io, line, is_path=True)
        handler = TOOLS.get(tool_name)
        if handler is not None and (tool_name in BUILTINS or tool_name in paths):
            return await handler(self, argv, io)
        return self._not_found(name, io, line, is_path="/" in name)

    def _err_prefix(self, line: int) -> str:
        return {"bash": f"bash: line {line}: ", "dash": f"sh: {line}: ", "ash": "sh: "}.get(
            self.dialect, ""
        )

    def _not_found(self, name: str, io: Io, line: int, is_path: bool) -> int:
        if self.dialect == "lxc":
            io.err.write(
                f"lxc-attach: {self.state.vmid}: ../src/lxc/attach.c: "
                f"lxc_attach_run_command: 1841 No such file or directory - "
                f'Failed to exec "{name}"\n'
            )
            return 255
        if self.dialect == "bash":
            msg = "No such file or directory" if is_path else "command not found"
            io.err.write(f"bash: line {line}: {name}: {msg}\n")
        else:
            io.err.write(f"{self._err_prefix(line)}{name}: not found\n")
        return 127

    # -- the host's file system, derived from its state

    def read_file(self, path: str) -> str | None:
        from sandbox.fleet.tools import virtual_file

        return virtual_file(self, path)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def scaled(self, seconds: float) -> float:
        return seconds * self.rt.time_scale


class _Detached(Sink):
    """A background job's view of its session's output: dropped once the session is gone."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    def write(self, text: str) -> None:
        # the channel closed: a real job would get EPIPE and go on
        with contextlib.suppress(Exception):
            self.inner.write(text)


class _FileSink(Sink):
    def __init__(self, files: dict[str, str], path: str, append: bool) -> None:
        self.files, self.path = files, path
        if not append:
            files[path] = ""
        else:
            files.setdefault(path, "")

    def write(self, text: str) -> None:
        self.files[self.path] = self.files.get(self.path, "") + text
