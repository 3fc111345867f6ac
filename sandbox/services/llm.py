"""An OpenAI-compatible chat endpoint that records every prompt and answers deterministically.

``POST /v1/chat/completions`` (and ``/chat/completions``) answers with a summary that repeats the
placeholders (``IP_1``, ``HOST_2``, ``USER_3``, ``EMAIL_1``) found in the prompt, so a client's
mapping back can be checked, and reports token usage. Two models are configured, a primary and a
fallback, both served here: per-model faults show a client's failover.

Faults (system ``llm``, ``extra``): ``fail_models`` {model: 500|429|401}, ``stall_models``
[model, ...] (held ``stall_s`` then dropped), ``completion_tokens`` (reported usage override),
``answer`` (fixed answer text). Control: ``prompts`` (every request received), ``clear``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web

from sandbox.service import Context, Service
from sandbox.services import write_secret
from sandbox.web import serve

MODELS = ["sandbox-primary", "sandbox-fallback"]
_PLACEHOLDER = re.compile(r"\b(?:IP|HOST|USER|EMAIL)_\d+\b")


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    headers = {"Retry-After": "1"} if status == 429 else None
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


class LlmService(Service):
    name = "llm"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.port = 0
        self.api_key = "sk-sandbox-" + secrets.token_hex(12)
        self.prompts: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.port = self.ctx.port()
        app = web.Application(client_max_size=4 * 1024**2)
        for path in ("/v1/chat/completions", "/chat/completions"):
            app.router.add_post(path, self.chat)
        app.router.add_get("/v1/models", self.models)
        self._runner = await serve(self.ctx, app, self.port)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def config_fragment(self) -> dict[str, Any]:
        ref = write_secret(self.ctx, "llm_api_key", self.api_key)
        base = f"http://{self.ctx.host}:{self.port}/v1"
        return {
            "systems": {
                "llm": {
                    "models": [
                        {"model": f"openai/{m}", "api_base": base, "api_key": ref} for m in MODELS
                    ],
                    "timeout_s": 10.0,
                }
            }
        }

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "prompts":
            return {"prompts": list(self.prompts), "api_key_hint": self.api_key[:11]}
        if action == "clear":
            self.prompts.clear()
            return {"prompts": []}
        if action == "state":
            return {"port": self.port, "models": MODELS, "requests": len(self.prompts)}
        raise KeyError(action)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "sandbox"}
                    for m in MODELS
                ],
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        model = str(body.get("model", ""))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' is a required property", "invalid_request_error")
        self.prompts.append(
            {
                "model": model,
                "messages": messages,
                "max_tokens": body.get("max_tokens"),
                "at": time.time(),
            }
        )
        faults = self.ctx.faults_for("llm")
        extra = faults.extra
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if model in (extra.get("stall_models") or []):
            await asyncio.sleep(faults.stall_s)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=599)
        failing = extra.get("fail_models") or {}
        if model in failing:
            status = int(failing[model])
            if status == 429:
                return _error(
                    429, "Rate limit reached for requests", "requests", "rate_limit_exceeded"
                )
            if status == 401:
                return _error(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
            return _error(
                status, "The server had an error while processing your request.", "server_error"
            )
        if model not in MODELS:
            return _error(
                404,
                f"The model `{model}` does not exist",
                "invalid_request_error",
                "model_not_found",
            )
        prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        seen = list(dict.fromkeys(_PLACEHOLDER.findall(prompt)))
        titles = prompt.count('"title"')
        answer = extra.get("answer") or (
            f"Summary by {model}: the digest lists {titles} finding(s). "
            f"Most active: {', '.join(seen[:12]) or 'nothing identifiable'}."
        )
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = int(extra.get("completion_tokens") or max(1, len(answer) // 4))
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(8)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_sandbox",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": answer},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


SERVICE = LlmService
