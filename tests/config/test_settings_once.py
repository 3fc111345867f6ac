"""Each system's settings are declared once: the config section inherits them, the block nests
them, the one builder carries every field across; a block's secret is a SecretStr nobody sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from blocks._base import SystemBlock
from blocks.factory import SYSTEMS, block_for, system_config
from blocks.proxmox import ProxmoxCredentials
from labops.config import load_config, parse_config
from labops.config.systems import Section
from labops.errors import ConfigError
from labops.settings import Strict
from tests.fixtures.all_systems import SECRETS

DATA = Path(__file__).parents[1] / "data" / "config"


@pytest.fixture
def config(secrets_env: dict[str, str]) -> Any:
    return load_config(DATA / "all_systems.yaml")


def _section_type(name: str) -> type[BaseModel]:
    from labops.config.systems import Systems, WazuhSystem

    path = SYSTEMS[name].path
    owner: type[BaseModel] = WazuhSystem if len(path) == 2 else Systems
    annotation = owner.model_fields[path[-1]].annotation
    (section,) = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return section  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_the_section_is_the_blocks_settings_plus_secret_references(name: str) -> None:
    block = SYSTEMS[name].block
    settings = block.settings_type()
    section = _section_type(name)
    assert issubclass(settings, Strict) and issubclass(section, settings)
    assert settings.__module__.endswith("_settings") or settings.__module__.endswith(".settings")
    # what a section adds to its settings: the saved-block name and secret references, no more
    added = set(section.model_fields) - set(settings.model_fields)
    expected = set(block.secret_names()) if SYSTEMS[name].secrets is None else set()
    if issubclass(section, Section):
        expected.add("block")
    assert added == expected, name
    # no secret among the settings: every secret of the block is a SecretStr field beside them
    for field in settings.model_fields.values():
        assert "Secret" not in str(field.annotation), name


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_the_builder_carries_every_setting_across(name: str, config: Any) -> None:
    section = system_config(config, name)
    block = block_for(config, name)
    assert isinstance(block, SYSTEMS[name].block)
    settings_type = type(block).settings_type()
    assert type(block.settings) is settings_type  # the settings model itself, not the section
    for field in settings_type.model_fields:
        want, got = getattr(section, field), getattr(block.settings, field)
        if isinstance(want, list):  # the LLM chain: each model less its key reference
            assert [m.model for m in want] == [m.model for m in got]
            assert [m.api_base for m in want] == [m.api_base for m in got]
        else:
            assert got == want, (name, field)
    for secret in type(block).secret_names():
        value = getattr(block, secret)
        assert value is None or "Secret" in type(value).__name__, (name, secret)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_a_blocks_secret_shows_in_neither_repr_nor_dump(name: str, config: Any) -> None:
    block = block_for(config, name)
    shown = repr(block) + str(block.model_dump()) + block.model_dump_json()
    for value in SECRETS.values():
        assert value not in shown, name


def test_every_secret_is_a_secretstr() -> None:
    for name, system in SYSTEMS.items():
        for secret in system.block.secret_names():
            annotation = str(system.block.model_fields[secret].annotation)
            assert "SecretStr" in annotation or "SecretDict" in annotation, (name, secret)


def test_a_block_saved_flat_still_loads_nested() -> None:
    block = ProxmoxCredentials.model_validate(
        {"url": "https://pve:8006", "token_id": "a@pve!b", "token_secret": "s-1", "nodes": {}}
    )
    assert block.settings.base_url == "https://pve:8006"
    assert block.token_secret == SecretStr("s-1")
    assert block.settings.token_id == "a@pve!b"  # a setting read straight off the block


def test_with_settings_changes_only_the_settings() -> None:
    block = ProxmoxCredentials.model_validate(
        {"settings": {"url": "https://pve:8006", "token_id": "a@pve!b"}, "token_secret": "s-1"}
    )
    quick = block.with_settings(retry=block.settings.retry.model_copy(update={"attempts": 1}))
    assert quick.settings.retry.attempts == 1 and block.settings.retry.attempts == 4
    assert quick.token_secret == block.token_secret


def test_missing_required_pieces_name_their_key() -> None:
    no_url = parse_config({"systems": {"loki": {}}})
    with pytest.raises(ConfigError, match=r"systems\.loki\.url: required"):
        block_for(no_url, "loki")
    no_user = parse_config({"systems": {"wazuh": {"api": {"url": "https://w:55000"}}}})
    with pytest.raises(ConfigError, match=r"systems\.wazuh\.api\.username: required"):
        block_for(no_user, "wazuh_api")


def test_every_block_is_a_system_block() -> None:
    assert all(issubclass(s.block, SystemBlock) for s in SYSTEMS.values())


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_a_setting_changed_at_the_top_level_is_refused_not_dropped(name: str, config: Any) -> None:
    # model_copy(update={"timeout_s": 1}) on a nested block would change nothing, silently
    block = block_for(config, name)
    field = next(iter(block.settings_type().model_fields))
    with pytest.raises(TypeError, match=field):
        block.model_copy(update={field: getattr(block.settings, field)})
