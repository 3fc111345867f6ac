"""Sandbox services beyond PVE/PBS/fleet: every module here exposing ``SERVICE`` is started by the
runner. Helpers for writing the files a service's config fragment refers to live here too.

Layout of the sandbox directory ``DIR``: ``DIR/ca.pem`` (the CA root clients trust),
``DIR/secrets/<name>`` (secret files, mode 0600, referenced as ``file:...``), ``DIR/state/``
(``ctx.state_dir``: private files of services), ``DIR/labops.yaml``, ``DIR/ready``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.service import Context


def sandbox_dir(ctx: Context) -> Path:
    return ctx.state_dir.parent


def ca_bundle_path(ctx: Context) -> Path:
    """Where the runner writes the CA root (``tls.ca_bundle`` in config fragments)."""
    return sandbox_dir(ctx) / "ca.pem"


def write_secret(ctx: Context, name: str, value: str) -> str:
    """Write ``DIR/secrets/<name>`` (0600) and return the ``file:`` reference for the config."""
    secrets = sandbox_dir(ctx) / "secrets"
    secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    path.chmod(0o600)
    return f"file:{path}"
