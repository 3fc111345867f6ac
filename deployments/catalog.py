"""Every labops flow, by the name operators use (CLI, deployments, MQTT topics)."""

from __future__ import annotations

import importlib
from typing import Any

FLOWS: dict[str, str] = {
    "backups": "flows.backups:backups",
    "restore-drill": "flows.restore_drill:restore_drill",
    "certificates": "flows.certificates:certificates",
    "patch-check": "flows.patching:patch_check",
    "patch-apply": "flows.patching:patch_apply",
    "security-digest": "flows.security_digest:security_digest",
    "doc-reconcile": "flows.doc_reconcile:doc_reconcile",
    "housekeeping": "flows.housekeeping:housekeeping",
}

# Work that changes the lab never overlaps itself: a second run is cancelled, not queued.
NO_OVERLAP: set[str] = {"backups", "patch-apply", "restore-drill", "housekeeping"}


def entrypoint(name: str) -> str:
    """``flows/backups.py:backups`` for ``backups`` (the form deployments store)."""
    module, func = FLOWS[name].split(":")
    return f"{module.replace('.', '/')}.py:{func}"


def load_flow(name: str) -> Any:
    """Import the flow object of ``name`` (imports are lazy: the CLI starts fast)."""
    if name not in FLOWS:
        known = ", ".join(FLOWS)
        raise KeyError(f"unknown flow {name!r} (known: {known})")
    module, func = FLOWS[name].split(":")
    return getattr(importlib.import_module(module), func)
