"""One reach-and-auth check per system, for ``labops config check``.

Each check takes the system's block (built from the config, secrets resolved) and makes the
smallest call that proves both that the system answers and that the credentials are accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any, cast

from prefect.blocks.core import Block
from pydantic import BaseModel

from blocks._base import SystemBlock
from blocks.edge import TechnitiumDns
from blocks.factory import BLOCK_TYPES, block_for, config_key, system_config
from blocks.llm import LlmProviders
from blocks.notify import MqttBroker, TelegramBot
from blocks.observability import BeszelHub
from blocks.security import CrowdsecLapi, WazuhApi
from blocks.ssh import SshCredentials
from labops.config import LabopsConfig
from labops.errors import AuthFailed, ConfigError, LabopsError, Unreachable
from labops.http import HttpClient
from labops.http_settings import HttpRetry
from labops.redact import redact


class Status(StrEnum):
    OK = "ok"
    AUTH_FAILED = "auth failed"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    CONFIG_ERROR = "config error"
    SKIPPED = "skipped"


ENDPOINTS = "endpoints"
"""The ``system`` of the rows of the TLS handshake check of ``inventory.endpoints``."""


class CheckResult(BaseModel):
    system: str
    endpoint: str = "-"
    status: Status
    detail: str = ""

    @property
    def bad(self) -> bool:
        return self.status not in (Status.OK, Status.SKIPPED)

    @property
    def name(self) -> str:
        """How the summary names it: the system, or the endpoint that failed its handshake."""
        return self.endpoint if self.system == ENDPOINTS and self.bad else self.system


class CheckContext(BaseModel):
    """What a check needs beside its block."""

    model_config = {"arbitrary_types_allowed": True}

    config: LabopsConfig
    timeout_s: float = 10.0


Check = Callable[[Any, CheckContext], str]


def _get(block: Any, path: str) -> Any:
    with cast(HttpClient, block.get_client()) as client:
        return client.get_json(path)


def check_proxmox(block: Any, ctx: CheckContext) -> str:
    return f"Proxmox VE {block.get_client().version().version}"


def check_pbs(block: Any, ctx: CheckContext) -> str:
    return f"PBS {block.get_client().version().version}, datastore {block.settings.datastore}"


def check_ssh(block: SshCredentials, ctx: CheckContext) -> str:
    from labops.ssh import SshTarget

    hosts = [h for h in ctx.config.inventory.hosts if h.access == "ssh"]
    if not hosts:
        raise _Skip("no SSH host in inventory.hosts to try")
    host = hosts[0]
    target = SshTarget(name=host.name, address=host.address or host.name, port=host.port)
    result = block.get_client().run(target, "true", timeout=ctx.timeout_s)
    if result.exit_status != 0:
        raise LabopsError(f"`true` exited {result.exit_status} on {host.name}")
    return f"logged in to {host.name} as {block.settings.user}"


def check_traefik(block: Any, ctx: CheckContext) -> str:
    return f"Traefik {_get(block, '/api/version').get('Version', '?')}"


def check_step_ca(block: Any, ctx: CheckContext) -> str:
    return f"health {_get(block, '/health').get('status', '?')}"


def check_technitium(block: TechnitiumDns, ctx: CheckContext) -> str:
    body = _get(block, "/api/zones/list")
    status = body.get("status") if isinstance(body, dict) else None
    # Technitium reports a bad token with HTTP 200 and status "invalid-token"
    if status == "invalid-token":
        raise AuthFailed("technitium", body.get("errorMessage", "invalid token"))
    if status != "ok":
        raise LabopsError(f"status {status!r}: {body.get('errorMessage', '')}")
    zones = [z.get("name") for z in body.get("response", {}).get("zones", [])]
    found = "found" if block.settings.zone in zones else "NOT found"
    return f"{len(zones)} zone(s), {block.settings.zone} {found}"


def check_wazuh_api(block: WazuhApi, ctx: CheckContext) -> str:
    block.login()
    return f"logged in as {block.settings.username}"


def check_wazuh_indexer(block: Any, ctx: CheckContext) -> str:
    body = _get(block, "/")
    version = body.get("version", {}).get("number", "?") if isinstance(body, dict) else "?"
    return f"indexer {version}"


def check_crowdsec(block: CrowdsecLapi, ctx: CheckContext) -> str:
    parts = []
    if block.settings.machine_id and block.machine_password is not None:
        block.login()
        parts.append(f"watcher {block.settings.machine_id} logged in")
    if block.bouncer_key is not None:
        with block.get_client("bouncer") as client:
            decisions = client.get_json("/v1/decisions")
        parts.append(f"bouncer ok, {len(decisions or [])} decision(s)")
    if not parts:
        raise _Skip("neither machine login nor bouncer key configured")
    return "; ".join(parts)


def check_victoriametrics(block: Any, ctx: CheckContext) -> str:
    with block.get_client() as client:
        client.request("GET", "/health")
    return "healthy"


def check_loki(block: Any, ctx: CheckContext) -> str:
    with block.get_client() as client:
        client.request("GET", "/ready")
    return "ready"


def check_beszel(block: BeszelHub, ctx: CheckContext) -> str:
    block.login()
    return f"logged in as {block.settings.username}"


def check_telegram(block: TelegramBot, ctx: CheckContext) -> str:
    token, s = block.bot_token.get_secret_value(), block.settings
    with HttpClient("telegram", f"{s.base_url}/bot{token}", retry=s.retry, tls=s.tls) as c:
        body = c.get_json("/getMe")
    if not isinstance(body, dict) or not body.get("ok"):
        raise LabopsError(f"getMe answered {body!r}")
    return f"bot @{body.get('result', {}).get('username', '?')}, chat {block.settings.chat_id}"


def check_mqtt(block: MqttBroker, ctx: CheckContext) -> str:
    import paho.mqtt.client as mqtt

    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        outcome["reason"] = reason
        done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="labops-config-check")
    client.on_connect = on_connect
    if block.settings.username:
        password = block.password.get_secret_value() if block.password else None
        client.username_pw_set(block.settings.username, password)
    if block.settings.tls:
        client.tls_set(ca_certs=str(block.settings.ca_bundle) if block.settings.ca_bundle else None)
    try:
        client.connect(block.settings.host, block.settings.port, keepalive=10)
    except OSError as exc:
        raise Unreachable("mqtt", str(exc)) from None
    client.loop_start()
    try:
        if not done.wait(ctx.timeout_s):
            raise Unreachable("mqtt", f"no CONNACK within {ctx.timeout_s:.0f}s")
        reason = outcome["reason"]
        if reason.is_failure:
            if reason.value in (4, 5, 134, 135):  # bad user/password, not authorised
                raise AuthFailed("mqtt", f"connection refused: {reason}")
            raise LabopsError(f"connection refused: {reason}")
    finally:
        client.disconnect()
        client.loop_stop()
    return f"connected{' as ' + block.settings.username if block.settings.username else ''}"


def check_llm(block: LlmProviders, ctx: CheckContext) -> str:
    names = ", ".join(m.model for m in block.settings.models)
    return f"config only (not contacted): {names}"


CHECKS: dict[str, Check] = {
    "proxmox": check_proxmox,
    "pbs": check_pbs,
    "pbs_offsite": check_pbs,
    "ssh": check_ssh,
    "traefik": check_traefik,
    "step_ca": check_step_ca,
    "technitium": check_technitium,
    "wazuh_api": check_wazuh_api,
    "wazuh_indexer": check_wazuh_indexer,
    "crowdsec": check_crowdsec,
    "victoriametrics": check_victoriametrics,
    "loki": check_loki,
    "beszel": check_beszel,
    "telegram": check_telegram,
    "mqtt": check_mqtt,
    "llm": check_llm,
}
assert set(CHECKS) == set(BLOCK_TYPES), "every system needs a check"


class _Skip(Exception):
    """The check has nothing to try (e.g. no SSH host in the inventory)."""


def endpoint_of(block: Block) -> str:
    url = getattr(getattr(block, "settings", None), "url", None)
    if url is not None:
        return str(url).rstrip("/")
    if isinstance(block, MqttBroker):
        return f"{block.settings.host}:{block.settings.port}"
    if isinstance(block, SshCredentials):
        return f"{block.settings.user}@<inventory>"
    return "-"


def _quick(block: Block, timeout_s: float) -> Block:
    # a check answers "does it work now": one try with a short timeout, not the flows' retries
    if isinstance(block, SystemBlock) and isinstance(
        getattr(block.settings, "retry", None), HttpRetry
    ):
        return block.with_settings(retry=HttpRetry(timeout_s=timeout_s, attempts=1, backoff_s=0))
    if isinstance(block, SshCredentials):
        return block.with_settings(connect_timeout_s=timeout_s)
    return block


def check_system(system: str, ctx: CheckContext) -> CheckResult:
    """Check one system; never raises: every problem becomes the result's status and detail."""
    if system_config(ctx.config, system) is None:
        return CheckResult(system=system, status=Status.SKIPPED, detail="not configured")
    endpoint = "-"
    try:
        block = _quick(block_for(ctx.config, system), ctx.timeout_s)
        endpoint = endpoint_of(block)
        detail = CHECKS[system](block, ctx)
        status = Status.OK
    except _Skip as exc:
        status, detail = Status.SKIPPED, str(exc)
    except ConfigError as exc:
        status, detail = Status.CONFIG_ERROR, "; ".join(exc.problems)
    except AuthFailed as exc:
        status, detail = Status.AUTH_FAILED, exc.message
    except Unreachable as exc:
        status, detail = Status.UNREACHABLE, exc.message
    except LabopsError as exc:
        status, detail = Status.FAILED, str(exc)
    except Exception as exc:  # a check must report, not crash the table
        status, detail = Status.FAILED, f"{type(exc).__name__}: {exc}"
    return CheckResult(
        system=system,
        endpoint=endpoint,
        status=status,
        detail=redact(detail.splitlines()[0]) if detail else "",
    )


