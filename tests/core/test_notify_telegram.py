"""TelegramNotifier against the sandbox's Telegram Bot API (started on its own, over HTTPS)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from labops.config.systems import HttpRetry, TlsOptions
from labops.http import HttpClient
from labops.notify.telegram import TelegramNotifier
from labops.reports import Notification
from sandbox.lab import generate_lab
from sandbox.service import Context
from sandbox.services.telegram import TelegramService, parse_html
from sandbox.tls import SandboxCA
from tests.fixtures.sshd import free_port


@dataclass
class TelegramApi:
    service: TelegramService
    loop: asyncio.AbstractEventLoop
    url: str
    token: str
    chat_id: str
    ca_bundle: Path

    def control(self, action: str, **payload: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            return self.service.control(action, payload)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def faults(self, **extra: Any) -> None:
        self.service.ctx.faults_for("telegram").extra.update(extra)

    def client(self) -> HttpClient:
        retry = HttpRetry(attempts=2, backoff_s=0.01, timeout_s=5)
        return HttpClient(
            "telegram", self.url, retry=retry, tls=TlsOptions(ca_bundle=self.ca_bundle)
        )

    def notifier(self, token: str | None = None) -> TelegramNotifier:
        return TelegramNotifier(
            self.url, SecretStr(token or self.token), self.chat_id, self.client()
        )


@pytest.fixture(scope="module")
def telegram_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelegramApi]:
    root = tmp_path_factory.mktemp("telegram")
    state = root / "state"
    state.mkdir()
    ca = SandboxCA.create()
    (root / "ca.pem").write_bytes(ca.cert_pem)
    ctx = Context(
        lab=generate_lab(containers=2, vms=0, seed=1),
        state_dir=state,
        host="127.0.0.1",
        ca=ca,
        faults={},
        rng=random.Random(7),
        base_port=free_port() - 1,
    )
    service = TelegramService(ctx)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(10)
    api = TelegramApi(
        service=service,
        loop=loop,
        url=service.config_fragment()["systems"]["telegram"]["url"],
        token=service.token,
        chat_id=service.chat_id,
        ca_bundle=root / "ca.pem",
    )
    try:
        yield api
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def api(telegram_api: TelegramApi) -> TelegramApi:
    telegram_api.control("clear")
    telegram_api.service.ctx.faults_for("telegram").extra.clear()
    return telegram_api


def test_message_is_sent_as_escaped_html(api: TelegramApi) -> None:
    note = Notification(title="Patch sweep <pve1> & friends", body="3 hosts > 10 updates")
    delivery = api.notifier().send(note)
    assert delivery.ok, delivery.detail
    (msg,) = api.control("messages")["messages"]
    assert msg["parse_mode"] == "HTML"
    assert "<b>Patch sweep &lt;pve1&gt; &amp; friends</b>" in msg["raw"]
    assert "Patch sweep <pve1> & friends" in msg["text"]  # what the chat shows
    assert "3 hosts > 10 updates" in msg["text"]


def test_ten_thousand_characters_arrive_in_order_in_parts(api: TelegramApi) -> None:
    body = "\n".join(f"guest {i:04d}: " + " ".join(["ok"] * 20) for i in range(160))
    assert len(body) > 10_000
    delivery = api.notifier().send(Notification(title="Backups", body=body))
    assert delivery.ok, delivery.detail
    messages = api.control("messages")["messages"]
    assert len(messages) == 3
    assert all(len(m["raw"]) <= 4096 for m in messages)
    shown = "\n".join(m["text"] for m in messages)
    assert shown.endswith(body)  # every line, in order, none cut in half


def test_flood_limit_retry_after_is_honoured(api: TelegramApi) -> None:
    api.control("flood", count=2, retry_after=1)
    notifier = api.notifier()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    notifier.sleep = sleep
    started = time.monotonic()
    delivery = notifier.send(Notification(title="after a flood"))
    assert delivery.ok, delivery.detail
    assert waits == [1.0, 1.0]
    assert time.monotonic() - started >= 2
    assert len(api.control("messages")["messages"]) == 1


def test_flood_longer_than_allowed_fails_the_delivery(api: TelegramApi) -> None:
    api.control("flood", count=1, retry_after=600)
    delivery = api.notifier().send(Notification(title="x"))
    assert not delivery.ok
    assert "429 Too Many Requests: retry after 600" in delivery.detail


def test_wrong_token_is_a_failed_delivery_without_the_token(
    api: TelegramApi, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "123456:AA-this-is-a-wrong-token-value"
    caplog.set_level(logging.DEBUG)
    delivery = api.notifier(token=bad).send(Notification(title="x"))
    assert not delivery.ok
    assert "401" in delivery.detail and "Unauthorized" in delivery.detail
    assert bad not in delivery.detail
    assert bad not in caplog.text
    assert api.control("messages")["count"] == 0


def test_sandbox_rejects_what_telegram_rejects(api: TelegramApi) -> None:
    url = f"{api.url}/bot{api.token}/sendMessage"
    with httpx.Client(verify=str(api.ca_bundle)) as http:

        def send(**body: Any) -> httpx.Response:
            return http.post(url, json={"chat_id": api.chat_id, **body})

        too_long = send(text="x" * 4097)
        assert too_long.status_code == 400
        assert too_long.json()["description"] == "Bad Request: message is too long"
        unbalanced = send(text="<b>bold", parse_mode="HTML")
        assert unbalanced.status_code == 400
        assert unbalanced.json()["description"].startswith("Bad Request: can't parse entities")
        assert send(text="a < b", parse_mode="HTML").status_code == 400
        assert send(text="&lt;" * 4096, parse_mode="HTML").status_code == 200  # 4096 after parsing
        me = http.get(f"{api.url}/bot{api.token}/getMe").json()
        assert me["ok"] and me["result"]["is_bot"]
        unauthorized = http.get(f"{api.url}/botnope/getMe")
        assert unauthorized.status_code == 401
        assert unauthorized.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }


def test_sandbox_per_chat_rate_limit(api: TelegramApi) -> None:
    api.faults(chat_rate_per_s=3)
    url = f"{api.url}/bot{api.token}/sendMessage"
    with httpx.Client(verify=str(api.ca_bundle)) as http:
        codes = [
            http.post(url, data={"chat_id": api.chat_id, "text": str(i)}).status_code
            for i in range(5)
        ]
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]


def test_parse_html_entities() -> None:
    assert parse_html('<b>a</b> &amp; <a href="x">l</a> &#128512;') == "a & l \U0001f600"
    with pytest.raises(ValueError, match="Unsupported start tag"):
        parse_html("<div>x</div>")
    with pytest.raises(ValueError, match="Unsupported HTML entity"):
        parse_html("&nbsp;")
