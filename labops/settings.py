"""The base of every settings model: what a client needs to reach a system, never a secret.

A system's settings are declared once, in a ``*_settings`` module beside its client
(``labops/ssh_settings.py`` beside ``labops/ssh.py``...). The config section of a system adds a
secret *reference* to them (``labops.config.systems``); its block adds the secret itself
(``blocks/``); the client takes the settings plus the resolved secret.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors, not silently ignored; values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
