"""Helpers shared by the patch flow tests: a config derived from the sandbox's, fleet control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def derived_config(sandbox: Any, directory: Path, **patching: Any) -> str:
    """The sandbox's config with a ``patching`` section and a private state dir."""
    cfg = yaml.safe_load(Path(sandbox.config_path).read_text())
    cfg["patching"] = patching
    cfg["lab"]["state_dir"] = str(directory / "state")
    path = directory / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def report_of(state: Any) -> Any:
    """The PatchReport a flow returned (directly, or carried by its Failed state)."""
    from labops.models.patching import PatchReport

    if isinstance(state, PatchReport):
        return state
    value = state.result(raise_on_failure=False) if hasattr(state, "result") else state
    if isinstance(value, PatchReport):
        return value
    data = getattr(state, "data", None)
    if isinstance(data, PatchReport):
        return data
    raise AssertionError(f"no PatchReport in {state!r}")
