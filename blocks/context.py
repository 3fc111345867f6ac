"""LabContext: the validated config plus a block for every configured system.

A flow's first line is ``ctx = LabContext.load(config)``. Blocks come from the config's inline
values (secrets resolved at run time) or, when a system names ``block: NAME``, from the saved block.
Tasks take blocks (``ctx.block("proxmox")``) and build their client inside; flow-level code that
needs a client directly uses ``ctx.pve()``, ``ctx.pbs()``, ``ctx.ssh()`` or ``ctx.http(system)``.
Each accessor raises ``ConfigError`` naming the system when the config leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, cast

from labops.config import LabopsConfig, load_config
from labops.redact import install_log_filter
from labops.state import StateStore

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from blocks._base import HttpEndpointBlock
    from blocks.delivery import Delivery
    from blocks.proxmox import PbsCredentials, PbsOffsiteCredentials, ProxmoxCredentials
    from blocks.ssh import SshCredentials
    from labops.http import HttpClient
    from labops.notify import MultiNotifier
    from labops.outcome import Severity
    from labops.proxmox import PbsClient, PveClient
    from labops.ssh import SshRunner


@dataclass
class LabContext:
    """What a flow works with: the config, its blocks (built once, lazily) and the state store."""

    config: LabopsConfig
    config_file: str | None = None
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, config: str | None = None) -> LabContext:
        """Validate the config (secrets included) and prepare blocks lazily."""
        install_log_filter()
        cfg = load_config(config)
        _ping_start(cfg)
        return cls(config=cfg, config_file=config)

    @cached_property
    def state(self) -> StateStore:
        return StateStore(self.config.lab.state_dir)

    # -- links ------------------------------------------------------------------------------------

    def ui_url(self) -> str | None:
        """Base URL of the Prefect UI for links: ``lab.ui_url`` when the operator set it, else
        the server this process reports to (``PREFECT_UI_URL``, which Prefect derives from
        ``PREFECT_API_URL`` when unset). None without either (a throwaway server)."""
        if self.config.lab.ui_url:
            return self.config.lab.ui_url.rstrip("/")
        from prefect.settings import PREFECT_UI_URL

        value = PREFECT_UI_URL.value()
        return str(value).rstrip("/") if value else None

    def flow_run_url(self, flow_run_id: object) -> str | None:
        """The UI page of one flow run (None when no UI is known)."""
        base = self.ui_url()
        return f"{base}/runs/flow-run/{flow_run_id}" if base else None

    # -- blocks (what tasks take) ---------------------------------------------------------------

    def configured(self, system: str) -> bool:
        """Whether the config sets ``system`` up (names as in ``blocks.factory.BLOCK_TYPES``)."""
        from blocks.factory import system_config

        return system_config(self.config, system) is not None

    def block(self, system: str) -> Block:
        """The block of ``system`` (``proxmox``, ``pbs``, ``ssh``, ``traefik``, ``wazuh_api``...).

        Raises:
            ConfigError: naming the system when it is not configured or its secret cannot resolve.
        """
        from blocks.factory import block_for, normalise

        name = normalise(system)
        if name not in self._cache:
            self._cache[name] = block_for(self.config, name)
        return cast("Block", self._cache[name])

    def pve_block(self) -> ProxmoxCredentials:
        return cast("ProxmoxCredentials", self.block("proxmox"))

    def pbs_block(self) -> PbsCredentials:
        return cast("PbsCredentials", self.block("pbs"))

    def pbs_offsite_block(self) -> PbsOffsiteCredentials:
        """The off-site PBS (``systems.pbs_offsite``), read directly."""
        return cast("PbsOffsiteCredentials", self.block("pbs_offsite"))

    def ssh_block(self) -> SshCredentials:
        return cast("SshCredentials", self.block("ssh"))

    def http_block(self, system: str) -> HttpEndpointBlock:
        from blocks.factory import HTTP_SYSTEMS, normalise
        from labops.errors import ConfigError

        if normalise(system) not in HTTP_SYSTEMS:
            raise ConfigError(
                f"{system!r} is not an HTTP system (known: {', '.join(HTTP_SYSTEMS)})"
            )
        return cast("HttpEndpointBlock", self.block(system))

    # -- clients (for flow-level code; tasks build their own from the block) ---------------------

    def pve(self) -> PveClient:
        """A Proxmox VE client (``labops.proxmox.PveClient``)."""
        return self.pve_block().get_client()

    def pbs(self) -> PbsClient:
        """A Proxmox Backup Server client (``labops.proxmox.PbsClient``)."""
        return self.pbs_block().get_client()

    def ssh(self) -> SshRunner:
        """The SSH runner (``labops.ssh.SshRunner``)."""
        return self.ssh_block().get_client()

    def http(self, system: str) -> HttpClient:
        """An authenticated ``HttpClient`` for an HTTP system (``traefik``, ``loki``...)."""
        return self.http_block(system).get_client()

    def notifier(
        self, operation: str | None = None, severity: Severity | None = None
    ) -> MultiNotifier:
        """Every configured channel (Telegram, MQTT, the Apprise targets whose routing takes
        ``operation`` at ``severity``; not given: all) behind one MultiNotifier."""
        from blocks.factory import notifier_for

        return notifier_for(self.config, operation, severity)

    def delivery(self) -> Delivery:
        """What publishing a report needs: the lab's name, channels, metrics endpoint, UI."""
        from blocks.delivery import delivery_for

        return delivery_for(self.config, self.ui_url())

    def skipped(self, *systems: str) -> list[str]:
        """'<system>: not configured' for each named system that the config leaves out."""
        return [f"{name}: not configured" for name in systems if not self.configured(name)]


def _ping_start(config: LabopsConfig) -> None:
    """Tell the external dead-man's switch (``platform.external_heartbeat``) that the flow run
    this load starts has started, unless it is a dry run or not a flow run at all. Without a
    success or fail ping afterwards (``tasks.publish``), the service alerts: that is how a run
    that dies before reporting is caught. A ping that does not arrive is logged, never fatal.
    Reads nothing of the lab, changes nothing in it."""
    if not config.platform.external_heartbeat:
        return
    from prefect.context import FlowRunContext

    run = FlowRunContext.get()
    if run is None or run.flow_run is None or run.flow is None:
        return
    if (run.parameters or {}).get("dry_run"):
        return
    flow = run.flow.name
    heartbeat = config.platform.external_heartbeat.get(flow)  # type: ignore[call-overload]
    if heartbeat is None:
        return
    import logging

    from labops.pings import Phase, pings_for, send_pings

    try:
        problems = send_pings(pings_for(flow, heartbeat, Phase.START))
    except Exception as exc:  # a secret reference that does not resolve: the end ping says it
        problems = [str(exc)]
    for problem in problems:
        logging.getLogger("labops.pings").warning("start ping: %s", problem)
