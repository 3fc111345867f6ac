"""The asyncio TLS prober: TCP connect, TLS handshake with SNI, the certificate chain as served.

Why the standard ``ssl`` module and how the chain is read: the speed goal is "within 1.5x of a
bare asyncio/ssl loop", so the prober uses that same stack (no extra TLS library, no threads).
Python 3.13 made ``SSLObject.get_unverified_chain()`` public; on 3.10-3.12 the very method it
wraps exists on the C-level object (``SSLObject._sslobj.get_unverified_chain()``, returning
``_ssl.Certificate`` objects with ``public_bytes``). :func:`served_chain` prefers the public method
and falls back to that one, then to the leaf alone (``getpeercert(binary_form=True)``) with a
flag, so a future Python that drops the private path degrades to "leaf only", never to a crash.
The alternatives were worse: pyOpenSSL is not installed and is slower per handshake, and parsing
the TLS Certificate message by hand only works up to TLS 1.2 (TLS 1.3 encrypts it).

Verification is off in the handshake on purpose: an expired, self-signed or mismatched
certificate must still be read so that it can be classified; :mod:`labops.certificates.chain`
validates it.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from labops.certificates.models import Target

T = TypeVar("T")
R = TypeVar("R")
_DER = 2  # _ssl.ENCODING_DER


class RawProbe(BaseModel):
    """A probe's raw outcome: DER chain as served (leaf first), or the error."""

    model_config = ConfigDict(frozen=True)

    target: Target
    chain_der: list[bytes] = Field(default_factory=list)
    chain_complete: bool = Field(True, description="False when only the leaf could be read.")
    tls_version: str | None = None
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chain_der)


def probe_context() -> ssl.SSLContext:
    """A client context that completes handshakes with any certificate (validated later)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Security level 0 lets weak keys/signatures through the handshake so they get reported
    # as weak rather than as "unreachable".
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def served_chain(sslobj: ssl.SSLObject | ssl.SSLSocket) -> tuple[list[bytes], bool]:
    """The peer's chain as DER, leaf first, and whether it is the full served chain."""
    public = getattr(sslobj, "get_unverified_chain", None)
    if public is not None:  # Python >= 3.13
        return [bytes(c) for c in public()], True
    inner = getattr(sslobj, "_sslobj", None)
    private = getattr(inner, "get_unverified_chain", None)
    if private is not None:  # Python 3.10-3.12: the method 3.13 made public
        return [c.public_bytes(_DER) for c in private() or []], True
    leaf = sslobj.getpeercert(binary_form=True)
    return ([leaf] if leaf else []), False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}".strip(": ")


async def probe_target(
    target: Target,
    ctx: ssl.SSLContext,
    connect_timeout_s: float = 3.0,
    handshake_timeout_s: float = 5.0,
) -> RawProbe:
    """Connect, handshake with SNI ``target.name`` and read the served chain. Never raises."""
    started = time.perf_counter()

    def done(**kw: Any) -> RawProbe:
        return RawProbe(target=target, elapsed_ms=(time.perf_counter() - started) * 1000, **kw)

    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.address, target.port), connect_timeout_s
        )
    except TimeoutError:
        return done(error=f"TCP connect timed out after {connect_timeout_s:g} s")
    except Exception as exc:
        return done(error=_describe(exc))
    try:
        # SNI must be a name: an IP literal goes without SNI, as browsers do.
        sni = None if _is_ip(target.name) else target.name
        try:
            await asyncio.wait_for(
                writer.start_tls(
                    ctx,
                    server_hostname=sni or target.name,
                    ssl_handshake_timeout=handshake_timeout_s,
                ),
                handshake_timeout_s + 0.5,
            )
        except (TimeoutError, ConnectionAbortedError) as exc:
            # asyncio reports its own ssl_handshake_timeout as ConnectionAbortedError.
            if isinstance(exc, ConnectionAbortedError) and "handshake" not in str(exc):
                return done(error=_describe(exc))
            return done(
                error=f"TLS handshake timed out after {handshake_timeout_s:g} s "
                "(TCP accepted, no TLS answer)"
            )
        except Exception as exc:
            return done(error=_describe(exc))
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is None:
            return done(error="no TLS session after handshake")
        chain, complete = served_chain(sslobj)
        if not chain:
            return done(error="server sent no certificate")
        return done(chain_der=chain, chain_complete=complete, tls_version=sslobj.version())
    finally:
        # abort(): a probe needs no graceful close_notify exchange, and waiting for one would
        # let a misbehaving server hold a slot.
        writer.transport.abort()
        del reader


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


async def probe_many(
    targets: Iterable[Target],
    concurrency: int = 64,
    connect_timeout_s: float = 3.0,
    handshake_timeout_s: float = 5.0,
    then: Callable[[RawProbe], R] | None = None,
) -> list[R]:
    """Probe every target, at most ``concurrency`` at once; results in the targets' order.

    ``then`` turns each raw probe into its result as soon as it lands (on the loop, before the
    slot is released): that CPU work then overlaps the network waits of the other probes
    instead of running after the last handshake.
    """
    ctx = probe_context()
    gate = asyncio.Semaphore(max(1, concurrency))
    finish: Callable[[RawProbe], Any] = then or (lambda raw: raw)

    async def one(t: Target) -> R:
        async with gate:
            raw = await probe_target(t, ctx, connect_timeout_s, handshake_timeout_s)
        return cast(R, finish(raw))

    return list(await asyncio.gather(*(one(t) for t in targets)))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name="labops-tls-probe")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def probe_all(
    targets: Iterable[Target],
    concurrency: int = 64,
    connect_timeout_s: float = 3.0,
    handshake_timeout_s: float = 5.0,
    then: Callable[[RawProbe], R] | None = None,
) -> list[R]:
    """Sync entry point of :func:`probe_many`."""
    return run_sync(
        probe_many(list(targets), concurrency, connect_timeout_s, handshake_timeout_s, then)
    )
