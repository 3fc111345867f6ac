"""Policy of the docs operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class DocsPolicy(Strict):
    """What the docs flow does and its limits."""
