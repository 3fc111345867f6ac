"""Blocks: registration with a real Prefect server, save/load round trips, secrets masked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import SecretStr

from blocks._base import HttpEndpointBlock
from blocks.context import LabContext
from blocks.factory import BLOCK_TYPES, block_for, configured_systems, http_block
from blocks.llm import LlmProviders
from labops.config import load_config, parse_config
from labops.errors import ConfigError
from labops.http import HttpClient
from labops.http_settings import TraefikSettings
from labops.redact import redact

DATA = Path(__file__).parents[1] / "data" / "config"
BLOCK_MODULES = sorted(
    f"blocks.{p.stem}"
    for p in (Path(__file__).parents[2] / "blocks").glob("*.py")
    if not p.stem.startswith("_") and p.stem not in ("context", "factory")
)


def _secret_values(block: Block) -> list[str]:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, SecretDict):
            found.extend(str(v) for v in value.get_secret_value().values())
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif hasattr(value, "model_fields"):
            for name in type(value).model_fields:
                walk(getattr(value, name))

    walk(block)
    return found


def test_every_block_module_registers_with_the_cli(prefect_server: Any) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    prefect = str(Path(sys.executable).with_name("prefect"))
    # One after the other, as an operator runs them: modules that import another's block
    # (blocks.delivery imports the Telegram and MQTT blocks) register it too, and two
    # registrations of one block type at the same instant race in Prefect (409 Conflict).
    for module in BLOCK_MODULES:
        done = subprocess.run(
            [prefect, "block", "register", "-m", module],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=180,
        )
        assert done.returncode == 0, f"{module}: {done.stdout}"

    async def slugs() -> set[str]:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            types = await client.read_block_types()
        return {t.slug for t in types}

    registered = asyncio.run(slugs())
    missing = {cls.get_block_type_slug() for cls in BLOCK_TYPES.values()} - registered
    assert not missing


def test_factory_builds_every_system_with_resolved_secrets(secrets_env: dict[str, str]) -> None:
    config = load_config(DATA / "all_systems.yaml")
    assert configured_systems(config) == list(BLOCK_TYPES)
    for system, cls in BLOCK_TYPES.items():
        block = block_for(config, system)
        assert isinstance(block, cls), system
        for value in _secret_values(block):
            assert value in secrets_env.values()
            assert value not in repr(block), f"{system} shows a secret in repr"
            assert redact(f"x {value} y") == "x *** y"  # registered with the redactor


def test_blocks_round_trip_with_secrets_masked_on_the_server(
    prefect_server: Any, secrets_env: dict[str, str]
) -> None:
    config = load_config(DATA / "all_systems.yaml")
    from prefect.client.orchestration import get_client

    for system in BLOCK_TYPES:
        block = block_for(config, system)
        name = f"test-{system.replace('_', '-')}"
        block.save(name, overwrite=True)
        loaded = type(block).load(name)
        assert isinstance(loaded, Block)
        assert loaded.model_dump(exclude={"block_type_slug"}) == block.model_dump(
            exclude={"block_type_slug"}
        ), system
        assert _secret_values(loaded) == _secret_values(block)

        async def stored(slug: str, doc: str) -> dict[str, Any]:
            async with get_client() as client:
                document = await client.read_block_document_by_name(
                    doc, block_type_slug=slug, include_secrets=False
                )
            return dict(document.data)

        data = str(asyncio.run(stored(type(block).get_block_type_slug(), name)))
        for value in _secret_values(block):
            assert value not in data, f"{system}: secret readable through the API"


def test_config_naming_a_saved_block_loads_it(
    prefect_server: Any, secrets_env: dict[str, str], tmp_path: Path
) -> None:
    from blocks.edge import TraefikApi

    TraefikApi(settings=TraefikSettings(url="http://127.0.0.1:9999", username="saved-user")).save(
        "traefik-saved", overwrite=True
    )
    config = parse_config({"systems": {"traefik": {"block": "traefik-saved"}}})
    block = http_block(config, "traefik")
    assert isinstance(block, TraefikApi)
    assert block.settings.base_url == "http://127.0.0.1:9999"
    assert block.settings.username == "saved-user"

    from blocks.proxmox import ProxmoxCredentials

    # the layout blocks were saved with before the settings were nested still loads
    flat = {"url": "https://127.0.0.1:8006", "token_id": "ops@pve!saved"}
    ProxmoxCredentials.model_validate({**flat, "token_secret": "saved-0013"}).save(
        "pve-saved", overwrite=True
    )
    path = tmp_path / "labops.yaml"
    path.write_text("systems:\n  proxmox:\n    block: pve-saved\n  ssh:\n    block: ssh-x\n")
    only_blocks = load_config(path)  # no token keys needed, no secret resolved
    pve = LabContext(config=only_blocks).pve_block()
    assert pve.settings.token_id == "ops@pve!saved"
    assert pve.token_secret.get_secret_value() == "saved-0013"
    with pytest.raises(ConfigError, match=r"systems\.ssh\.block: no saved SSH Credentials"):
        LabContext(config=only_blocks).ssh_block()

    missing = parse_config({"systems": {"traefik": {"block": "no-such-block"}}})
    with pytest.raises(ConfigError, match=r"systems\.traefik\.block: no saved Traefik API block"):
        http_block(missing, "traefik")


def test_context_accessors(secrets_env: dict[str, str]) -> None:
    ctx = LabContext(config=load_config(DATA / "all_systems.yaml"))
    assert isinstance(ctx.block("step-ca"), HttpEndpointBlock)
    assert ctx.block("wazuh.api") is ctx.block("wazuh_api")  # built once
    client = ctx.http("victoriametrics")
    assert isinstance(client, HttpClient)
    client.close()
    assert isinstance(ctx.block("llm"), LlmProviders)
    router = ctx.block("llm").router_config()  # type: ignore[attr-defined]
    assert router["fallbacks"] == [{"labops-0": ["labops-1"]}]
    assert ctx.skipped("proxmox", "wazuh") == []

    empty = LabContext(config=parse_config({}))
    for accessor, key in [
        (empty.pve, "systems.proxmox"),
        (empty.pbs, "systems.pbs"),
        (empty.ssh, "systems.ssh"),
        (lambda: empty.http("loki"), "systems.loki"),
        (lambda: empty.block("wazuh_indexer"), "systems.wazuh.indexer"),
    ]:
        with pytest.raises(ConfigError, match=f"{key}: not configured"):
            accessor()
    with pytest.raises(ConfigError, match="not an HTTP system"):
        empty.http("proxmox")
    with pytest.raises(ConfigError, match="unknown system"):
        empty.block("nagios")
    assert empty.skipped("proxmox", "wazuh") == ["proxmox: not configured", "wazuh: not configured"]


def test_pve_and_ssh_clients_are_built(secrets_env: dict[str, str]) -> None:
    from labops.proxmox import PveClient
    from labops.ssh import SshRunner

    ctx = LabContext(config=load_config(DATA / "all_systems.yaml"))
    assert isinstance(ctx.pve(), PveClient)
    assert isinstance(ctx.ssh(), SshRunner)
    assert ctx.ssh_block().settings.key_file == DATA / "keys" / "id_ed25519"


def test_metrics_pusher_reaches_victoriametrics(victoriametrics: Any) -> None:
    from blocks.factory import metrics_pusher
    from labops.metrics import Metric

    assert metrics_pusher(parse_config({})) is None
    config = parse_config({"systems": {"victoriametrics": {"url": victoriametrics.url}}})
    pusher = metrics_pusher(config)
    assert pusher is not None
    pusher.push([Metric(name="labops_blocks_test", value=7, labels={"via": "factory"})])
    series = victoriametrics.wait_for('labops_blocks_test{via="factory"}')
    assert series[0]["value"][1] == "7"
