"""Block for the LLM failover chain used to summarise digests (litellm Router)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.blocks.fields import SecretDict
from pydantic import Field, SecretStr

from blocks._base import SystemBlock, reveal
from labops.llm_settings import LlmSettings

if TYPE_CHECKING:
    from labops.llm import Budget


class LlmProviders(SystemBlock):
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

    settings: LlmSettings = Field(..., description="The models in order, and one summary's budget.")
    # keys apart from the list: Prefect masks a SecretDict, not secrets inside list items
    api_keys: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="API key per model name, for the models that need one.",
    )

    @property
    def primary(self) -> str:
        """The router's name of the first model; the others are its fallbacks."""
        return _alias(0)

    def budget(self) -> Budget:
        """The limits of one LLM call (time, tokens, cost), from the settings."""
        from labops.llm import Budget

        s = self.settings
        return Budget(
            timeout_s=s.timeout_s,
            max_input_tokens=s.max_input_tokens,
            max_output_tokens=s.max_output_tokens,
            max_cost_usd=s.max_cost_usd,
        )

    def router_config(self) -> dict[str, Any]:
        """Keyword arguments of ``litellm.Router``: one entry per model, ordered fallbacks."""
        model_list = []
        models, timeout_s = self.settings.models, self.settings.timeout_s
        for i, entry in enumerate(models):
            params: dict[str, Any] = {"model": entry.model, "timeout": timeout_s}
            if entry.api_base:
                params["api_base"] = str(entry.api_base)
            key = self.api_keys.get_secret_value().get(entry.model)
            if key:
                params["api_key"] = reveal(SecretStr(str(key)))
            model_list.append({"model_name": _alias(i), "litellm_params": params})
        fallbacks = [{_alias(0): [_alias(i) for i in range(1, len(models))]}]
        return {
            "model_list": model_list,
            "fallbacks": fallbacks if len(models) > 1 else [],
            "num_retries": 0,
            "timeout": timeout_s,
        }

    def get_client(self) -> Any:
        """A ``litellm.Router`` over the chain (``labops.llm`` is imported only here: it is slow).

        ``labops.llm.complete(block.router_config(), block.primary, ...)`` is the budgeted call.
        """
        from labops.llm import make_router

        return make_router(self.router_config())


def _alias(index: int) -> str:
    return f"labops-{index}"
