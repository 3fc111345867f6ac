"""The Telegram Bot API, as far as labops uses it, over HTTPS: ``getMe``, ``sendMessage`` (with an
inline keyboard), ``editMessageText``, ``getUpdates`` (long polling), ``answerCallbackQuery``.

Answers like api.telegram.org: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code",
"description"[, "parameters": {"retry_after"}]}``. Checks what the real API checks for a message:
the bot token (401), the chat (400 chat not found), empty or too long text (4096 characters after
entity parsing), and HTML entities (only b/strong, i/em, u/ins, s/strike/del, code, pre, a,
tg-spoiler, blockquote; tags balanced; ``<`` and ``&`` escaped).

Faults (``telegram``): ``error_rate`` (500), ``latency_ms``, ``reset_rate``, ``stall_rate``;
``extra.flood_next`` (answer the next N sendMessage calls with 429), ``extra.retry_after``
(seconds in those 429s, default 1), ``extra.chat_rate_per_s`` (per-chat limit, default 20).

Inline keyboards are checked like the real API: rows of buttons, each with a ``text`` and exactly
one action (``callback_data`` of 1-64 bytes or ``url``), else ``400 BUTTON_DATA_INVALID`` and the
like. A press is made by the control action ``press``: it queues an ``Update`` holding a
``callback_query`` (``id``, ``from``, ``message``, ``chat_instance``, ``data``) for ``getUpdates``,
which confirms updates below its ``offset`` and waits up to ``timeout`` seconds for new ones. A
query is answered once, within 15 minutes of the press (Telegram's limit), else ``400 query is too
old and response timeout expired or query ID is invalid``. An edit to the same text and keyboard is
``400 message is not modified``.

Control actions: ``messages`` (every accepted message, oldest first, with its current text, keyboard
and edits), ``clear``, ``flood`` (``{"count": N, "retry_after": S}``), ``token`` (the bot token and
chat id), ``press`` (``{"message_id", "data", "user": {"id", "username", "first_name"}}``; ``data``
may be any string, as a forged client could send), ``answers`` (every answered callback query).
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
        self.updates: list[dict[str, Any]] = []  # not yet confirmed by a getUpdates offset
        self.queries: dict[str, dict[str, Any]] = {}  # callback query id -> press (and answer)
        self.answers: list[dict[str, Any]] = []
        self._next_update = ctx.rng.randint(10**8, 9 * 10**8)
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
        if action == "press":
            return self._press(payload)
        if action == "answers":
            return {"answers": list(self.answers)}
        raise KeyError(action)

    def _press(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A user pressing an inline button: one callback_query update for getUpdates."""
        message_id = int(payload["message_id"])
        record = self._message(message_id)
        if record is None:
            raise ValueError(f"no message {message_id}")
        user = payload.get("user") or {}
        sender = {
            "id": int(user.get("id", 1)),
            "is_bot": False,
            "first_name": str(user.get("first_name", "Operator")),
            "language_code": "en",
        }
        if user.get("username"):
            sender["username"] = str(user["username"])
        query_id = str(self.ctx.rng.randint(10**18, 9 * 10**18))
        query = {
            "id": query_id,
            "from": sender,
            "message": self._message_object(record),
            "chat_instance": str(-abs(hash((self.chat_id, sender["id"]))) % 10**19),
            "data": str(payload["data"]),
        }
        self.queries[query_id] = {"at": time.monotonic(), "answered": False}
        self.updates.append({"update_id": self._next_update, "callback_query": query})
        self._next_update += 1
        return {"callback_query_id": query_id, "update_id": self._next_update - 1}

    def _message(self, message_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["message_id"] == message_id), None)

    def _message_object(self, record: dict[str, Any]) -> dict[str, Any]:
        """A stored message as the Bot API's Message object."""
        out: dict[str, Any] = {
            "message_id": record["message_id"],
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "labops",
                     "username": "labops_sandbox_bot"},
            "chat": {"id": int(record["chat_id"]), "title": "homelab ops", "type": "supergroup"},
            "date": record["date"],
            "text": record["text"],
        }  # fmt: skip
        if record.get("edit_date"):
            out["edit_date"] = record["edit_date"]
        if record.get("reply_markup"):
            out["reply_markup"] = record["reply_markup"]
        return out

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
            if method.lower() == "editmessagetext":
                return _ok(self._edit_message(args))
            if method.lower() == "answercallbackquery":
                return _ok(self._answer(args))
            if method.lower() == "getupdates":
                return _ok(await self._get_updates(args))
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
        plain = _plain_text(text, parse_mode)
        markup = _inline_keyboard(args.get("reply_markup"))
        message: dict[str, Any] = {
            "message_id": self._next_id,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "labops"},
            "chat": {"id": int(chat_id), "title": "homelab ops", "type": "supergroup"},
            "date": int(time.time()),
            "text": plain,
        }
        if markup:
            message["reply_markup"] = markup
        self._next_id += 1
        self.messages.append(
            {
                "message_id": message["message_id"],
                "chat_id": chat_id,
                "text": plain,
                "raw": text,
                "parse_mode": parse_mode,
                "date": message["date"],
                "reply_markup": markup,
                "edits": [],
            }
        )
        del self.messages[:-10000]  # bounded memory over long runs
        return message

    def _edit_message(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("inline_message_id"):
            raise TelegramError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat_id = str(args.get("chat_id", "")).strip()
        if not chat_id:
            raise TelegramError(400, "Bad Request: chat_id is empty")
        if chat_id != self.chat_id:
            raise TelegramError(400, "Bad Request: chat not found")
        try:
            message_id = int(args.get("message_id", 0))
        except (TypeError, ValueError):
            raise TelegramError(400, "Bad Request: message_id is invalid") from None
        record = self._message(message_id)
        if record is None:
            raise TelegramError(400, "Bad Request: message to edit not found")
        text = str(args.get("text") or "")
        plain = _plain_text(text, args.get("parse_mode"))
        markup = _inline_keyboard(args.get("reply_markup"))
        if plain == record["text"] and markup == record.get("reply_markup"):
            raise TelegramError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        record["edits"].append({"text": record["text"], "reply_markup": record.get("reply_markup")})
        record.update(text=plain, raw=text, parse_mode=args.get("parse_mode"),
                      reply_markup=markup, edit_date=int(time.time()))  # fmt: skip
        return self._message_object(record)

    def _answer(self, args: dict[str, Any]) -> bool:
        query_id = str(args.get("callback_query_id", ""))
        query = self.queries.get(query_id)
        too_old = query is None or time.monotonic() - query["at"] > 15 * 60
        if too_old or query is None or query["answered"]:
            raise TelegramError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        text = str(args.get("text") or "")
        if len(text) > 200:
            raise TelegramError(400, "Bad Request: MESSAGE_TOO_LONG")
        query["answered"] = True
        show_alert = args.get("show_alert") in (True, "true", "True", "1")
        self.answers.append({"callback_query_id": query_id, "text": text, "show_alert": show_alert})
        return True

    async def _get_updates(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            offset = int(args.get("offset") or 0)
            limit = min(max(int(args.get("limit") or 100), 1), 100)
            timeout = max(float(args.get("timeout") or 0), 0.0)
        except (TypeError, ValueError):
            raise TelegramError(400, "Bad Request: wrong parameter value") from None
        allowed = args.get("allowed_updates")
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except ValueError:
                raise TelegramError(400, "Bad Request: can't parse allowed_updates") from None
        if offset:  # confirms every update below it, as the real API forgets them
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(timeout, 50.0)
        while True:
            ready = [
                u for u in self.updates
                if (not offset or u["update_id"] >= offset)
                and (not allowed or any(k in allowed for k in u if k != "update_id"))
            ]  # fmt: skip
            if ready or time.monotonic() >= deadline:
                return ready[:limit]
            await asyncio.sleep(0.05)

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


def _plain_text(text: str, parse_mode: Any) -> str:
    """The text a chat shows; the real API's checks of entities and length."""
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
    return plain


def _inline_keyboard(markup: Any) -> dict[str, Any] | None:
    """An InlineKeyboardMarkup checked as the Bot API checks it (None: no keyboard)."""
    if markup in (None, ""):
        return None
    if isinstance(markup, str):  # form-encoded requests carry it as JSON text
        try:
            markup = json.loads(markup)
        except ValueError:
            raise TelegramError(
                400, "Bad Request: can't parse reply keyboard markup JSON object"
            ) from None
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        raise TelegramError(400, "Bad Request: unsupported reply_markup")
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise TelegramError(400, 'Bad Request: field "inline_keyboard" must be an Array of Arrays')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not str(button.get("text") or "").strip():
                raise TelegramError(
                    400, "Bad Request: text buttons are unallowed in the inline keyboard"
                )
            actions = [k for k in ("callback_data", "url", "switch_inline_query") if k in button]
            if len(actions) != 1:
                raise TelegramError(400, 'Bad Request: can\'t find field "callback_data"')
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= 64:
                raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
    return {"inline_keyboard": rows} if any(rows) else None


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
