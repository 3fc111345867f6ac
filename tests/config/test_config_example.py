"""config.example.yaml validates and documents every key of the config models."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from labops.config import LabopsConfig, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
REGENERATE = "regenerate it: labops config example > config.example.yaml"


def _model(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            kind, inner = _model(arg)
            if inner is not None:
                return kind, inner
        return "scalar", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin in (list, dict) and get_args(annotation):
        kind, inner = _model(get_args(annotation)[-1])
        if kind == "model":
            return ("list" if origin is list else "dict"), inner
    return "scalar", None


def missing_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Key paths of ``model`` (recursively) that ``data`` does not show."""
    if not isinstance(data, dict):
        return [f"{path or '(top)'} (not a mapping)"]
    missing = []
    for name, field in model.model_fields.items():
        where = f"{path}{name}"
        if name not in data:
            missing.append(where)
            continue
        kind, inner = _model(field.annotation)
        value = data[name]
        if inner is None:
            continue
        if kind == "model":
            missing += missing_keys(inner, value, where + ".")
        elif kind == "list":
            if not value:
                missing.append(where + ".0 (no example item)")
            else:
                missing += missing_keys(inner, value[0], where + ".0.")
        elif kind == "dict":
            if not value:
                missing.append(where + ".* (no example entry)")
            else:
                first = next(iter(value.values()))
                missing += missing_keys(inner, first, where + ".*.")
    return missing


def test_example_validates() -> None:
    parse_config(yaml.safe_load(EXAMPLE.read_text()))


def test_example_shows_every_key() -> None:
    missing = missing_keys(LabopsConfig, yaml.safe_load(EXAMPLE.read_text()))
    assert not missing, f"config.example.yaml lacks {missing}; {REGENERATE}"
