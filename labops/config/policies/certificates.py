"""Policy of the certificates operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class CertificatePolicy(Strict):
    """What the certificates flow does and its limits."""
