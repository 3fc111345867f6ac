"""Config validation: a good file, and bad files each giving one clear line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labops.config import LabopsConfig, load_config, parse_config
from labops.errors import ConfigError

DATA = Path(__file__).parents[1] / "data" / "config"
BAD = sorted(DATA.glob("bad_*.yaml"))
LABOPS = [sys.executable, "-m", "cli.main"]


def expectations(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect:").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


@pytest.fixture(autouse=True)
def pve_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABOPS_TEST_PVE_SECRET", "pve-secret-value-5678")
    monkeypatch.delenv("LABOPS_TEST_SURELY_UNSET", raising=False)


def test_good_config_loads_with_paths_relative_to_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # paths must not depend on the working directory
    config = load_config(DATA / "good.yaml")
    assert config.lab.name == "testlab"
    assert config.lab.state_dir == DATA / "state"
    assert config.systems.ssh is not None
    assert config.systems.ssh.key_file == DATA / "keys" / "id_ed25519"
    assert config.systems.proxmox is not None
    assert config.systems.proxmox.tls.ca_bundle == DATA / "certs" / "root.pem"
    assert config.systems.pbs is not None
    assert config.systems.pbs.token_secret == f"file:{DATA / 'secrets' / 'pbs-token'}"
    assert config.systems.traefik is not None and config.systems.traefik.block == "traefik-prod"


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABOPS_CONFIG", str(DATA / "good.yaml"))
    assert load_config().lab.name == "testlab"


def test_there_are_at_least_ten_bad_files() -> None:
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_names_each_problem_on_one_line(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    for line in problems:
        assert "\n" not in line and line.strip() == line
        assert "Traceback" not in line
    for want in expected:
        assert any(want in line for line in problems), f"{want!r} not in {problems}"
    assert len(problems) == len(expected), problems


def test_secret_in_clear_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DATA / "bad_secret_in_clear.yaml")
    assert "5f2c8b1e" not in str(caught.value)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("value-1234")
    secret.chmod(0)
    config = tmp_path / "labops.yaml"
    config.write_text(
        "systems:\n  pbs:\n    url: https://127.0.0.1:8007\n    token_id: a@pbs!b\n"
        "    token_secret: file:token\n"
    )
    if os.access(secret, os.R_OK):  # root reads anything: make it a directory instead
        secret.chmod(0o600)
        secret.unlink()
        secret.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.problems[0].startswith("systems.pbs.token_secret: cannot read secret file")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read the config file" in caught.value.problems[0]


def test_empty_file_is_the_default_config() -> None:
    assert parse_config({}) == LabopsConfig()


@pytest.mark.parametrize(
    "name", ["bad_unknown_key", "bad_yaml_syntax", "bad_missing_env", "bad_top_level"]
)
def test_cli_prints_problems_without_traceback(name: str) -> None:
    path = DATA / f"{name}.yaml"
    proc = subprocess.run(
        [*LABOPS, "config", "check", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LABOPS_TEST_PVE_SECRET": "x"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("config error: ")]
    for want in expectations(path):
        assert any(want in line for line in lines), (want, proc.stderr)


def test_cli_accepts_the_good_file_offline() -> None:
    proc = subprocess.run(
        [*LABOPS, "config", "check", "--offline", "--config", str(DATA / "good.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LABOPS_TEST_PVE_SECRET": "x"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stderr
