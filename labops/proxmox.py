"""Typed adapters over proxmoxer for Proxmox VE and PBS.

proxmoxer is dynamic and untyped, defaults to a 5 s timeout and returns None when a task poll
times out; these adapters make timeouts explicit, map ResourceException/requests errors onto
labops errors through the one retry policy (labops.http.call_with_retry), and return models.

INTERFACE (implemented by the foundation work; flows' engineers ADD methods they need here, each
thin, typed and returning pydantic models from labops/models/pve.py):

    pve = PveClient(system: ProxmoxSystem, token_secret: SecretStr)
    pve.get(path, **params) -> Any ; pve.post(path, **params) -> Any ; pve.delete(path, **params)
    pve.version() ; pve.nodes() -> list[PveNode] ; pve.guests() -> list[PveGuest]  (cluster/resources)
    pve.task_status(node, upid) -> PveTaskStatus ; pve.wait_task(node, upid, timeout_s, poll_s)
        -> PveTaskStatus (raises CommandTimeout-like labops error on timeout, never returns None)
    pve.task_log(node, upid) -> list[str]

    pbs = PbsClient(system: PbsSystem, token_secret: SecretStr)
    pbs.get/post/delete ; pbs.snapshots(store, backup_type=None, backup_id=None)
    pbs.task_status(upid) ; pbs.wait_task(upid, ...)   (PBS UPIDs: proxmoxer's decode_upid fails)
"""
