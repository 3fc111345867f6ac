"""The one HTTP policy: timeouts, retries with exponential backoff and jitter, fail-fast on auth.

Retried: connection errors, timeouts, 5xx and 429 (``Retry-After`` honoured); a request that must
not happen twice (``once``, a change) only when it surely was not acted on. Never retried: 401 and
403 (``AuthFailed``) and other 4xx (``ApiError``), whose message names the system and what to fix.
The same policy wraps non-httpx clients (proxmoxer) through :func:`call_with_retry`.

Every try also has a deadline (``retry.deadline_s``, connect to last byte) and a size cap
(``retry.max_response_bytes``), on httpx and on proxmoxer's requests alike: see
:mod:`labops.http_limits`.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from labops.errors import ApiError, AuthFailed, MaybeApplied, TlsRejected, Unreachable
from labops.http_limits import (
    DeadlineExceeded,
    ResponseTooLarge,
    deadline,
    deadline_transport,
    read_capped,
)
from labops.http_settings import HttpRetry, TlsOptions

T = TypeVar("T")
log = logging.getLogger("labops.http")

AUTH_HINT = "check the token/credentials and their permissions in the config"


class RetryableStatus(Exception):
    """An HTTP answer worth another try (5xx, 429); carries the server's wait hint."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def backoff_delays(policy: HttpRetry, rng: random.Random | None = None) -> list[float]:
    """Delays between tries: base * 2**n, capped, plus up to ``jitter`` of random extra."""
    rng = rng or random.Random()
    delays = []
    for n in range(policy.attempts - 1):
        base = min(policy.backoff_s * (2**n), policy.backoff_max_s)
        delays.append(base + base * policy.jitter * rng.random())
    return delays


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value)
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def call_with_retry(
    system: str,
    fn: Callable[[], T],
    policy: HttpRetry,
    classify: Callable[[BaseException], BaseException | None],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` under the retry policy.

    ``classify(exc)`` maps a client's exception to ``RetryableStatus`` or ``Unreachable``
    (retried) or to a final labops error (raised at once), or None to re-raise ``exc``.
    """
    delays = backoff_delays(policy)
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:
            mapped = classify(exc)
            if mapped is None:
                raise
            if not isinstance(mapped, RetryableStatus | Unreachable):
                raise mapped from None
            last = mapped
            if attempt >= len(delays):
                break
            wait = delays[attempt]
            if isinstance(mapped, RetryableStatus) and mapped.retry_after is not None:
                wait = min(max(wait, mapped.retry_after), 120.0)
            log.debug("%s: %s; retry %d in %.2fs", system, mapped, attempt + 1, wait)
            sleep(wait)
    if isinstance(last, RetryableStatus):
        raise ApiError(
            system,
            f"{last.message} (HTTP {last.status}, after {policy.attempts} tries)",
            last.status,
        )
    assert isinstance(last, Unreachable)
    raise Unreachable(system, f"{last.message} (after {policy.attempts} tries)")


def _describe_transport(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


# Transport errors raised before a byte of the request left: repeating such a request cannot
# make it happen twice.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def classify_httpx(
    system: str, what: str = "", once: bool = False
) -> Callable[[BaseException], BaseException | None]:
    """Map httpx's errors onto the policy's. ``once``: the request has an effect that must not
    happen twice (a chat message): after it may have reached the server (a timeout or a dropped
    connection while waiting for the answer, or a 5xx other than 503) it is not repeated, it
    raises ``MaybeApplied``; 429 and 503 (refused before any work) are still retried."""

    def maybe_applied(exc: object) -> MaybeApplied:
        return MaybeApplied(
            system,
            f"{what}: {exc} after the request was sent; it may have been applied, so it is not "
            "repeated",
        )

    def classify(exc: BaseException) -> BaseException | None:
        if isinstance(exc, RetryableStatus):
            if once and exc.status not in (429, 503):
                # a 5xx other than 503 does not prove the server did nothing (a gateway's 502
                # or 504 after forwarding, a 500 after the message was stored)
                return maybe_applied(f"HTTP {exc.status} {exc.message}")
            return exc
        if isinstance(exc, DeadlineExceeded):
            return maybe_applied(exc) if once else Unreachable(system, str(exc))
        if isinstance(exc, ResponseTooLarge):
            return ApiError(system, str(exc))
        if isinstance(exc, httpx.TransportError):
            verify = _cert_error(exc)
            if verify is not None:
                return TlsRejected(
                    system,
                    f"certificate not trusted ({verify}): set tls.ca_bundle to the CA "
                    "that signed it, or tls.server_name to the name it carries",
                )
            if once and not isinstance(exc, _NEVER_SENT):
                return maybe_applied(_describe_transport(exc))
            return Unreachable(system, _describe_transport(exc))
        return None

    return classify


def _cert_error(exc: BaseException) -> str | None:
    """The verification message when ``exc`` was caused by a rejected certificate."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


class HttpClient:
    """An httpx client bound to one system, applying the retry policy to every request."""

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        retry: HttpRetry | None = None,
        tls: TlsOptions | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        self.system = system
        self.retry = retry or HttpRetry()
        tls = tls or TlsOptions()
        # Connect to the URL's address but present and verify another name (a service reached
        # by IP, or through a proxy whose certificate carries the service's name).
        self._extensions = {"sni_hostname": tls.server_name} if tls.server_name else None
        verify: Any = True
        if not tls.verify:
            verify = False
        elif tls.ca_bundle:
            import ssl

            ctx = ssl.create_default_context(cafile=str(tls.ca_bundle))
            verify = ctx
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(headers or {}),
            auth=auth,
            timeout=httpx.Timeout(self.retry.timeout_s),
            follow_redirects=False,
            transport=deadline_transport(verify),
        )

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        once: bool = False,
    ) -> httpx.Response:
        """Send one request under the policy; return the response when its status is in ``ok``.

        ``once``: the request has an effect that must not happen twice (it is repeated only when
        it surely never left, or was refused with an error status); see :func:`classify_httpx`.
        """

        def send_once() -> httpx.Response:
            request = self._client.build_request(
                method,
                path,
                params=params,
                json=json,
                data=data,
                content=content,
                headers=headers,
                extensions=self._extensions,
            )
            resp = self._send(request)
            if resp.status_code in ok:
                return resp
            message = _message(resp)
            # 501 (not implemented) and 505 are the server's final word: asking again changes
            # nothing.
            if resp.status_code == 429 or (
                resp.status_code >= 500 and resp.status_code not in (501, 505)
            ):
                raise RetryableStatus(
                    resp.status_code, message, parse_retry_after(resp.headers.get("Retry-After"))
                )
            if resp.status_code in (401, 403):
                raise AuthFailed(
                    self.system,
                    f"{method} {path} refused ({resp.status_code} {message}): {AUTH_HINT}",
                )
            raise ApiError(
                self.system,
                f"{method} {path} failed: {resp.status_code} {message}",
                resp.status_code,
            )

        classify = classify_httpx(self.system, f"{method} {path}", once=once)
        return call_with_retry(self.system, send_once, self.retry, classify)

    def _send(self, request: httpx.Request) -> httpx.Response:
        """One try within the deadline, its answer read up to the size cap."""
        with deadline(self.retry.deadline_s) as limit:
            try:
                streamed = self._client.send(request, stream=True)
                try:
                    body = read_capped(streamed.iter_bytes(), self.retry)
                finally:
                    streamed.close()
            except httpx.TransportError as exc:
                if limit.fired:
                    raise DeadlineExceeded(limit.message()) from exc
                raise
        # the body is decoded already: the copy must not claim an encoding or a length
        kept = [
            (k, v)
            for k, v in streamed.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            streamed.status_code,
            headers=kept,
            content=body,
            request=request,
            extensions=streamed.extensions,
        )

    def get_json(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post_json(self, path: str, **kw: Any) -> Any:
        resp = self.request("POST", path, **kw)
        return resp.json() if resp.content else None


def _message(resp: httpx.Response) -> str:
    text = resp.reason_phrase or ""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "description", "error", "errorMessage", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key].strip()
    elif resp.text and len(resp.text) < 300:
        return resp.text.strip()
    return text
