"""Reading the config file: YAML in, a validated LabopsConfig out, or one line per problem."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from labops.config.model import LabopsConfig
from labops.config.secrets import is_secret_field, resolve_secret
from labops.errors import ConfigError, SecretError

M = TypeVar("M", bound=BaseModel)

PATTERN_HINTS = {r"^[^@!]+@[^@!]+![A-Za-z0-9_.-]+$": "an API token id USER@REALM!TOKENID"}
"""Readable names of the regular expressions config fields must match."""

DEFAULT_PATHS = (Path("labops.yaml"), Path(".labops/sandbox/labops.yaml"))

# libyaml's safe loader when PyYAML was built with it: the pure-Python one takes ~50 ms for a
# config listing a hundred endpoints, paid by every flow run
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config to use: ``--config``, else ``LABOPS_CONFIG``, else ./labops.yaml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LABOPS_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_PATHS:
        if candidate.exists():
            return candidate
    raise ConfigError("no config file: pass --config FILE or set LABOPS_CONFIG")


def load_config(
    path: str | os.PathLike[str] | None = None, *, check_secrets: bool = True
) -> LabopsConfig:
    """Load and validate the config; with ``check_secrets`` every secret reference must resolve."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}:{where}: not valid YAML: {problem}") from None
    config = parse_config(raw if raw is not None else {}, source=str(file))
    config = rebase_paths(config, file.resolve().parent)
    if check_secrets:
        problems = []
        for where, ref in secret_refs(config):
            try:
                resolve_secret(ref, where)
            except SecretError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
    return config


def parse_config(raw: Any, source: str = "config") -> LabopsConfig:
    """Validate already-parsed data; errors name the key path and what was expected."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        return LabopsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def _describe(err: Any) -> str:
    path = ".".join(_key(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; see config.example.yaml)"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith(("a secret must be a reference", "a password in a URL must be")):
        return f"{path}: {msg}"  # never echo what may be the secret itself
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        msg = f"expected {PATTERN_HINTS[pattern]}" if pattern in PATTERN_HINTS else msg
    shown = _short(got)
    return f"{path}: {msg} (got {shown})" if shown is not None else f"{path}: {msg}"


def _key(part: Any) -> str:
    text = str(part)
    # a key with a line break or other control character would break the one-line promise
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _short(value: Any) -> str | None:
    if isinstance(value, dict | list):
        return None
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rebase_paths(model: M, base: Path) -> M:
    """Relative paths (and ``file:`` secret references) taken against ``base``, the config's dir.

    A config works the same whatever the working directory of the flow run or worker is.
    """
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        new = _rebase_value(value, base, _is_secret_field(field))
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _rebase_value(value: Any, base: Path, secret: bool) -> Any:
    if isinstance(value, Path):
        try:
            expanded = value.expanduser()
        except RuntimeError:  # "~user" naming no user of this machine
            raise ConfigError(f"{value}: cannot expand '~' (no such user)") from None
        return expanded if expanded.is_absolute() else base / expanded
    if isinstance(value, BaseModel):
        return rebase_paths(value, base)
    if secret and isinstance(value, str) and value.startswith("file:"):
        try:
            target = Path(value.removeprefix("file:")).expanduser()
        except RuntimeError:
            return value  # resolving the reference then says what is wrong with it
        return value if target.is_absolute() else f"file:{base / target}"
    if isinstance(value, list):
        items = [_rebase_value(v, base, secret) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        mapped = {k: _rebase_value(v, base, secret) for k, v in value.items()}
        return mapped if any(mapped[k] is not value[k] for k in value) else value
    return value


def secret_refs(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (key path, reference) of a SecretRef field set in ``model``.

    A section naming a saved block is skipped: its secrets live in the block.
    """
    if getattr(model, "block", None):
        return
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from secret_refs(value, where + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from secret_refs(item, f"{where}.{i}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from secret_refs(item, f"{where}.{key}.")
        elif isinstance(value, str) and _is_secret_field(field):
            yield where, value


def _is_secret_field(field: Any) -> bool:
    return is_secret_field(field)