def check_tls_endpoints(config: LabopsConfig, timeout_s: float = 10.0) -> list[CheckResult]:
    """Does each configured certificate endpoint (``inventory.endpoints``) answer a TLS
    handshake? One row per endpoint that does not; one row for all those that do. Bounded:
    ``timeout_s`` for the TCP connect and as much for the handshake, the certificates policy's
    concurrency at once. The certificate itself is the certificates flow's business."""
    from labops.certificates.discover import config_targets
    from labops.certificates.probe import RawProbe, probe_all

    targets = config_targets(config.inventory.endpoints)
    if not targets:
        return [
            CheckResult(system=ENDPOINTS, status=Status.SKIPPED, detail="no inventory.endpoints")
        ]
    probes: list[RawProbe] = probe_all(
        targets, config.certificates.concurrency, timeout_s, timeout_s
    )
    failed = [
        CheckResult(
            system=ENDPOINTS,
            endpoint=p.target.label,
            status=Status.UNREACHABLE,
            detail=redact(str(p.error or "no certificate"))[:300],
        )
        for p in probes
        if not p.ok
    ]
    answered = len(targets) - len(failed)
    if answered:
        failed.append(
            CheckResult(
                system=ENDPOINTS,
                endpoint=f"{answered} of {len(targets)}",
                status=Status.OK,
                detail="answered a TLS handshake",
            )
        )
    return failed


