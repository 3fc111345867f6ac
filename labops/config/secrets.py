"""Secret references: ``env:NAME``, ``file:PATH`` or ``block:NAME`` (a Prefect Secret block).

Secrets never sit in the config file in clear. They are resolved at run time into ``SecretStr``,
and every resolved value is registered with :mod:`labops.redact` so that no log line carries it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, cast, get_args

from pydantic import AfterValidator, SecretStr

from labops.errors import SecretError
from labops.redact import register_secret

_REF = re.compile(r"^(env|file|block):([^\x00-\x1f\x7f]+)\Z")  # no control characters


def _check_ref(value: str) -> str:
    if not _REF.match(value):
        raise ValueError(
            "a secret must be a reference: env:VARIABLE, file:/path or block:secret-block-name "
            "(never the secret itself)"
        )
    return value


SecretRef = Annotated[str, AfterValidator(_check_ref)]
"""A config field that holds a reference to a secret, never the secret."""

HELD_BY_BLOCK = "env:LABOPS_SECRET_HELD_BY_BLOCK"
"""The reference a secret key holds when its system's secret lives in a saved block instead."""


def is_secret_field(field: Any) -> bool:
    """Whether a pydantic field holds a :data:`SecretRef` (or an optional one)."""
    if any(getattr(m, "func", None) is _check_ref for m in getattr(field, "metadata", ())):
        return True
    return any(  # ``SecretRef | None``: the reference's metadata sits on the union's member
        getattr(m, "func", None) is _check_ref
        for arg in get_args(getattr(field, "annotation", None))
        for m in getattr(arg, "__metadata__", ())
    )


def resolve_secret(ref: str, where: str = "secret") -> SecretStr:
    """Resolve ``ref`` now; ``where`` is the key path used in the error message."""
    match = _REF.match(ref)
    if not match:
        raise SecretError(f"{where}: not a secret reference (env:, file: or block:)")
    kind, target = match.groups()
    if kind == "env":
        value = os.environ.get(target)
        if value is None or value == "":
            raise SecretError(f"{where}: environment variable {target} is not set")
    elif kind == "file":
        path = Path(target)
        try:
            path = path.expanduser()
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{where}: cannot read secret file {path}: {exc.strerror}") from None
        except (ValueError, RuntimeError) as exc:  # NUL in the path, ~user unknown, not UTF-8
            raise SecretError(f"{where}: cannot read secret file {path!r}: {exc}") from None
        if not value:
            raise SecretError(f"{where}: secret file {path} is empty")
    else:
        value = _load_secret_block(target, where)
    register_secret(value)
    return SecretStr(value)


def _load_secret_block(name: str, where: str) -> str:
    from prefect.blocks.system import Secret

    try:
        block = cast(Secret, Secret.load(name))
    except (ValueError, RuntimeError) as exc:
        raise SecretError(f"{where}: Prefect Secret block {name!r} not found ({exc})") from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise SecretError(f"{where}: Prefect Secret block {name!r} is empty or not a string")
    return value
