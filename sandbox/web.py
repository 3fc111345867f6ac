"""Shared plumbing of the sandbox's HTTP services: start an aiohttp app, apply a system's faults."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from sandbox.service import Context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fault_middleware(ctx: Context, system: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Latency, stalls, resets and 500s as set for ``system`` through the control API."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = ctx.faults_for(system)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.roll(faults.stall_rate, ctx.rng):
            await asyncio.sleep(faults.stall_s)
            raise web.HTTPServiceUnavailable()
        if faults.roll(faults.reset_rate, ctx.rng):
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("sandbox fault: connection reset")
        if faults.roll(faults.error_rate, ctx.rng):
            return web.json_response({"message": "sandbox fault: internal error"}, status=500)
        return await handler(request)

    return middleware


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Start ``app`` on host:port and return its runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner
