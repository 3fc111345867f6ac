"""Policy of the patching operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class PatchPolicy(Strict):
    """What the patching flow does and its limits."""