def check_apprise_targets(config: LabopsConfig) -> list[CheckResult]:
    """Does each Apprise target resolve (its secret references, or its saved Prefect block) and
    does Apprise understand it? One row per target. Nothing is sent: a test message on every
    config check would be noise on the operator's phone."""
    from labops.notify.apprise import AppriseNotifier

    rows = []
    for target in config.systems.apprise:
        notifier = AppriseNotifier(target, lab=config.lab.name)
        try:
            plugins = notifier.plugins()
        except Exception as exc:  # a check must report, not crash the table
            rows.append(
                CheckResult(
                    system=notifier.channel,
                    endpoint=notifier.where(),
                    status=Status.CONFIG_ERROR,
                    detail=redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
                )
            )
            continue
        services = ", ".join(sorted({str(getattr(p, "service_name", "?")) for p in plugins}))
        rows.append(
            CheckResult(
                system=notifier.channel,
                endpoint=notifier.where(),
                status=Status.OK,
                detail=f"Apprise: {services} (nothing sent)",
            )
        )
    return rows


def check_all(config: LabopsConfig, timeout_s: float = 10.0) -> list[CheckResult]:
    """Every known system, checked concurrently, in ``BLOCK_TYPES`` order, then the Apprise
    targets, then the TLS handshake of every configured certificate endpoint."""
    ctx = CheckContext(config=config, timeout_s=timeout_s)
    with ThreadPoolExecutor(max_workers=8) as pool:
        endpoints = pool.submit(check_tls_endpoints, config, timeout_s)
        systems = list(pool.map(lambda name: check_system(name, ctx), CHECKS))
        return systems + check_apprise_targets(config) + endpoints.result()


__all__ = [
    "CHECKS",
    "ENDPOINTS",
    "CheckResult",
    "Status",
    "check_all",
    "check_apprise_targets",
    "check_system",
    "check_tls_endpoints",
    "config_key",
]
