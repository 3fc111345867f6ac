"""PVE property strings (``name=eth0,bridge=vmbr0,...``) as pve-common's JSONSchema.pm parses,
checks and prints them: a bare value is the format's ``default_key``; an ``alias`` key with a
``keyAlias`` (QEMU's ``virtio=<mac>``) sets both; booleans accept yes/no/on/off/true/false; the
printed form puts the default key first, then the required keys, then the rest, sorted.

Formats come from params.json (the ``format`` objects of the schema, trimmed by params.extract).
"""

from __future__ import annotations

import re
from typing import Any

_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}
_INT = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class FormatError(Exception):
    """The value is not of the format; ``errors`` are keyed ``<param>.<key>`` like PVE's."""

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}

    def text(self) -> str:
        """PVE's wording: the message, then one ``key: error`` line per error."""
        return self.message + "".join(f"{k}: {v}\n" for k, v in sorted(self.errors.items()))


def _default_key(fmt: dict[str, Any]) -> str | None:
    return next((k for k, d in fmt.items() if d.get("default_key")), None)


def parse(fmt: dict[str, Any], value: str, path: str) -> dict[str, str]:
    """The parts of ``value``; raises :class:`FormatError` as parse_property_string does."""
    res: dict[str, str] = {}
    default = _default_key(fmt)
    for part in str(value).split(","):
        if not part.strip():
            continue
        m = re.match(r"^([^=]+)=(.+)$", part)
        if m is None:
            if default is None:
                raise FormatError("value without key, but schema does not define a default key\n")
            if default in res:
                raise FormatError(f"duplicate key in comma-separated list property: {default}\n")
            res[default] = part
            continue
        key, val = m.group(1), m.group(2)
        if key in res:
            raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
        decl = fmt.get(key)
        if decl is not None and decl.get("alias"):
            key_alias = decl.get("keyAlias")
            if key_alias:
                if key_alias in res:
                    raise FormatError(f"key alias '{key_alias}' is already defined\n")
                res[key_alias] = key
            key = decl["alias"]
            decl = fmt.get(key)
        if decl is None:
            raise FormatError(f"invalid key in comma-separated list property: {key}\n")
        if decl.get("type") == "boolean" and val.lower() in _TRUE | _FALSE:
            val = "1" if val.lower() in _TRUE else "0"
        res[key] = val
    errors = {}
    for key, decl in fmt.items():
        if decl.get("alias"):
            continue
        where = f"{path}.{key}"
        if key not in res:
            if not decl.get("optional"):
                errors[where] = "property is missing and it is not optional"
            continue
        problem = _check(res[key], decl)
        if problem:
            errors[where] = problem
    if errors:
        raise FormatError("format error\n", errors)
    return res


def _check(val: str, decl: dict[str, Any]) -> str | None:
    kind = decl.get("type")
    if kind == "boolean" and val not in ("0", "1"):
        return f"type check ('boolean') failed - got '{val}'"
    if kind in ("integer", "number"):
        if not (_INT if kind == "integer" else _NUMBER).match(val):
            return f"type check ('{kind}') failed - got '{val}'"
        num = float(val)
        if "minimum" in decl and num < decl["minimum"]:
            return f"value must have a minimum value of {decl['minimum']}"
        if "maximum" in decl and num > decl["maximum"]:
            return f"value must have a maximum value of {decl['maximum']}"
    enum = decl.get("enum")
    if enum and val not in {str(e) for e in enum}:
        return f"value '{val}' does not have a value in the enumeration '{', '.join(enum)}'"
    return None


def render(fmt: dict[str, Any], data: dict[str, str]) -> str:
    """``data`` printed as print_property_string does."""
    default = _default_key(fmt)
    combine = {
        d["keyAlias"]: d["alias"] for d in fmt.values() if d.get("alias") and d.get("keyAlias")
    }
    out: list[str] = []
    done: set[str] = set()

    def add(key: str, bare: bool = False) -> None:
        if key in done or key not in data:
            return
        done.add(key)
        other = combine.get(key)
        if other is not None and other in data:
            out.append(f"{data[key]}={data[other]}")
            done.add(other)
            return
        out.append(data[key] if bare else f"{key}={data[key]}")

    if default is not None:
        add(default, bare=True)
    for key in sorted(data):
        if key in fmt and not fmt[key].get("optional"):
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(out)
