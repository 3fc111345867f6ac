"""Targets from each discovery source (pure: the tasks fetch, these functions decide)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from labops.certificates.models import Target
from labops.config.inventory import HttpsEndpoint
from labops.config.systems import TlsOptions
from labops.models.traefik import TraefikRouter, tls_hosts


def split_hostport(value: str, default_port: int = 443) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` -> (host, port); bad ports raise naming it."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: invalid port")
    return host, int(port)


def config_targets(endpoints: Iterable[HttpsEndpoint]) -> list[Target]:
    return [
        Target(
            name=e.name,
            address=e.address or e.name,
            port=e.port,
            group=e.group,
            sources=("config",),
        )
        for e in endpoints
    ]


def traefik_targets(routers: list[TraefikRouter], entrypoint: str) -> list[Target]:
    """Every host of every served TLS router, probed through the entrypoint with SNI."""
    address, port = split_hostport(entrypoint)
    return [
        Target(name=host, address=address, port=port, sources=(f"traefik:{router}",))
        for host, router in tls_hosts(routers)
    ]


def dns_targets(
    records: Iterable[tuple[str, str]],
    traefik_addresses: Iterable[str],
    entrypoint: str | None,
    direct_ports: Iterable[int],
) -> list[Target]:
    """(name, address) records: those pointing at Traefik go through its entrypoint, the others
    are probed directly on ``direct_ports`` (none by default). Wildcards are not probed."""
    via_traefik = {a.strip() for a in traefik_addresses}
    ports = list(direct_ports)
    out: list[Target] = []
    for name, address in records:
        if name.startswith("*"):
            continue
        if address in via_traefik and entrypoint:
            ep_host, ep_port = split_hostport(entrypoint)
            out.append(Target(name=name, address=ep_host, port=ep_port, sources=("dns",)))
            continue
        out += [Target(name=name, address=address, port=p, sources=("dns",)) for p in ports]
    return out


def system_bundle(tls: TlsOptions | None) -> str | None:
    """The CA bundle a system's API client trusts (its ``tls.ca_bundle`` when verifying)."""
    if tls is None or not tls.verify or tls.ca_bundle is None:
        return None
    return str(tls.ca_bundle)


def url_target(
    url: str,
    kind: str,
    source: str,
    *,
    node: str | None = None,
    group: str | None = None,
    default_port: int = 443,
    ca_bundle: str | None = None,
) -> Target:
    """The TLS endpoint behind an https URL (a Proxmox node, PBS, the CA); ``ca_bundle``: the
    system's own CA bundle, trusted for this endpoint as its API client trusts it."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    host = parts.hostname
    return Target(
        name=host,
        address=host,
        port=parts.port or default_port,
        kind=kind,
        sources=(source,),
        node=node,
        group=group,
        ca_bundle=ca_bundle,
    )
