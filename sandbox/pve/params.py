"""Parameter checks of the routes the sandbox serves, as PVE's JSONSchema validation does them.

``params.json`` holds, for every served ``METHOD /path``, the declared parameters (type, enum,
optional, and the key table of a property-string ``format`` such as ``net[n]``) extracted from
the PVE API schema (and ``permissions.json``, each route's ``permissions``, beside it); regenerate
them with
``python -m sandbox.pve.params /path/to/pve-api-schema.json`` (the fidelity test checks it is in
sync). A client sending a parameter real PVE rejects fails here the same way.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from sandbox.pve.propstring import FormatError, parse

PARAMS_FILE = Path(__file__).with_name("params.json")
_KEEP = ("type", "enum", "optional")
_FORMAT_KEEP = (
    "type",
    "enum",
    "optional",
    "minimum",
    "maximum",
    "default_key",
    "alias",
    "keyAlias",
)
# A numbered parameter (net0, mp3) is declared once as net[n]; the schema does not carry how many
# instances PVE registers, so any number is accepted here.
_NUMBERED = re.compile(r"^([a-z][a-z_]*?)(\d+)$")


def _trim(decl: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in decl.items() if k in _KEEP}
    fmt = decl.get("format")
    if isinstance(fmt, dict):
        out["format"] = {
            key: {k: v for k, v in sub.items() if k in _FORMAT_KEEP} for key, sub in fmt.items()
        }
    return out


def _specs(
    schema: dict[str, Any], routes: list[tuple[str, str]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``METHOD path``, its schema entry) of every served route the schema has."""
    for method, path in sorted(routes, key=lambda r: (r[1], r[0])):
        spec = schema.get(path, {}).get(method)
        if spec is not None:
            yield f"{method} {path}", spec


def extract(schema: dict[str, Any], routes: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in _specs(schema, routes):
        props = (spec.get("parameters") or {}).get("properties") or {}
        out[key] = {name: _trim(decl) for name, decl in props.items()}
    return out


def extract_permissions(schema: dict[str, Any], routes: list[tuple[str, str]]) -> dict[str, Any]:
    """``METHOD path`` -> the schema's ``permissions`` object (sandbox/pve/access.py)."""
    return {key: spec.get("permissions") for key, spec in _specs(schema, routes)}


def declaration(method: str, template: str, name: str) -> dict[str, Any] | None:
    """The schema declaration of parameter ``name`` (``net0`` finds ``net[n]``)."""
    decls = declared().get(f"{method} {template}") or {}
    decl = decls.get(name)
    if decl is None:
        m = _NUMBERED.match(name)
        decl = decls.get(f"{m.group(1)}[n]") if m else None
    return decl


@cache
def declared() -> dict[str, dict[str, dict[str, Any]]]:
    if not PARAMS_FILE.exists():
        return {}
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(PARAMS_FILE.read_text())
    return data


def check(
    method: str, template: str, path_params: dict[str, str], args: dict[str, Any]
) -> dict[str, str]:
    """Errors keyed by parameter, in PVE's words; converts booleans to 0/1 and integers in place.

    Routes absent from params.json are not checked (the file is generated, not hand-written).
    """
    decls = declared().get(f"{method} {template}")
    if decls is None:
        return {}
    errors: dict[str, str] = {}
    for name, value in list(args.items()):
        decl = declaration(method, template, name)
        if decl is None:
            if name not in path_params:
                errors[name] = (
                    "property is not defined in schema and the schema does not "
                    "allow additional properties"
                )
            continue
        kind = decl.get("type")
        if kind == "boolean":
            if isinstance(value, bool) or value in (0, 1) or value in ("0", "1"):
                args[name] = int(value)
            else:
                errors[name] = f"type check ('boolean') failed - got '{value}'"
        elif kind == "integer":
            try:
                if isinstance(value, bool):
                    raise ValueError
                args[name] = int(value)
            except (TypeError, ValueError):
                errors[name] = f"type check ('integer') failed - got '{value}'"
        elif kind == "number":
            try:
                args[name] = float(value)
            except (TypeError, ValueError):
                errors[name] = f"type check ('number') failed - got '{value}'"
        enum = decl.get("enum")
        if enum and name not in errors and str(args[name]) not in {str(e) for e in enum}:
            errors[name] = (
                f"value '{value}' does not have a value in the enumeration "
                f"'{', '.join(str(e) for e in enum)}'"
            )
        fmt = decl.get("format")
        if isinstance(fmt, dict) and name not in errors:
            try:
                parse(fmt, str(value), name)
            except FormatError as exc:
                errors[name] = f"invalid format - {exc.text()}"
    for name, decl in decls.items():
        if name.endswith("[n]"):
            continue
        if not decl.get("optional") and name not in args and name not in path_params:
            errors[name] = "property is missing and it is not optional"
    return errors


def main(argv: list[str]) -> int:
    from sandbox.pve import access
    from sandbox.pve.api import router

    schema = json.loads(Path(argv[0]).read_text())
    data = extract(schema, router.routes())
    PARAMS_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    perms = extract_permissions(schema, router.routes())
    access.PERMISSIONS_FILE.write_text(json.dumps(perms, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PARAMS_FILE} and {access.PERMISSIONS_FILE} ({len(data)} routes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
