"""Shared plumbing of the sandbox's HTTP services: fault injection and serving a site."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from sandbox.service import Context
from sandbox.tls import server_ssl_context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fault_middleware(ctx: Context, system: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Latency, stalls (held then dropped), resets and 500s from ``ctx.faults[system]``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox"):
            return await handler(request)
        faults = ctx.faults_for(system)
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.roll(faults.stall_rate, ctx.rng):
            await asyncio.sleep(faults.stall_s)
            return _drop(request)
        if faults.roll(faults.reset_rate, ctx.rng):
            return _drop(request)
        if faults.roll(faults.error_rate, ctx.rng):
            return web.json_response({"error": "sandbox injected fault"}, status=500)
        return await handler(request)

    return middleware


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=599)


async def serve(
    ctx: Context, app: web.Application, port: int, *, tls_names: list[str] | None = None
) -> web.AppRunner:
    """Start ``app`` on ``ctx.host:port``; over TLS from the sandbox CA when names are given."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = None
    if tls_names is not None:
        issued = ctx.ca.issue_server_cert(tls_names, [ctx.host])
        chain, key = issued
        ssl_context = server_ssl_context(chain, key)
    await web.TCPSite(runner, ctx.host, port, ssl_context=ssl_context).start()
    return runner
