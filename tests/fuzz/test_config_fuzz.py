"""Fuzz the config loader: whatever the file holds, the answer is a config or a ConfigError whose
problems are single, short lines; never another exception, never a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from labops.config import LabopsConfig
from labops.config.loader import load_config, parse_config
from labops.errors import ConfigError
from tests.fuzz.strategies import FUZZ, json_like, mutated, paths, text

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [
    yaml.safe_load((ROOT / "config.example.yaml").read_text()),
    yaml.safe_load((ROOT / "tests/data/config/all_systems.yaml").read_text()),
    yaml.safe_load((ROOT / "tests/data/config/good.yaml").read_text()),
]
KEYS = sorted({str(p[-1]) for seed in SEEDS for p in paths(seed) if p and isinstance(p[-1], str)})

pytestmark = pytest.mark.timeout(120)


def check_problems(exc: ConfigError) -> None:
    assert exc.problems, "a ConfigError without a problem"
    for problem in exc.problems:
        assert isinstance(problem, str) and problem.strip(), exc.problems
        assert "\n" not in problem and "\r" not in problem, f"multi-line problem: {problem!r}"
        assert len(problem) <= 400, f"problem too long to read: {problem[:120]!r}..."


def parse_or_config_error(raw: Any) -> None:
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        check_problems(exc)
    else:
        assert isinstance(config, LabopsConfig)


def test_seeds_are_valid() -> None:
    """The seeds themselves parse: the mutations below start from a valid config."""
    for seed in SEEDS:
        assert isinstance(parse_config(seed), LabopsConfig)


@FUZZ
@given(st.one_of(json_like, st.dictionaries(st.sampled_from(KEYS), json_like, max_size=6)))
def test_parse_config_random_trees(raw: Any) -> None:
    parse_or_config_error(raw)


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(lambda seed: mutated(seed, KEYS)))
def test_parse_config_mutated_valid_configs(raw: Any) -> None:
    parse_or_config_error(raw)


def _load_text(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "labops.yaml"
        if isinstance(content, bytes):
            file.write_bytes(content)
        else:
            file.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_config(file, check_secrets=True)
        except ConfigError as exc:
            check_problems(exc)
        else:
            assert isinstance(config, LabopsConfig)


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(lambda seed: mutated(seed, KEYS)))
def test_load_config_mutated_yaml_files(raw: Any) -> None:
    try:
        content = yaml.safe_dump(raw, allow_unicode=True)
    except yaml.YAMLError:
        return
    _load_text(content)


@FUZZ
@given(
    st.sampled_from([(ROOT / "tests/data/config/good.yaml").read_text()]),
    st.integers(min_value=0, max_value=4000),
    st.one_of(text, st.sampled_from([":", "- ", "\t", "{", "&a", "*a", "!!python/object:x", "%"])),
)
def test_load_config_damaged_text(original: str, at: int, insert: str) -> None:
    at = min(at, len(original))
    _load_text(original[:at] + insert + original[at:])


@FUZZ
@given(st.binary(max_size=200))
def test_load_config_arbitrary_bytes(content: bytes) -> None:
    _load_text(content)


@pytest.mark.parametrize(
    "raw",
    [
        {"lab\nname": 1},  # a key with a line break must not break the one-line promise
        {
            "systems": {
                "proxmox": {
                    "url": "https://x",
                    "token_id": "a@b!c",
                    "token_secret": "file:/tmp/\x00nul",
                }
            }
        },
        {"lab": {"state_dir": "~no_such_user_labops/state"}},
        {
            "systems": {
                "telegram": {"url": "http://x", "bot_token": "file:/tmp/a\rb", "chat_id": "1"}
            }
        },
        {
            "systems": {
                "telegram": {
                    "url": "http://x",
                    "bot_token": "file:~nobody_labops/t",
                    "chat_id": "1",
                }
            }
        },
        {"systems": {"telegram": {"url": "http://x", "bot_token": "env:A\n", "chat_id": "1"}}},
    ],
)
def test_known_awkward_inputs(raw: dict[str, Any], tmp_path: Path) -> None:
    """Inputs the fuzzer found once (kept so they stay fixed)."""
    parse_or_config_error(raw)
    _load_text(yaml.safe_dump(raw))
