"""Proxmox VE tasks of the patch flow: LXC snapshots, guest locks, start/stop, node status.

Each task is one API call (plus waiting for its UPID), typed in and out; those that change the
lab say so. Task errors carry the PVE error text.
"""

from __future__ import annotations

from prefect import task

from blocks.proxmox import ProxmoxCredentials
from labops.errors import ApiError
from labops.models.pve import PveGuest, PveNode, PveSnapshot, PveTaskItem
from tasks.pve import start_once

_TASK_TIMEOUT_S = 600.0


def _wait_ok(pve: object, node: str, upid: str, what: str, timeout_s: float) -> None:
    from labops.proxmox import PveClient

    assert isinstance(pve, PveClient)
    status = pve.wait_task(node, upid, timeout_s=timeout_s, poll_s=0.5)
    if not status.succeeded:
        raise ApiError("proxmox", f"{what} failed: {status.error}")


@task(name="pve-inventory", retries=2, retry_delay_seconds=2, tags=["proxmox"])
def inventory(pve: ProxmoxCredentials) -> tuple[list[PveNode], list[PveGuest]]:
    """Nodes and guests of the cluster (read-only)."""
    client = pve.get_client()
    return client.nodes(), client.guests()


@task(name="pve-guest-lock", retries=2, retry_delay_seconds=2, tags=["proxmox"])
def guest_lock(pve: ProxmoxCredentials, node: str, vmid: int) -> str | None:
    """The lock a PVE task holds on a container (``backup``, ``snapshot``...), or None
    (read-only)."""
    return pve.get_client().guest_state(node, "lxc", vmid).lock


@task(name="pve-node-activity", retries=2, retry_delay_seconds=2, tags=["proxmox"])
def node_activity(pve: ProxmoxCredentials, node: str) -> tuple[list[PveTaskItem], list[PveGuest]]:
    """The tasks running on ``node`` (``/nodes/{node}/tasks?source=active``) and the cluster's
    guests with their locks: what says a node is busy (read-only)."""
    client = pve.get_client()
    return client.tasks(node, source="active"), client.guests()


@task(name="pve-snapshots", retries=2, retry_delay_seconds=2, tags=["proxmox"])
def list_snapshots(pve: ProxmoxCredentials, node: str, vmid: int) -> list[PveSnapshot]:
    """Snapshots of a container (read-only)."""
    return pve.get_client().snapshots(node, vmid)


@task(name="pve-snapshot-create", tags=["proxmox"])
def create_snapshot(
    pve: ProxmoxCredentials, node: str, vmid: int, name: str, description: str = ""
) -> str:
    """Snapshot a container and wait for it. CHANGES THE LAB. Idempotent: an existing snapshot of
    that name (a re-run of the same run) is kept, not duplicated."""
    client = pve.get_client()
    if any(s.name == name for s in client.snapshots(node, vmid)):
        return name
    # a lost answer: the snapshot task it may have started is followed, never started twice
    upid = start_once(
        client,
        node,
        vmid,
        "vzsnapshot",
        lambda: client.snapshot_create(node, vmid, name, description),
        owner=client.token_id,
    )
    _wait_ok(client, node, upid, f"snapshot {name} of {vmid}", _TASK_TIMEOUT_S)
    return name


@task(name="pve-snapshot-rollback", tags=["proxmox"])
def rollback_snapshot(pve: ProxmoxCredentials, node: str, vmid: int, name: str) -> None:
    """Roll a container back to a snapshot and wait for it; a container that was running is
    started again. CHANGES THE LAB."""
    client = pve.get_client()
    running = client.guest_state(node, "lxc", vmid).status == "running"
    upid = start_once(
        client,
        node,
        vmid,
        "vzrollback",
        lambda: client.snapshot_rollback(node, vmid, name, start=running),
        owner=client.token_id,
    )
    _wait_ok(client, node, upid, f"rollback of {vmid} to {name}", _TASK_TIMEOUT_S)


@task(name="pve-snapshot-delete", retries=1, retry_delay_seconds=3, tags=["proxmox"])
def delete_snapshot(pve: ProxmoxCredentials, node: str, vmid: int, name: str) -> bool:
    """Delete a container snapshot and wait for it. CHANGES THE LAB. Returns False when it was
    already gone (so a retry or a re-run does nothing twice)."""
    client = pve.get_client()
    if not any(s.name == name for s in client.snapshots(node, vmid)):
        return False
    upid = start_once(
        client,
        node,
        vmid,
        "vzdelsnapshot",
        lambda: client.snapshot_delete(node, vmid, name),
        owner=client.token_id,
    )
    _wait_ok(client, node, upid, f"deleting snapshot {name} of {vmid}", _TASK_TIMEOUT_S)
    return True


@task(name="pve-guest-power", tags=["proxmox"])
def set_power(pve: ProxmoxCredentials, node: str, vmid: int, action: str) -> None:
    """Start or stop a container and wait for it. CHANGES THE LAB. A lost answer is followed
    to the task it started, never sent twice."""
    client = pve.get_client()
    upid = start_once(
        client,
        node,
        vmid,
        f"vz{action}",
        lambda: client.power(node, "lxc", vmid, action),
        owner=client.token_id,
    )
    _wait_ok(client, node, upid, f"{action} of {vmid}", _TASK_TIMEOUT_S)


@task(name="pve-node-uptime", tags=["proxmox"])
def node_uptime(pve: ProxmoxCredentials, node: str) -> int | None:
    """Uptime of a node in seconds, or None when the API cannot reach it (read-only)."""
    try:
        return pve.get_client().node_status(node).uptime
    except Exception:  # an offline node answers 595/500 through the cluster: "not back yet"
        return None


@task(name="pve-find-snapshots", retries=1, retry_delay_seconds=2, tags=["proxmox"])
def find_snapshots(
    pve: ProxmoxCredentials, guests: list[tuple[str, str, int]], prefix: str
) -> list[tuple[str, int, str]]:
    """Snapshots whose name starts with ``prefix`` on each (host, node, vmid), as
    (host, vmid, name); guests the API cannot list are left out (read-only)."""
    client = pve.get_client()
    found: list[tuple[str, int, str]] = []
    for host, node, vmid in guests:
        try:
            snaps = client.snapshots(node, vmid)
        except Exception:
            continue
        found += [(host, vmid, s.name) for s in snaps if s.name.startswith(prefix)]
    return found


@task(name="http-health", tags=["health"])
def probe_url(url: str, timeout_s: float = 10.0, ca_bundle: str | None = None) -> str:
    """GET ``url``; returns "" when it answers 2xx/3xx, else why not (read-only)."""
    import httpx

    try:
        resp = httpx.get(url, timeout=timeout_s, verify=ca_bundle or True)
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    if resp.status_code >= 400:
        return f"{url}: HTTP {resp.status_code}"
    return ""
