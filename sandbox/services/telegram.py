"""The Telegram Bot API, as far as labops uses it: ``getMe`` and ``sendMessage`` over HTTPS.

Answers like api.telegram.org: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code",
"description"[, "parameters": {"retry_after"}]}``. Checks what the real API checks for a message:
the bot token (401), the chat (400 chat not found), empty or too long text (4096 characters after
entity parsing), and HTML entities (only b/strong, i/em, u/ins, s/strike/del, code, pre, a,
tg-spoiler, blockquote; tags balanced; ``<`` and ``&`` escaped).

Faults (``telegram``): ``error_rate`` (500), ``latency_ms``, ``reset_rate``, ``stall_rate``;
``extra.flood_next`` (answer the next N sendMessage calls with 429), ``extra.retry_after``
(seconds in those 429s, default 1), ``extra.chat_rate_per_s`` (per-chat limit, default 20).

Control actions: ``messages`` (every accepted message, oldest first), ``clear``, ``flood``
(``{"count": N, "retry_after": S}``), ``token`` (the bot token and chat id).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import string
import time
from collections import deque
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import ca_bundle_path, write_secret
from sandbox.tls import server_ssl_context

MAX_TEXT = 4096
_ALLOWED = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a",
    "tg-spoiler", "tg-emoji", "span", "blockquote",
}  # fmt: skip
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*>")
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);")


class EntityError(ValueError):
    """The text is not valid Telegram HTML."""


def parse_html(text: str) -> str:
    """The plain text Telegram would show for ``text`` in HTML mode; raises :class:`EntityError`.

    Byte offsets in messages are UTF-8 offsets like the real API's.
    """
    out: list[str] = []
    stack: list[str] = []
    i = 0

    def offset(pos: int) -> int:
        return len(text[:pos].encode("utf-8"))

    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if not m:
                raise EntityError(f"Unexpected character '<' at byte offset {offset(i)}")
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in _ALLOWED:
                kind = "end" if closing else "start"
                raise EntityError(f'Unsupported {kind} tag "{name}" at byte offset {offset(i)}')
            if closing:
                if not stack or stack[-1] != name:
                    raise EntityError(
                        f'Can\'t find start tag corresponding to end tag "{name}" at byte '
                        f"offset {offset(i)}"
                    )
                stack.pop()
            else:
                stack.append(name)
            i = m.end()
            continue
        if ch == "&":
            m = _ENTITY.match(text, i)
            if not m:
                raise EntityError(f"Unexpected character '&' at byte offset {offset(i)}")
            ref = m.group(1)
            if ref.startswith("#"):
                out.append(html.unescape(m.group(0)))
            elif ref in _NAMED_ENTITIES:
                out.append(_NAMED_ENTITIES[ref])
            else:
                raise EntityError(f'Unsupported HTML entity "&{ref};" at byte offset {offset(i)}')
            i = m.end()
            continue
        out.append(ch)
        i += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


class TelegramError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.code)


class TelegramService(Service):
    """A Bot API server holding one bot and one chat; records every delivered message."""

    name = "telegram"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        alphabet = string.ascii_letters + string.digits + "_-"
        bot_id = ctx.rng.randint(10**9, 9 * 10**9)
        self.token = f"{bot_id}:AA" + "".join(ctx.rng.choice(alphabet) for _ in range(33))
        self.bot_id = bot_id
        self.chat_id = str(-(10**12) - ctx.rng.randint(10**8, 9 * 10**8))  # a group chat
        self.messages: list[dict[str, Any]] = []
        self._next_id = 1
        self._recent: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.token_ref = ""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/bot{token}/{method}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        cert = self.ctx.ca.issue_server_cert(
            ["api.telegram.org", "localhost"], ["127.0.0.1"], days=365
        )
        self.port = self.ctx.port()
        site = web.TCPSite(
            self._runner,
            self.ctx.host,
            self.port,
            ssl_context=server_ssl_context(cert.chain_pem, cert.key_pem),
        )
        await site.start()
        self.token_ref = write_secret(self.ctx, "telegram_token", self.token)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        return {
            "systems": {
                "telegram": {
                    "url": f"https://{self.ctx.host}:{self.port}",
                    "bot_token": self.token_ref,
                    "chat_id": self.chat_id,
                    "tls": {"ca_bundle": str(ca_bundle_path(self.ctx))},
                }
            }
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "messages":
            return {"messages": list(self.messages), "count": len(self.messages)}
        if action == "clear":
            count = len(self.messages)
            self.messages.clear()
            self._recent.clear()
            return {"cleared": count}
        if action == "flood":
            extra = self.ctx.faults_for(self.name).extra
            extra["flood_next"] = int(payload.get("count", 1))
            extra["retry_after"] = int(payload.get("retry_after", 1))
            return {"flood_next": extra["flood_next"], "retry_after": extra["retry_after"]}
        if action == "token":
            return {"token": self.token, "chat_id": self.chat_id}
        raise KeyError(action)

    # -- HTTP ---------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        faults = self.ctx.faults_for(self.name)
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.roll(faults.stall_rate, self.ctx.rng):
            await asyncio.sleep(faults.stall_s)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if faults.roll(faults.reset_rate, self.ctx.rng):
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        try:
            if request.match_info["token"] != self.token:
                raise TelegramError(401, "Unauthorized")
            if faults.roll(faults.error_rate, self.ctx.rng):
                raise TelegramError(500, "Internal Server Error")
            method = request.match_info["method"]
            args = await _read_args(request)
            if method.lower() == "getme":
                return _ok(self._me())
            if method.lower() == "sendmessage":
                return _ok(self._send_message(args))
            raise TelegramError(404, "Not Found")
        except TelegramError as exc:
            return exc.response()

    def _me(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "labops",
            "username": "labops_sandbox_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _send_message(self, args: dict[str, Any]) -> dict[str, Any]:
        chat_id = str(args.get("chat_id", "")).strip()
        if not chat_id:
            raise TelegramError(400, "Bad Request: chat_id is empty")
        if chat_id != self.chat_id:
            raise TelegramError(400, "Bad Request: chat not found")
        self._check_flood(chat_id)
        text = str(args.get("text") or "")
        parse_mode = args.get("parse_mode")
        plain = text
        if isinstance(parse_mode, str) and parse_mode.upper() == "HTML":
            try:
                plain = parse_html(text)
            except EntityError as exc:
                raise TelegramError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif parse_mode not in (None, "", "Markdown", "MarkdownV2"):
            raise TelegramError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        if not plain.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        if len(plain) > MAX_TEXT:
            raise TelegramError(400, "Bad Request: message is too long")
        message = {
            "message_id": self._next_id,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "labops"},
            "chat": {"id": int(chat_id), "title": "homelab ops", "type": "supergroup"},
            "date": int(time.time()),
            "text": plain,
        }
        self._next_id += 1
        self.messages.append(
            {
                "message_id": message["message_id"],
                "chat_id": chat_id,
                "text": plain,
                "raw": text,
                "parse_mode": parse_mode,
                "date": message["date"],
            }
        )
        del self.messages[:-10000]  # bounded memory over long runs
        return message

    def _check_flood(self, chat_id: str) -> None:
        extra = self.ctx.faults_for(self.name).extra
        retry_after = int(extra.get("retry_after", 1))
        if int(extra.get("flood_next", 0)) > 0:
            extra["flood_next"] = int(extra["flood_next"]) - 1
            raise TelegramError(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )
        limit = int(extra.get("chat_rate_per_s", 20))
        now = time.monotonic()
        recent = self._recent.setdefault(chat_id, deque())
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        if len(recent) >= limit:
            raise TelegramError(429, "Too Many Requests: retry after 1", retry_after=1)
        recent.append(now)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Query string, form or JSON body, as the Bot API accepts all three."""
    args: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text() or "{}")
            except ValueError:
                raise TelegramError(400, "Bad Request: can't parse JSON body") from None
            if isinstance(body, dict):
                args.update(body)
        else:
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
    return args


SERVICE = TelegramService
