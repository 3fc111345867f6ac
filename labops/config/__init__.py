"""The labops config: one YAML file validated by pydantic."""

from labops.config.loader import config_path, load_config, parse_config
from labops.config.model import LabopsConfig
from labops.config.secrets import SecretRef, resolve_secret

__all__ = [
    "LabopsConfig",
    "SecretRef",
    "config_path",
    "load_config",
    "parse_config",
    "resolve_secret",
]
