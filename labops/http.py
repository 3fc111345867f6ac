"""The one HTTP policy: timeouts, retries with exponential backoff and jitter, fail-fast on auth.

Retried: connection errors, timeouts, 5xx and 429 (``Retry-After`` honoured). Never retried: 401 and
403 (``AuthFailed``) and other 4xx (``ApiError``), whose message names the system and what to fix.
The same policy wraps non-httpx clients (proxmoxer) through :func:`call_with_retry`.

Every try also has a deadline (``retry.deadline_s``, connect to last byte) and a size cap
(``retry.max_response_bytes``). A socket timeout alone bounds one read, so a server sending a
byte a second holds a request as long as it likes. httpx's reads and writes get the time left
as their timeout (:class:`DeadlineBackend`); requests' (proxmoxer's) cannot, so a watchdog
shuts the socket down when the try's time is up (:class:`CappedAdapter`).
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import itertools
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpcore
import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter

from labops.config.systems import HttpRetry, TlsOptions
from labops.errors import ApiError, AuthFailed, TlsRejected, Unreachable

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


class DeadlineExceeded(Exception):
    """A try outlived ``retry.deadline_s`` (a server trickling or stalling its answer)."""


class ResponseTooLarge(Exception):
    """An answer longer than ``retry.max_response_bytes``: refused, never retried."""


# -- deadlines ----------------------------------------------------------------------------------


class Deadline:
    """The running try's end (monotonic clock), and the socket it reads from (requests path)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.fired = False
        self.done = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def message(self) -> str:
        return f"no complete answer within {self.seconds:g}s (retry.deadline_s)"

    def watch(self, sock: socket.socket | None) -> None:
        """The try reads from ``sock`` now; shut it at once when the time is already up."""
        with self.lock:
            self.sock = sock
            late = self.fired and not self.done
        if late:
            _shut(sock)

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            sock = self.sock
        _shut(sock)

    def finish(self) -> None:
        with self.lock:
            self.done = True


def _shut(sock: socket.socket | None) -> None:
    """Wake a read blocked on ``sock``: the plain socket's shutdown (not SSLSocket's, which
    would drop its TLS state under the reading thread)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound this thread's next try to ``seconds``."""
    previous = getattr(_current, "deadline", None)
    _current.deadline = limit = Deadline(seconds)
    try:
        yield limit
    finally:
        limit.finish()
        _current.deadline = previous


def _within(call: Callable[[float | None], T], timeout: float | None, timeout_exc: type) -> T:
    """``call(timeout)``, with the timeout cut to what is left of the thread's deadline."""
    limit: Deadline | None = getattr(_current, "deadline", None)
    if limit is None:
        return call(timeout)
    left = limit.at - time.monotonic()
    if left <= 0:
        limit.fired = True
        raise timeout_exc(limit.message())
    if timeout is not None and timeout <= left:
        return call(timeout)
    try:
        return call(left)
    except httpcore.TimeoutException:
        limit.fired = True
        raise timeout_exc(limit.message()) from None


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _within(lambda t: self._inner.read(max_bytes, t), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _within(lambda t: self._inner.write(buffer, t), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return DeadlineStream(
            _within(
                lambda t: self._inner.start_tls(ssl_context, server_hostname, t),
                timeout,
                httpcore.ConnectTimeout,
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with :class:`DeadlineStream` streams."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _within(
            lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options),
            timeout,
            httpcore.ConnectTimeout,
        )
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """httpx's transport on a connection pool whose sockets keep the thread's deadline (httpx
    takes no network backend, so the pool is replaced; same limits as httpx's default)."""
    transport = httpx.HTTPTransport(verify=verify)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=DeadlineBackend(),
    )
    return transport


class _Watchdog:
    """One thread that fires the deadlines of requests' tries (see :class:`CappedAdapter`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, limit: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (limit.at, next(self._seq), limit))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, limit = self._heap[0]
                left = at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
            limit.fire()


_watchdog = _Watchdog()


class _Watched:
    """A urllib3 connection that hands its socket to the thread's deadline before it waits for
    an answer (a new connection and a reused one alike)."""

    sock: socket.socket | None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        limit: Deadline | None = getattr(_current, "deadline", None)
        if limit is not None:
            limit.watch(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class CappedAdapter(HTTPAdapter):
    """requests' transport under the policy's deadline and size cap (proxmoxer's session).

    A watchdog shuts the try's socket when the deadline passes: the blocked read then fails and
    the try ends with :class:`DeadlineExceeded`. The answer is read in chunks up to the cap.
    """

    def __init__(self, retry: HttpRetry) -> None:
        super().__init__()
        self.retry = retry
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        with deadline(self.retry.deadline_s) as limit:
            _watchdog.arm(limit)
            try:
                response = super().send(request, stream=True, **kwargs)
                body = read_capped(response.iter_content(64 * 1024), self.retry)
            except requests.RequestException as exc:
                if limit.fired:
                    raise DeadlineExceeded(limit.message()) from exc
                raise
        response._content = body  # what Response.content returns once read
        return response


def read_capped(chunks: Iterable[bytes], retry: HttpRetry) -> bytes:
    """Join ``chunks``; raise :class:`ResponseTooLarge` past ``retry.max_response_bytes``."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > retry.max_response_bytes:
            raise ResponseTooLarge(
                f"answer larger than {retry.max_response_bytes} bytes "
                "(retry.max_response_bytes); not read"
            )
        parts.append(chunk)
    return b"".join(parts)


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


def classify_httpx(system: str) -> Callable[[BaseException], BaseException | None]:
    def classify(exc: BaseException) -> BaseException | None:
        if isinstance(exc, RetryableStatus):
            return exc
        if isinstance(exc, DeadlineExceeded):
            return Unreachable(system, str(exc))
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
    ) -> httpx.Response:
        """Send one request under the policy; return the response when its status is in ``ok``."""

        def once() -> httpx.Response:
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
            if resp.status_code == 429 or resp.status_code >= 500:
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

        return call_with_retry(self.system, once, self.retry, classify_httpx(self.system))

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
