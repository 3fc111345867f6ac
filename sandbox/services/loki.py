"""Loki: ``GET /loki/api/v1/query_range`` over seeded auth logs, ``/ready``.

Streams carry ``job``, ``host`` and ``filename`` labels; lines are sshd and sudo auth failures mixed
with routine lines. LogQL understood: a stream selector with ``=``, ``!=``, ``=~``, ``!~`` and line
filters ``|=``, ``!=``, ``|~``, ``!~`` (log queries only; metric queries answer 400 like a Loki
that cannot parse them would). ``start``/``end`` accept ns epochs, float seconds or RFC 3339;
``limit`` (default 100) and ``direction`` (default backward) as Loki does.

Faults: system ``loki``. Control: ``add_lines`` ({"stream": {...}, "lines": [[ns, line], ...]}),
``clear``, ``state`` (recent queries).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.web import fault_middleware, serve

_SELECTOR = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_FILTER = re.compile(r'\s*(\|=|!=|\|~|!~)\s*"((?:[^"\\]|\\.)*)"')
NS = 1_000_000_000


class LogQLError(ValueError):
    pass


def parse_logql(query: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(label matchers, line filters) of a log query."""
    q = query.strip()
    if not q.startswith("{"):
        raise LogQLError(f"parse error : syntax error: unexpected IDENTIFIER in {q[:40]!r}")
    end = q.find("}")
    if end < 0:
        raise LogQLError("parse error : unclosed stream selector")
    matchers = []
    body = q[1:end]
    for part in filter(None, (p.strip() for p in _split_commas(body))):
        m = _SELECTOR.fullmatch(part)
        if not m:
            raise LogQLError(f"parse error : bad matcher {part!r}")
        matchers.append((m.group(1), m.group(2), _unescape(m.group(3))))
    if not matchers:
        raise LogQLError("parse error : queries require at least one matcher")
    rest = q[end + 1 :]
    filters = []
    pos = 0
    while pos < len(rest):
        m = _FILTER.match(rest, pos)
        if not m:
            if rest[pos:].strip():
                raise LogQLError(f"parse error : unsupported pipeline {rest[pos:].strip()[:40]!r}")
            break
        filters.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
    return matchers, filters


def _split_commas(text: str) -> list[str]:
    parts, cur, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            cur += ch
            escaped = False
        elif ch == "\\":
            cur += ch
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur += ch
        elif ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


def _label_ok(labels: dict[str, str], name: str, op: str, value: str) -> bool:
    have = labels.get(name, "")
    if op == "=":
        return have == value
    if op == "!=":
        return have != value
    hit = re.fullmatch(value, have) is not None
    return hit if op == "=~" else not hit


def _line_ok(line: str, op: str, value: str) -> bool:
    if op == "|=":
        return value in line
    if op == "!=":
        return value not in line
    hit = re.search(value, line) is not None
    return hit if op == "|~" else not hit


def parse_ts(value: str | None, default: int) -> int:
    """A Loki timestamp parameter as ns."""
    if value is None or value == "":
        return default
    if re.fullmatch(r"\d+", value):
        n = int(value)
        return n if n > 10**15 else n * NS
    if re.fullmatch(r"\d+\.\d+", value):
        return int(float(value) * NS)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * NS)


