"""LabContext: the validated config plus a block for every configured system.

A flow's first line is ``ctx = LabContext.load(config)``. Blocks come from the config's inline
values (secrets resolved at run time) or, when a system names ``block: NAME``, from the saved block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from labops.config import LabopsConfig, load_config
from labops.redact import install_log_filter
from labops.state import StateStore

if TYPE_CHECKING:
    from labops.notify import Notifier


@dataclass
class LabContext:
    config: LabopsConfig
    config_file: str | None = None
    _cache: dict[str, object] = field(default_factory=dict)

    @classmethod
    def load(cls, config: str | None = None) -> LabContext:
        """Validate the config (secrets included) and prepare blocks lazily."""
        install_log_filter()
        cfg = load_config(config)
        return cls(config=cfg, config_file=config)

    @cached_property
    def state(self) -> StateStore:
        return StateStore(self.config.lab.state_dir)

    def notifier(self) -> Notifier:
        """Every configured channel (Telegram, MQTT) behind one MultiNotifier."""
        from blocks.factory import notifier_for

        return notifier_for(self.config)

    def skipped(self, *systems: str) -> list[str]:
        """'<system>: not configured' for each named system that the config leaves out."""
        out = []
        for name in systems:
            if getattr(self.config.systems, name) is None:
                out.append(f"{name}: not configured")
        return out
