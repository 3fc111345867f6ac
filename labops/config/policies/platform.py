"""Policy of the platform operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class PlatformPolicy(Strict):
    """What the platform flow does and its limits."""
