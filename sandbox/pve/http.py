"""HTTP plumbing shared by the sandbox's API servers: a route table that can be introspected (the
fidelity test checks every route against the PVE schema), fault injection, connection resets.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.service import Faults


class ApiError(Exception):
    """An error answer: ``status``, a one-line ``message`` and optional per-parameter ``errors``."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def param_error(name: str, text: str) -> ApiError:
    return ApiError(400, "Parameter verification failed.", {name: text})


@dataclass
class Result:
    """A handler's answer with extra top-level attributes (PVE's ``total`` of the task log)."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[..., Awaitable[Any]]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    regex: re.Pattern[str]


class Router:
    """Path templates like ``/nodes/{node}/lxc/{vmid}``; a parameter matches one path segment
    (``{upid}`` and ``{volume}`` may hold ``:`` and, for volumes, ``/``)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = "^"
        for part in re.split(r"(\{[^}]+\})", template):
            if part.startswith("{"):
                name = part[1:-1]
                seg = ".+" if name == "volume" else "[^/]+"
                pattern += f"(?P<{name}>{seg})"
            else:
                pattern += re.escape(part)
        self._routes.append(Route(method, template, handler, re.compile(pattern + "/?$")))

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(method, template, fn)
            return fn

        return deco

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for r in self._routes:
            if r.method != method:
                continue
            m = r.regex.match(path)
            if m:
                return r, m.groupdict()
        return None

    def routes(self) -> list[tuple[str, str]]:
        """Every (method, template) served, for introspection."""
        return [(r.method, r.template) for r in self._routes]


def abort_connection(request: web.Request) -> None:
    """Drop the connection without an answer (a reset from the client's point of view)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class Dropped(Exception):
    """Raised after :func:`abort_connection`; the caller answers nothing."""


async def inject_faults(
    request: web.Request, faults: Faults, rng: random.Random, path: str
) -> ApiError | None:
    """Apply latency, stalls and resets (raising :class:`Dropped`); return an injected error.

    ``faults.extra["stall_paths"]`` (substrings) limits stalls to one class of requests, like a
    slow storage listing; without it every request may stall.
    """
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    stall_paths = faults.extra.get("stall_paths")
    stall_applies = not stall_paths or any(p in path for p in stall_paths)
    if stall_applies and faults.roll(faults.stall_rate, rng):
        await asyncio.sleep(faults.stall_s)
        abort_connection(request)
        raise Dropped
    if faults.roll(faults.reset_rate, rng):
        abort_connection(request)
        raise Dropped
    if faults.roll(faults.error_rate, rng):
        return ApiError(500, "internal error - sandbox injected fault")
    return None


def parse_bool(value: Any) -> bool | None:
    """PVE's strict boolean: form values only "1"/"0", JSON booleans and 0/1 numbers too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in ("0", "1"):
        return value == "1"
    return None


async def read_args(request: web.Request) -> dict[str, Any]:
    """Query parameters merged with a form or JSON body (both accepted for POST/PUT)."""
    args: dict[str, Any] = dict(request.query)
    if request.method in ("POST", "PUT") and request.can_read_body:
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, "Parameter verification failed.", {"body": str(exc)}) from None
            if isinstance(body, dict):
                args.update(body)
        else:
            form = await request.post()
            for key in form:
                values = form.getall(key)
                args[key] = values[0] if len(values) == 1 else [str(v) for v in values]
    return args
