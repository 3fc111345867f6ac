"""Settings of the LLM failover chain (``labops.llm``): models in order and one summary's budget.

API keys are not here: the config holds a reference per model, a block holds the keys. Kept
apart from ``labops.llm`` so that loading the config does not import litellm (slow).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import AnyHttpUrl, Field

from labops.settings import Strict


class LlmModelSettings(Strict):
    """One model in the chain (litellm names, e.g. openai/gpt-4o-mini)."""

    model: str = Field(..., description="litellm model name, provider/model.")
    api_base: AnyHttpUrl | None = Field(
        None, description="Base URL for self-hosted or proxied models (Ollama, LiteLLM proxy)."
    )


class LlmSettings(Strict):
    """The optional LLM failover chain for summaries (never sees secrets or raw logs)."""

    # Sequence, not list: the config section narrows the item type to one with a key reference
    models: Sequence[LlmModelSettings] = Field(..., min_length=1, description="Tried in order.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one model call.")
    max_input_tokens: int = Field(6000, gt=0, description="Prompt budget in tokens.")
    max_output_tokens: int = Field(800, gt=0, description="Answer budget in tokens.")
    max_cost_usd: float = Field(0.05, ge=0, description="Budget for one summary.")
