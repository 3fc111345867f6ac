"""Block for the LLM failover chain used to summarise digests (litellm Router)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.fields import SecretDict
from pydantic import BaseModel, Field, SecretStr

from blocks._base import reveal


class LlmProvider(BaseModel):
    """One model of the chain, in litellm naming (``openai/gpt-4o-mini``, ``ollama/llama3``)."""

    model: str = Field(..., description="litellm model name, provider/model.")
    api_base: str | None = Field(None, description="Base URL for self-hosted or proxied models.")


class LlmProviders(CredentialsBlock):
    """The models tried in order for summaries, with the budget of one summary.

    Example:
        ```python
        from blocks.llm import LlmProviders

        llm = LlmProviders.load("llm")
        router = llm.get_client()
        reply = router.completion(model=llm.primary, messages=[{"role": "user", "content": "hi"}])
        ```
    """

    _block_type_name = "LLM Providers"
    _description = "Ordered LLM failover chain (litellm) and the limits of one summary."
    _documentation_url = "https://docs.litellm.ai/docs/routing"  # type: ignore[assignment]
    _code_example = """
    ```python
    from blocks.llm import LlmProviders

    llm = LlmProviders.load("BLOCK_NAME")
    router = llm.get_client()
    ```
    """

    models: list[LlmProvider] = Field(..., min_length=1, description="Tried in this order.")
    # keys apart from the list: Prefect masks a SecretDict, not secrets inside list items
    api_keys: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="API key per model name, for the models that need one.",
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one model call.")
    max_input_tokens: int = Field(6000, gt=0, description="Prompt budget.")
    max_output_tokens: int = Field(800, gt=0, description="Answer budget.")
    max_cost_usd: float = Field(0.05, ge=0, description="Budget for one summary.")

    @property
    def primary(self) -> str:
        """The router's name of the first model; the others are its fallbacks."""
        return _alias(0)

    def router_config(self) -> dict[str, Any]:
        """Keyword arguments of ``litellm.Router``: one entry per model, ordered fallbacks."""
        model_list = []
        for i, entry in enumerate(self.models):
            params: dict[str, Any] = {"model": entry.model, "timeout": self.timeout_s}
            if entry.api_base:
                params["api_base"] = entry.api_base
            key = self.api_keys.get_secret_value().get(entry.model)
            if key:
                params["api_key"] = reveal(SecretStr(str(key)))
            model_list.append({"model_name": _alias(i), "litellm_params": params})
        fallbacks = [{_alias(0): [_alias(i) for i in range(1, len(self.models))]}]
        return {
            "model_list": model_list,
            "fallbacks": fallbacks if len(self.models) > 1 else [],
            "num_retries": 0,
            "timeout": self.timeout_s,
        }

    def get_client(self) -> Any:
        """A ``litellm.Router`` over the chain (``labops.llm`` is imported only here: it is slow).

        ``labops.llm.complete(block.router_config(), block.primary, ...)`` is the budgeted call.
        """
        from labops.llm import make_router

        return make_router(self.router_config())


def _alias(index: int) -> str:
    return f"labops-{index}"
