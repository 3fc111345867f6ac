"""Policy of the digest operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class DigestPolicy(Strict):
    """What the digest flow does and its limits."""
