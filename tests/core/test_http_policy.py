"""labops.http (HttpClient + call_with_retry) against a real local HTTP server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from labops.config.systems import HttpRetry
from labops.errors import ApiError, AuthFailed, MaybeApplied, Unreachable
from labops.http import HttpClient
from tests.fixtures.scripted_http import Reply, ScriptedServer
from tests.fixtures.sshd import free_port

FAST = HttpRetry(attempts=4, backoff_s=0.05, backoff_max_s=0.2, jitter=0.0, timeout_s=2)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


def client(server: ScriptedServer, retry: HttpRetry = FAST) -> HttpClient:
    return HttpClient("wazuh", server.url, retry=retry)


def test_server_errors_are_retried_until_success(server: ScriptedServer) -> None:
    server.script = [Reply(500, {"message": "boom"}), Reply(502), Reply(503)]
    server.default = Reply(200, {"ok": True})
    with client(server) as c:
        assert c.get_json("/status") == {"ok": True}
    assert len(server.requests) == 4
    gaps = [b.at - a.at for a, b in zip(server.requests, server.requests[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff


def test_server_errors_give_up_after_the_attempts(server: ScriptedServer) -> None:
    server.default = Reply(500, {"message": "database locked"})
    with client(server) as c, pytest.raises(ApiError) as err:
        c.get_json("/agents")
    assert len(server.requests) == 4
    assert err.value.system == "wazuh"
    assert "database locked" in str(err.value) and "after 4 tries" in str(err.value)


def test_401_is_not_retried_and_names_the_system(server: ScriptedServer) -> None:
    server.default = Reply(401, {"detail": "Invalid credentials"})
    with client(server) as c, pytest.raises(AuthFailed) as err:
        c.get_json("/security/user/authenticate")
    assert len(server.requests) == 1
    assert err.value.system == "wazuh"
    assert "401" in str(err.value) and "Invalid credentials" in str(err.value)
    assert str(err.value).startswith("wazuh: ")


def test_other_4xx_is_an_api_error_at_once(server: ScriptedServer) -> None:
    server.default = Reply(404, {"error": "no such agent"})
    with client(server) as c, pytest.raises(ApiError) as err:
        c.get_json("/agents/999")
    assert len(server.requests) == 1
    assert err.value.status == 404 and "no such agent" in str(err.value)


def test_501_not_implemented_is_final_not_retried(server: ScriptedServer) -> None:
    # PVE answers 501 for a method it does not have: asking four times changes nothing.
    server.default = Reply(501, {"message": "Method 'POST /x' not implemented"})
    with client(server) as c, pytest.raises(ApiError) as err:
        c.request("POST", "/x", once=True)
    assert len(server.requests) == 1
    assert err.value.status == 501 and "not implemented" in str(err.value)


def test_429_retry_after_is_waited(server: ScriptedServer) -> None:
    server.script = [Reply(429, {"message": "slow down"}, headers={"Retry-After": "1"})]
    server.default = Reply(200, {"ok": 1})
    with client(server) as c:
        started = time.monotonic()
        assert c.get_json("/x") == {"ok": 1}
    assert time.monotonic() - started >= 1.0
    assert server.requests[1].at - server.requests[0].at >= 1.0


def test_stalled_server_times_out_as_unreachable(server: ScriptedServer) -> None:
    server.default = Reply(200, {"late": True}, delay_s=1.5)
    retry = HttpRetry(attempts=2, backoff_s=0.01, jitter=0.0, timeout_s=0.3)
    started = time.monotonic()
    with client(server, retry) as c, pytest.raises(Unreachable) as err:
        c.get_json("/slow")
    assert "timed out" in str(err.value) and "after 2 tries" in str(err.value)
    assert len(server.requests) == 2
    assert time.monotonic() - started < 1.5


def test_connection_refused_is_unreachable() -> None:
    retry = HttpRetry(attempts=3, backoff_s=0.01, jitter=0.0, timeout_s=1)
    c = HttpClient("loki", f"http://127.0.0.1:{free_port()}", retry=retry)
    with c, pytest.raises(Unreachable) as err:
        c.get_json("/ready")
    assert err.value.system == "loki"


def test_dropped_connection_is_retried(server: ScriptedServer) -> None:
    server.script = [Reply(drop=True)]
    server.default = Reply(200, {"ok": 2})
    with client(server) as c:
        assert c.get_json("/x") == {"ok": 2}
    assert len(server.requests) == 2


def test_a_request_with_an_effect_is_not_repeated_once_it_may_have_arrived(
    server: ScriptedServer,
) -> None:
    """A chat message whose answer was lost (dropped connection, read timeout) may have been
    posted: sent once, reported as maybe applied; so may one answered 500, 502 or 504. Refused
    with 503 or 429, it was not applied and is tried again; one that never left (connection
    refused) is tried again too."""
    server.script = [Reply(drop=True)]
    server.default = Reply(200, {"ok": True})
    with client(server) as c, pytest.raises(MaybeApplied, match="may have been applied"):
        c.request("POST", "/sendMessage", json={"text": "hi"}, once=True)
    assert len(server.requests) == 1

    server.requests.clear()
    server.script = [Reply(200, {"late": True}, delay_s=1.5)]
    retry = HttpRetry(attempts=3, backoff_s=0.01, jitter=0.0, timeout_s=0.3)
    with client(server, retry) as c, pytest.raises(MaybeApplied):
        c.request("POST", "/sendMessage", json={"text": "hi"}, once=True)
    assert len(server.requests) == 1

    server.requests.clear()
    server.script = [Reply(503), Reply(drop=True)]
    with client(server) as c:  # without once, a dropped answer is retried as before
        assert c.request("POST", "/_search", json={}).json() == {"ok": True}
    assert len(server.requests) == 3

    server.requests.clear()
    server.script = [Reply(503), Reply(429)]
    with client(server) as c:  # refused before any work (503, 429): not applied, tried again
        assert c.request("POST", "/sendMessage", json={"text": "hi"}, once=True).json()
    assert len(server.requests) == 3

    for status in (500, 502, 504):  # a gateway's or server's error may follow the work
        server.requests.clear()
        server.script = [Reply(status, {"description": "Bad Gateway"})]
        with client(server) as c, pytest.raises(MaybeApplied, match=f"HTTP {status} Bad Gateway"):
            c.request("POST", "/sendMessage", json={"text": "hi"}, once=True)
        assert len(server.requests) == 1, status

    retry = HttpRetry(attempts=3, backoff_s=0.01, jitter=0.0, timeout_s=1)
    gone = HttpClient("telegram", f"http://127.0.0.1:{free_port()}", retry=retry)
    with gone, pytest.raises(Unreachable, match="after 3 tries"):
        gone.request("POST", "/sendMessage", json={"text": "hi"}, once=True)


# -- deadline and size cap -------------------------------------------------------------------
# A server trickling its answer one byte a second resets a socket timeout with every byte: with
# only ``timeout_s`` such a request lasted as long as the answer (a minute or two here). Each try
# must end at ``deadline_s``, with an error saying so, well before that.

# A read timeout longer than the gap between two bytes: the trickle never trips it.
SLOW = HttpRetry(attempts=1, timeout_s=5, deadline_s=2)
TRICKLED = {"data": {"version": "8.3.0", "padding": "x" * 20}}  # 60 to 140 s at 1 byte/s
WELL_BEFORE = 30.0
CAPPED = HttpRetry(attempts=3, backoff_s=0.01, max_response_bytes=1000)
BIG = {"data": ["x" * 100] * 50}  # about 5 kB


@pytest.mark.parametrize("body_only", [False, True], ids=["trickled-head", "trickled-body"])
def test_a_trickling_answer_is_abandoned_at_the_deadline(
    server: ScriptedServer, body_only: bool
) -> None:
    server.default = Reply(200, TRICKLED, trickle_s=1.0, trickle_body_only=body_only)
    started = time.monotonic()
    with client(server, SLOW) as c, pytest.raises(Unreachable) as err:
        c.get_json("/agents")
    assert time.monotonic() - started < WELL_BEFORE
    assert str(err.value).startswith("wazuh: no complete answer within 2s (retry.deadline_s)")


def test_an_answer_over_the_size_cap_is_refused_not_retried(server: ScriptedServer) -> None:
    server.default = Reply(200, BIG)
    with client(server, CAPPED) as c, pytest.raises(ApiError) as err:
        c.get_json("/agents")
    assert "answer larger than 1000 bytes (retry.max_response_bytes)" in str(err.value)
    assert len(server.requests) == 1
    with client(server, CAPPED.model_copy(update={"max_response_bytes": 100_000})) as c:
        assert c.get_json("/agents") == BIG  # under the cap: read as before
