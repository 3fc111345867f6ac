"""Policy of the backups operation (owned by its flow)."""

from __future__ import annotations

from labops.config.systems import Strict


class BackupPolicy(Strict):
    """What the backups flow does and its limits."""