class LokiService(Service):
    name = "loki"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.port = 0
        self.streams: dict[tuple[tuple[str, str], ...], list[tuple[int, str]]] = {}
        self.queries: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    def _add(self, labels: dict[str, str], ts_ns: int, line: str) -> None:
        key = tuple(sorted(labels.items()))
        self.streams.setdefault(key, []).append((ts_ns, line))

    def _seed(self) -> None:
        rng = self.ctx.rng
        now = time.time_ns()
        hosts = [n.name for n in self.ctx.lab.nodes] + [
            g.name for g in self.ctx.lab.guests if g.type == "lxc" and g.status == "running"
        ][:6]
        attackers = ["203.0.113.7", "198.51.100.23", "192.0.2.45"]
        for i in range(400):
            kind = i % 10
            # sudo trouble on one host, SSH noise everywhere
            host = hosts[1] if kind in (4, 5) else hosts[i % len(hosts)]
            ts = now - rng.randint(60, 30 * 3600) * NS
            stamp = datetime.fromtimestamp(ts / NS, UTC).strftime("%b %d %H:%M:%S")
            auth = {"job": "auth", "host": host, "filename": "/var/log/auth.log"}
            if kind < 4 and host in hosts[:3]:
                ip = attackers[i % len(attackers)]
                user = ["root", "admin", "ubuntu", "deploy"][i % 4]
                line = (
                    f"{stamp} {host} sshd[{2000 + i}]: Failed password for "
                    f"{'invalid user ' if user != 'root' else ''}{user} from {ip} "
                    f"port {40000 + i} ssh2"
                )
            elif kind == 4:
                line = (
                    f"{stamp} {host} sudo: pam_unix(sudo:auth): authentication failure; "
                    f"logname=alice uid=1000 euid=0 tty=/dev/pts/0 ruser=alice rhost=  "
                    f"user=alice"
                )
            elif kind == 5:
                line = (
                    f"{stamp} {host} sudo:    alice : 3 incorrect password attempts ; "
                    f"TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl"
                )
            elif kind < 8:
                line = (
                    f"{stamp} {host} sshd[{2000 + i}]: Accepted publickey for root from "
                    f"192.168.1.50 port {50000 + i} ssh2: ED25519 SHA256:abc"
                )
            else:
                line = f"{stamp} {host} CRON[{3000 + i}]: pam_unix(cron:session): session opened"
            self._add(auth, ts, line)
        for lines in self.streams.values():
            lines.sort()

    async def start(self) -> None:
        self._seed()
        self.port = self.ctx.port()
        app = web.Application(middlewares=[fault_middleware(self.ctx, "loki")])
        app.router.add_get("/loki/api/v1/query_range", self.query_range)
        app.router.add_get("/ready", self.ready)
        self._runner = await serve(self.ctx, app, self.port)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        return {"systems": {"loki": {"url": f"http://{self.ctx.host}:{self.port}"}}}

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "add_lines":
            labels = {str(k): str(v) for k, v in payload["stream"].items()}
            for ts, line in payload["lines"]:
                self._add(labels, int(ts), str(line))
            for lines in self.streams.values():
                lines.sort()
            return {"streams": len(self.streams)}
        if action == "clear":
            self.streams = {}
            return {"streams": 0}
        if action == "state":
            return {
                "port": self.port,
                "streams": len(self.streams),
                "lines": sum(len(v) for v in self.streams.values()),
                "queries": self.queries[-20:],
            }
        raise KeyError(action)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def query_range(self, request: web.Request) -> web.Response:
        q = request.query
        query = q.get("query", "")
        self.queries.append(dict(q))
        started = time.monotonic()
        now = time.time_ns()
        try:
            matchers, filters = parse_logql(query)
            end = parse_ts(q.get("end"), now)
            start = parse_ts(q.get("start"), end - 3600 * NS)
            limit = int(q.get("limit", 100))
            direction = q.get("direction", "backward")
            if direction not in ("forward", "backward"):
                raise LogQLError(f"invalid direction {direction!r}")
        except (LogQLError, ValueError, re.error) as exc:
            return web.Response(status=400, text=str(exc))
        picked: list[tuple[int, dict[str, str], str]] = []
        for key, lines in self.streams.items():
            labels = dict(key)
            if not all(_label_ok(labels, n, op, v) for n, op, v in matchers):
                continue
            for ts, line in lines:
                if start <= ts < end and all(_line_ok(line, op, v) for op, v in filters):
                    picked.append((ts, labels, line))
        picked.sort(key=lambda x: x[0], reverse=direction == "backward")
        picked = picked[:limit]
        result: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for ts, labels, line in picked:
            result.setdefault(tuple(sorted(labels.items())), []).append([str(ts), line])
        elapsed = time.monotonic() - started
        return web.json_response(
            {
                "status": "success",
                "data": {
                    "resultType": "streams",
                    "result": [{"stream": dict(k), "values": v} for k, v in result.items()],
                    "stats": {"summary": {"execTime": elapsed, "totalLinesProcessed": len(picked)}},
                },
            }
        )


SERVICE = LokiService
