"""The deadline and the size cap of every HTTP try (the HTTP policy's, :mod:`labops.http`).

A socket timeout bounds one read, so a server sending a byte a second holds a request as long as
it likes. Each try therefore runs under a :class:`Deadline` (``retry.deadline_s``, connect to last
byte) and reads at most ``retry.max_response_bytes``:

- httpx: every socket read and write gets the time left as its timeout (:class:`DeadlineBackend`
  under the client's connection pool), so the try ends at the deadline however the server sends.
- requests (proxmoxer's session): its reads cannot be given that, so one watchdog thread shuts
  the try's socket down when its time is up and the blocked read fails (:class:`CappedAdapter`).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpcore
import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter

from labops.http_settings import HttpRetry

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """A try outlived ``retry.deadline_s`` (a server trickling or stalling its answer)."""


class ResponseTooLarge(Exception):
    """An answer longer than ``retry.max_response_bytes``: refused, never retried."""


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


@functools.cache
def _default_context(verify: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify)


def deadline_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """httpx's transport on a connection pool whose sockets keep the thread's deadline (httpx
    takes no network backend, so the pool is replaced; same limits as httpx's default)."""
    # One context, built once: loading the trust store costs ~0.2 s, per client it added up (the
    # default store's context is shared by every client of the process; nothing changes it).
    context = verify if isinstance(verify, ssl.SSLContext) else _default_context(verify)
    transport = httpx.HTTPTransport(verify=context)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=context,
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
