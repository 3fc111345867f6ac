"""Typed adapters over proxmoxer for Proxmox VE and PBS.

proxmoxer is dynamic and untyped, defaults to a 5 s timeout and returns None when a task poll
times out; these adapters make timeouts explicit, map ResourceException/requests errors onto
labops errors through the one retry policy (labops.http.call_with_retry), and return models.

INTERFACE (flows' engineers ADD methods they need here, each thin, typed and returning pydantic
models from labops/models/pve.py or pbs.py; put them in the matching section of the class):

    pve = PveClient(system: ProxmoxSettings, token_secret: SecretStr)
    pve.get(path, **params) -> Any ; pve.post(path, **params) -> Any
    pve.put(path, **params) -> Any ; pve.delete(path, **params) -> Any
    pve.version() -> PveVersion ; pve.nodes() -> list[PveNode]
    pve.guests() -> list[PveGuest]                       (GET /cluster/resources?type=vm)
    pve.task_status(node, upid) -> PveTaskStatus
    pve.wait_task(node, upid, timeout_s=3600, poll_s=2) -> PveTaskStatus  (TaskTimeout, never None)
    pve.task_log(node, upid) -> list[str]
    pve.guest_config(node, kind, vmid) -> PveGuestConfig
    pve.set_guest_config(node, kind, vmid, values, delete=(), digest=None) -> None   (PUT, sync)
    pve.permissions(path) -> dict[str, bool]          (this token's privileges on path)
    pve.storage_configs() -> list[PveStorageConfig]   (GET /storage: datastore, namespace)

    pbs = PbsClient(system: PbsSettings, token_secret: SecretStr)
    pbs.get/post/put/delete ; pbs.version() ; pbs.datastores() -> list[PbsDatastore]
    pbs.snapshots(store=None, backup_type=None, backup_id=None, ns=None) -> list[PbsSnapshot]
    pbs.verify_jobs(store=None), pbs.prune_jobs(store=None) -> list[PbsJobStatus] (ns, max-depth)
    pbs.task_status(upid) -> PbsTaskStatus ; pbs.wait_task(upid, timeout_s, poll_s)
    pbs.task_log(upid) -> list[str]      (PBS UPIDs have 9 fields; proxmoxer's decode_upid fails)

Retries: reads (GET) are retried on connection errors, timeouts, 5xx and 429. POST, PUT and
DELETE start something in PVE/PBS (a backup, an ACME renewal, a snapshot removal), so they are
retried only when the server cannot have acted on them: the connection was never made, or the
server answered 429, 503 or 595 (pveproxy could not connect to the node). One whose answer was
lost after sending (read timeout, reset) or that was answered another 5xx (PVE's 500 may follow
partial work; 596 may come after the request reached the node) raises MaybeApplied at once
rather than risk doing the work twice.
Booleans in parameters are sent as 1/0 (PVE rejects "True").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from proxmoxer import ProxmoxAPI, ResourceException
from pydantic import SecretStr

from labops.certificates.pve import PveCertificateInfo
from labops.errors import ApiError, AuthFailed, CommandTimeout, MaybeApplied, Unreachable
from labops.http import RetryableStatus, call_with_retry
from labops.http_limits import CappedAdapter, DeadlineExceeded, ResponseTooLarge
from labops.models.pbs import (
    PbsDatastore,
    PbsDatastoreConfig,
    PbsGcStatus,
    PbsGroup,
    PbsJobStatus,
    PbsSnapshot,
    PbsSyncJob,
    PbsTaskItem,
    PbsTaskStatus,
    PbsVersion,
)
from labops.models.pve import (
    PveBackupJob,
    PveBackupVolume,
    PveClusterMember,
    PveGuest,
    PveGuestConfig,
    PveGuestRef,
    PveGuestState,
    PveNode,
    PveNodeStatus,
    PveReplicationJob,
    PveReplicationState,
    PveSnapshot,
    PveStorage,
    PveStorageConfig,
    PveTaskItem,
    PveTaskStatus,
    PveVersion,
    TaskStatus,
)
from labops.models.pve_agent import AgentExecStarted, AgentExecStatus
from labops.proxmox_settings import PbsSettings, ProxmoxSettings

# proxmoxer logs every request and full response bodies (tokens' results, configs) below WARNING.
for _name in ("proxmoxer", "proxmoxer.core", "proxmoxer.backends.https"):
    logging.getLogger(_name).setLevel(logging.WARNING)

log = logging.getLogger("labops.proxmox")


class TaskTimeout(CommandTimeout):
    """A Proxmox task still ran when its wait ended (the task itself is left running)."""


# Which privilege a refused call most likely lacks, by path (first match wins).
_PVE_PRIVILEGES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/vzdump$"), "VM.Backup on the guests and Datastore.AllocateSpace on the storage"),
    (
        re.compile(r"^nodes/[^/]+/(lxc|qemu)$"),
        "VM.Allocate on /vms/<vmid> or on the pool named, Datastore.AllocateSpace on the target "
        "storage; a restore also VM.Backup on the backed-up guest and Datastore.AllocateSpace "
        "on its backup storage",
    ),
    (re.compile(r"/apt/"), "Sys.Modify on /nodes/<node> (apt/update needs more than Sys.Audit)"),
    (re.compile(r"/certificates/acme"), "Sys.Modify on /nodes/<node>"),
    (re.compile(r"/snapshot"), "VM.Snapshot on /vms/<vmid>"),
    (
        re.compile(r"/qemu/\d+/agent/"),
        "VM.GuestAgent.Unrestricted on /vms/<vmid> (commands through the guest agent)",
    ),
    (re.compile(r"/storage/[^/]+/content"), "Datastore.Audit on /storage/<storage>"),
    (re.compile(r"^storage$"), "Datastore.Audit on /storage/<storage>"),
    (re.compile(r"^cluster/backup"), "Sys.Audit on /"),
    (re.compile(r"^nodes/[^/]+/(status|tasks)"), "Sys.Audit on /nodes/<node>"),
    (
        re.compile(r"/(lxc|qemu)/\d+/config$"),
        "VM.Audit (read), or VM.Config.Network on /vms/<vmid> and SDN.Use on the bridge, "
        "VM.Config.Options for tags (change)",
    ),
    (re.compile(r"/(lxc|qemu)/"), "VM.Audit (read) or VM.PowerMgmt (start/stop) on /vms/<vmid>"),
]
_PBS_PRIVILEGES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/verify$"), "Datastore.Verify on /datastore/<store>"),
    (re.compile(r"/prune"), "Datastore.Prune on /datastore/<store>"),
    (re.compile(r"^admin/datastore"), "Datastore.Audit on /datastore/<store>"),
    (re.compile(r"^config/remote"), "Remote.Audit on /remote/<remote>"),
    (re.compile(r"/tasks"), "Sys.Audit on /system/tasks (or own tasks only)"),
]


def _privilege_hint(rules: list[tuple[re.Pattern[str], str]], path: str) -> str:
    for pattern, hint in rules:
        if pattern.search(path):
            return hint
    return "the privilege named in the message"


def _error_text(exc: ResourceException) -> str:
    """PVE puts the message in the reason phrase (``content``); PBS in a plain-text body."""
    content = str(exc.content or "").strip()
    errors = exc.errors
    if (
        isinstance(errors, dict)
        and set(errors) == {"errors"}
        and isinstance(errors["errors"], bytes)
    ):
        body = errors["errors"].decode("utf-8", errors="replace").strip()
        return body[:300] or content
    if errors:
        return f"{content} {errors}".strip()
    return content or str(exc.status_message or "")


# Answers that prove the server did not act on a request, so a change may be sent again: 429
# (rate limited) and 503 (not serving) refuse it before any work, and 595 is pveproxy's
# "Errors during connection establishment, proxy handshake" (AnyEvent::HTTP's code when it
# could not even connect to the node it forwards to). Every other 5xx of a change is final.
_NOT_ACTED_ON = (429, 503, 595)


def _never_sent(exc: requests.RequestException | DeadlineExceeded) -> bool:
    """True when the request cannot have reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")
    return False


def _describe(exc: requests.RequestException | DeadlineExceeded) -> str:
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = str(reason or exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class ProxmoxClient:
    """What PVE and PBS share: one proxmoxer session, the retry policy, the error mapping."""

    service = "PVE"
    privileges: list[tuple[re.Pattern[str], str]] = _PVE_PRIVILEGES

    def __init__(
        self,
        system: ProxmoxSettings | PbsSettings,
        token_secret: SecretStr,
        *,
        name: str,
        default_port: int,
    ) -> None:
        if system.url is None:
            raise ValueError(f"systems.{name}.url is not set")
        self.name = name
        self.system = system
        self.retry = system.retry
        self.token_id = system.token_id
        user, _, token_name = system.token_id.partition("!")
        verify: bool | str = system.tls.verify
        if system.tls.verify and system.tls.ca_bundle:
            verify = str(system.tls.ca_bundle)
        path = (system.url.path or "").strip("/")
        path = path.removesuffix("api2/json").strip("/")
        self._api = ProxmoxAPI(
            system.url.host,
            port=system.url.port or default_port,
            user=user,
            token_name=token_name,
            token_value=token_secret.get_secret_value(),
            verify_ssl=verify,
            timeout=system.retry.timeout_s,
            service=self.service,
            path_prefix=path or None,
        )
        # Deadline and size cap of the HTTP policy on proxmoxer's requests session (it takes
        # only a socket timeout, which a server trickling its answer never trips).
        session: requests.Session = self._api._store["session"]
        capped = CappedAdapter(system.retry)
        session.mount("https://", capped)
        session.mount("http://", capped)
        self.sleep: Callable[[float], None] = time.sleep

    # -- generic calls ----------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` (relative to /api2/json) and return its ``data``."""
        return self._call("GET", path, params)

    def post(self, path: str, **params: Any) -> Any:
        """POST ``path``; retried only when the server surely did not act on it."""
        return self._call("POST", path, params)

    def put(self, path: str, **params: Any) -> Any:
        """PUT ``path``; retried only when the server surely did not act on it."""
        return self._call("PUT", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE ``path``; retried only when the server surely did not act on it."""
        return self._call("DELETE", path, params)

    def post_read(self, path: str, **params: Any) -> Any:
        """POST ``path`` that only reads (a guest agent ping, a prune dry run): retried as a
        GET is."""
        return self._call("POST", path, params, changes=False)

    def _call(self, method: str, path: str, params: dict[str, Any], changes: bool = True) -> Any:
        path = path.strip("/")
        sendable = {k: _wire(v) for k, v in params.items() if v is not None}
        resource = self._api(path)

        def once() -> Any:
            if method == "GET":
                return resource.get(**sendable)
            if method == "POST":
                return resource.post(**sendable)
            if method == "PUT":
                return resource.put(**sendable)
            return resource.delete(**sendable)

        changes = changes and method != "GET"
        classify = self._classifier(method, path, changes)
        return call_with_retry(self.name, once, self.retry, classify)

    def _classifier(
        self, method: str, path: str, changes: bool
    ) -> Callable[[BaseException], BaseException | None]:
        what = f"{method} /{path}"

        def classify(exc: BaseException) -> BaseException | None:
            if isinstance(exc, ResourceException):
                return self._map_status(exc, method, path, changes)
            if isinstance(exc, ResponseTooLarge):
                return ApiError(self.name, f"{what}: {exc}")
            if isinstance(exc, requests.exceptions.SSLError):
                return ApiError(
                    self.name,
                    f"TLS to {self.system.url} failed ({_describe(exc)}); set "
                    f"systems.{self.name}.tls.ca_bundle to the CA that signed its certificate",
                )
            if isinstance(exc, requests.RequestException | DeadlineExceeded):
                if changes and not _never_sent(exc):
                    return MaybeApplied(
                        self.name,
                        f"{what}: {_describe(exc)} after the request was sent; it may have been "
                        "applied, so it is not repeated: check the task list before retrying",
                    )
                return Unreachable(self.name, f"{what}: {_describe(exc)}")
            return None

        return classify

    def _map_status(
        self, exc: ResourceException, method: str, path: str, changes: bool
    ) -> BaseException:
        status = int(exc.status_code)
        text = _error_text(exc)
        what = f"{method} /{path}"
        if status in (401, 403):
            if status == 401:
                hint = (
                    f"check systems.{self.name}.token_id and token_secret (the token exists, "
                    "is not expired and the secret belongs to it)"
                )
            else:
                hint = (
                    f"grant it {_privilege_hint(self.privileges, path)} (a privilege-separated "
                    "token needs its own ACL entry)"
                )
            return AuthFailed(
                self.name, f"token {self.token_id} refused for {what} ({status} {text}): {hint}"
            )
        if status in _NOT_ACTED_ON or (not changes and status >= 500):
            return RetryableStatus(status, f"{what}: {text}")
        if status >= 500 and status != 501:
            # A change answered 5xx may have been (partly) done: PVE answers 500 for an error
            # raised after the work began, and 596 when pveproxy lost the node after sending.
            return MaybeApplied(
                self.name,
                f"{what} failed: {status} {text}; it may have been (partly) applied, so it is "
                "not repeated: check the guest and the task list before retrying",
            )
        return ApiError(self.name, f"{what} failed: {status} {text}", status)

    # -- tasks (shared polling) ---------------------------------------------------------------

    def _wait(
        self,
        read: Callable[[], TaskStatus],
        label: str,
        timeout_s: float,
        poll_s: float,
        first_poll_s: float = 0.25,
        read_first: bool = True,
    ) -> TaskStatus:
        """The one task poller: read, then wait ``first_poll_s``, 1.5x longer each time up to
        ``poll_s`` (short tasks end in well under a second, long ones cost few requests).
        ``read_first=False``: wait ``first_poll_s`` before the first read (a task just started
        is running; reading it at once costs a request and the node's time)."""
        deadline = time.monotonic() + timeout_s
        interval = min(first_poll_s, poll_s)
        if not read_first:
            self.sleep(min(interval, timeout_s))
            interval = min(interval * 1.5, poll_s)
        while True:
            status = read()
            if not status.running:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TaskTimeout(
                    self.name,
                    f"task {label} still running after {timeout_s:g}s (left running; see the "
                    "task list)",
                )
            self.sleep(min(interval, remaining))
            interval = min(interval * 1.5, poll_s)

    @staticmethod
    def _log_lines(data: Any) -> list[str]:
        rows = sorted((r for r in data or [] if isinstance(r, dict)), key=lambda r: r.get("n", 0))
        return [str(r.get("t", "")) for r in rows]


def _wire(value: Any) -> Any:
    """Parameter values as Proxmox wants them: booleans as 1/0."""
    if isinstance(value, bool):
        return int(value)
    return value


class PveClient(ProxmoxClient):
    """Proxmox VE cluster API (``systems.proxmox``)."""

    service = "PVE"
    privileges = _PVE_PRIVILEGES

    def __init__(self, system: ProxmoxSettings, token_secret: SecretStr) -> None:
        super().__init__(system, token_secret, name="proxmox", default_port=8006)

    # -- cluster and nodes --------------------------------------------------------------------

    def version(self) -> PveVersion:
        return PveVersion.model_validate(self.get("version"))

    def nodes(self) -> list[PveNode]:
        return [PveNode.model_validate(n) for n in self.get("nodes")]

    def cluster_status(self) -> list[PveClusterMember]:
        """``GET /cluster/status``: the cluster entry and one entry per node with its address."""
        return [PveClusterMember.model_validate(m) for m in self.get("cluster/status") or []]

    # -- guests -------------------------------------------------------------------------------

    def guests(self) -> list[PveGuest]:
        """Every LXC and QEMU guest of the cluster, templates included."""
        return [PveGuest.model_validate(g) for g in self.get("cluster/resources", type="vm")]

    # -- tasks --------------------------------------------------------------------------------

    def task_status(self, node: str, upid: str) -> PveTaskStatus:
        return PveTaskStatus.model_validate(self.get(f"nodes/{node}/tasks/{upid}/status"))

    def wait_task(
        self,
        node: str,
        upid: str,
        timeout_s: float = 3600.0,
        poll_s: float = 2.0,
        *,
        first_poll_s: float = 0.25,
        read_first: bool = True,
    ) -> PveTaskStatus:
        """Poll until the task stops; raise :class:`TaskTimeout` when it outlives ``timeout_s``
        (``read_first=False``: the first read after ``first_poll_s``, for a task just started)."""
        status = self._wait(
            lambda: self.task_status(node, upid),
            f"{upid} on {node}",
            timeout_s,
            poll_s,
            first_poll_s,
            read_first,
        )
        assert isinstance(status, PveTaskStatus)
        return status

    def task_log(self, node: str, upid: str) -> list[str]:
        """Every line of the task's log (``limit=0``: PVE's default stops at 50 lines)."""
        return self._log_lines(self.get(f"nodes/{node}/tasks/{upid}/log", start=0, limit=0))

    # -- backups and restores (backups flow, restore drill) ------------------------------------

    def tasks(
        self,
        node: str,
        *,
        vmid: int | None = None,
        typefilter: str | None = None,
        source: str = "all",
        since: int | None = None,
        limit: int = 500,
    ) -> list[PveTaskItem]:
        """Tasks of one node, newest first (``source``: archive | active | all)."""
        data = self.get(
            f"nodes/{node}/tasks",
            vmid=vmid,
            typefilter=typefilter,
            source=source,
            since=since,
            limit=limit,
        )
        return [PveTaskItem.model_validate(t) for t in data or []]

    def cluster_tasks(self) -> list[PveTaskItem]:
        """Recent tasks of every node (``/cluster/tasks``; PVE keeps a short list, newest first)."""
        return [PveTaskItem.model_validate(t) for t in self.get("cluster/tasks") or []]

    def vzdump(
        self,
        node: str,
        vmid: int,
        storage: str,
        *,
        mode: str = "snapshot",
        compress: str | None = None,
        notes_template: str | None = None,
        protected: bool | None = None,
    ) -> str:
        """Start a backup of one guest; returns the UPID, or ``"OK"`` when the guest is not on
        ``node``. Changes the lab. Never retried once sent (see the module docstring)."""
        return str(
            self.post(
                f"nodes/{node}/vzdump",
                vmid=str(vmid),
                storage=storage,
                mode=mode,
                compress=compress,
                protected=protected,
                **{"notes-template": notes_template},
            )
        )

    def storages(self, node: str, content: str | None = None) -> list[PveStorage]:
        return [
            PveStorage.model_validate(s)
            for s in self.get(f"nodes/{node}/storage", content=content) or []
        ]

    def storage_configs(self) -> list[PveStorageConfig]:
        """The cluster's storage definitions (``GET /storage``): a PBS storage's datastore and
        namespace. Lists only storages the token may audit."""
        return [PveStorageConfig.model_validate(s) for s in self.get("storage") or []]

    def backup_volumes(
        self, node: str, storage: str, vmid: int | None = None
    ) -> list[PveBackupVolume]:
        """Backups on a storage as ``node`` sees it (PBS storages: the datastore's snapshots)."""
        data = self.get(f"nodes/{node}/storage/{storage}/content", content="backup", vmid=vmid)
        return [PveBackupVolume.model_validate(v) for v in data or []]

    def backup_jobs(self) -> list[PveBackupJob]:
        return [PveBackupJob.model_validate(j) for j in self.get("cluster/backup") or []]

    def replication_jobs(self) -> list[PveReplicationJob]:
        """Every storage replication job of the cluster (``/cluster/replication``)."""
        data = self.get("cluster/replication")
        return [PveReplicationJob.model_validate(j) for j in data or []]

    def replication_status(self, node: str) -> list[PveReplicationState]:
        """The replication jobs of the guests on ``node`` with their last sync, failures and
        next run (``pvesr status``), disabled jobs included."""
        data = self.get(f"nodes/{node}/replication")
        return [PveReplicationState.model_validate(j) for j in data or []]

    def replication_log(self, node: str, job: str) -> list[str]:
        """The log ``node`` keeps of replication job ``job``'s last run (every line:
        ``limit=0``), ``<local time> <job>: <message>`` each."""
        return self._log_lines(self.get(f"nodes/{node}/replication/{job}/log", start=0, limit=0))

    def not_backed_up(self) -> list[PveGuestRef]:
        """Guests that no scheduled backup job covers."""
        data = self.get("cluster/backup-info/not-backed-up")
        return [PveGuestRef.model_validate(g) for g in data or []]

    def guest_state(self, node: str, kind: str, vmid: int) -> PveGuestState:
        data = self.get(f"nodes/{node}/{kind}/{vmid}/status/current")
        return PveGuestState.model_validate(data)

    def restore(
        self,
        node: str,
        kind: str,
        vmid: int,
        volid: str,
        storage: str,
        *,
        unique: bool = True,
        pool: str | None = None,
    ) -> str:
        """Restore backup ``volid`` as a NEW guest ``vmid`` (refused by PVE when it exists),
        added to ``pool`` once restored. Changes the lab; returns the UPID."""
        if kind == "lxc":
            return str(
                self.post(
                    f"nodes/{node}/lxc",
                    vmid=vmid,
                    ostemplate=volid,
                    restore=True,
                    storage=storage,
                    unique=unique,
                    pool=pool,
                )
            )
        return str(
            self.post(
                f"nodes/{node}/qemu",
                vmid=vmid,
                archive=volid,
                storage=storage,
                unique=unique,
                pool=pool,
            )
        )

    def restore_over(self, node: str, kind: str, vmid: int, volid: str) -> str:
        """Restore backup ``volid`` OVER the existing (stopped) guest ``vmid``, as
        ``pct restore --force`` / ``qmrestore --force`` do; its disks go back to the storages
        its backed-up config names. Changes the lab; returns the UPID."""
        if kind == "lxc":
            return str(
                self.post(
                    f"nodes/{node}/lxc", vmid=vmid, ostemplate=volid, restore=True, force=True
                )
            )
        return str(self.post(f"nodes/{node}/qemu", vmid=vmid, archive=volid, force=True))

    def permissions(self, path: str) -> dict[str, bool]:
        """The privileges this token holds on ``path`` (``GET /access/permissions``: every user
        and token may read its own), each with its propagate flag."""
        # ``path`` is also get()'s own first parameter, hence the direct call.
        data = self._call("GET", "access/permissions", {"path": path}) or {}
        held = data.get(path) if isinstance(data, dict) else None
        return {str(k): bool(v) for k, v in (held or {}).items()}

    def guest_config(self, node: str, kind: str, vmid: int) -> PveGuestConfig:
        """The guest's config (pending changes applied) with its ``digest``."""
        return PveGuestConfig.model_validate(self.get(f"nodes/{node}/{kind}/{vmid}/config"))

    def set_guest_config(
        self,
        node: str,
        kind: str,
        vmid: int,
        values: Mapping[str, str | int],
        *,
        delete: Sequence[str] = (),
        digest: str | None = None,
    ) -> None:
        """Set config options of guest ``vmid`` (CHANGES THE LAB) with the synchronous
        ``PUT .../{lxc|qemu}/{vmid}/config``; ``digest`` makes PVE refuse when the config changed
        since it was read. A running VM may keep some changes pending until it restarts."""
        self.put(
            f"nodes/{node}/{kind}/{vmid}/config",
            digest=digest,
            delete=",".join(delete) or None,
            **values,
        )

    def power(self, node: str, kind: str, vmid: int, action: str) -> str:
        """start | stop | shutdown a guest. Changes the lab; returns the UPID."""
        return str(self.post(f"nodes/{node}/{kind}/{vmid}/status/{action}"))

    def migrate(self, node: str, kind: str, vmid: int, target: str, *, running: bool) -> str:
        """Migrate guest ``vmid`` to ``target``: a running VM live (``online``), a running
        container by restart (``restart``). Changes the lab; returns the UPID."""
        flag = ({"online": True} if kind == "qemu" else {"restart": True}) if running else {}
        return str(self.post(f"nodes/{node}/{kind}/{vmid}/migrate", target=target, **flag))

    def destroy(self, node: str, kind: str, vmid: int, *, purge: bool = True) -> str:
        """Destroy guest ``vmid`` and its disks. Changes the lab; returns the UPID."""
        return str(self.delete(f"nodes/{node}/{kind}/{vmid}", purge=purge))

    # -- node certificates (certificates flow) ------------------------------------------------

    def certificates_info(self, node: str) -> list[PveCertificateInfo]:
        """The node's certificate files (root CA, pve-ssl, pveproxy-ssl) with notafter."""
        return [
            PveCertificateInfo.model_validate(c)
            for c in self.get(f"nodes/{node}/certificates/info")
        ]

    def acme_domains_configured(self, node: str) -> bool:
        """True when the node config has an ACME domain list (``acme``/``acmedomainN``)."""
        conf = self.get(f"nodes/{node}/config") or {}
        return any(k == "acme" or k.startswith("acmedomain") for k in conf)

    def renew_acme_certificate(self, node: str, *, force: bool = False) -> str:
        """Order the renewal of the node's ACME certificate. Changes the node; returns the UPID."""
        return str(self.put(f"nodes/{node}/certificates/acme/certificate", force=force))

    # -- snapshots (LXC and QEMU) and node status (patch flow) -------------------------------------

    def node_status(self, node: str) -> PveNodeStatus:
        return PveNodeStatus.model_validate(self.get(f"nodes/{node}/status"))

    def snapshots(self, node: str, vmid: int, kind: str = "lxc") -> list[PveSnapshot]:
        """Snapshots of guest ``vmid`` (``kind`` lxc or qemu), without the pseudo entry
        ``current``."""
        data = self.get(f"nodes/{node}/{_kind(kind)}/{vmid}/snapshot") or []
        return [PveSnapshot.model_validate(s) for s in data if s.get("name") != "current"]

    def snapshot_create(
        self, node: str, vmid: int, name: str, description: str = "", kind: str = "lxc"
    ) -> str:
        """Snapshot guest ``vmid`` as ``name`` (a VM without its RAM). Changes the lab; returns
        the UPID."""
        return str(
            self.post(
                f"nodes/{node}/{_kind(kind)}/{vmid}/snapshot",
                snapname=name,
                description=description,
            )
        )

    def snapshot_rollback(
        self, node: str, vmid: int, name: str, *, start: bool = False, kind: str = "lxc"
    ) -> str:
        """Roll guest ``vmid`` back to snapshot ``name`` (PVE stops a running guest for it;
        ``start`` starts it again). Changes the lab; returns the UPID."""
        params = {"start": True} if start else {}
        path = f"nodes/{node}/{_kind(kind)}/{vmid}/snapshot/{name}/rollback"
        return str(self.post(path, **params))

    def snapshot_delete(self, node: str, vmid: int, name: str, kind: str = "lxc") -> str:
        """Delete snapshot ``name`` of guest ``vmid``. Changes the lab; returns the UPID."""
        return str(self.delete(f"nodes/{node}/{_kind(kind)}/{vmid}/snapshot/{name}"))

    # -- QEMU guest agent (VMs without SSH) ---------------------------------------------------

    def agent_ping(self, node: str, vmid: int) -> None:
        """Ask VM ``vmid``'s guest agent to answer; raises ApiError when it is not running.
        Only reads."""
        self.post_read(f"nodes/{node}/qemu/{vmid}/agent/ping")

    def agent_exec(self, node: str, vmid: int, argv: Sequence[str]) -> AgentExecStarted:
        """Start ``argv`` (program + arguments, no shell) in VM ``vmid`` through its guest agent.
        What it changes depends on the command; returns the agent's pid."""
        data = self.post(f"nodes/{node}/qemu/{vmid}/agent/exec", command=list(argv))
        return AgentExecStarted.model_validate(data)

    def agent_exec_status(self, node: str, vmid: int, pid: int) -> AgentExecStatus:
        """Where process ``pid`` of the guest agent is (the agent forgets it once it reported
        it exited). Only reads."""
        data = self.get(f"nodes/{node}/qemu/{vmid}/agent/exec-status", pid=pid)
        return AgentExecStatus.model_validate(data)


def _kind(kind: str) -> str:
    """The API's path word of a guest kind (a value from outside never shapes a path)."""
    if kind not in ("lxc", "qemu"):
        raise ValueError(f"guest kind {kind!r}: lxc or qemu")
    return kind


class PbsClient(ProxmoxClient):
    """Proxmox Backup Server API (``systems.pbs``); task URLs use the node ``localhost``."""

    service = "PBS"
    privileges = _PBS_PRIVILEGES
    node = "localhost"

    def __init__(self, system: PbsSettings, token_secret: SecretStr) -> None:
        super().__init__(system, token_secret, name="pbs", default_port=8007)
        self.datastore = system.datastore

    # -- server and datastores ----------------------------------------------------------------

    def version(self) -> PbsVersion:
        return PbsVersion.model_validate(self.get("version"))

    def datastores(self) -> list[PbsDatastore]:
        return [PbsDatastore.model_validate(d) for d in self.get("admin/datastore")]

    def datastore_configs(self) -> list[PbsDatastoreConfig]:
        """The datastores' configs (``gc-schedule`` among them)."""
        return [PbsDatastoreConfig.model_validate(d) for d in self.get("config/datastore") or []]

    # -- snapshots ----------------------------------------------------------------------------

    def snapshots(
        self,
        store: str | None = None,
        backup_type: str | None = None,
        backup_id: str | int | None = None,
        ns: str | None = None,
    ) -> list[PbsSnapshot]:
        """Backup snapshots of ``store`` (default: the configured datastore), optionally of one
        group (``backup_type`` vm|ct|host and ``backup_id``)."""
        params: dict[str, Any] = {"backup-type": backup_type, "ns": ns}
        if backup_id is not None:
            params["backup-id"] = str(backup_id)
        data = self.get(f"admin/datastore/{store or self.datastore}/snapshots", **params)
        return [PbsSnapshot.model_validate(s) for s in data]

    def groups(self, store: str | None = None, ns: str | None = None) -> list[PbsGroup]:
        """Backup groups of ``store`` in namespace ``ns`` (root: None), each with its newest
        snapshot's time."""
        data = self.get(f"admin/datastore/{store or self.datastore}/groups", ns=ns or None)
        return [PbsGroup.model_validate(g) for g in data or []]

    def remote_groups(self, remote: str, store: str, ns: str | None = None) -> list[PbsGroup]:
        """Backup groups of datastore ``store`` on ``remote`` (a PBS this one syncs with) in
        namespace ``ns``, as this PBS reads them over the remote's own credentials."""
        data = self.get(f"config/remote/{remote}/scan/{store}/groups", namespace=ns or None)
        return [PbsGroup.model_validate(g) for g in data or []]

    # -- tasks --------------------------------------------------------------------------------

    def task_status(self, upid: str) -> PbsTaskStatus:
        return PbsTaskStatus.model_validate(self.get(f"nodes/{self.node}/tasks/{upid}/status"))

    def wait_task(self, upid: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> PbsTaskStatus:
        """Poll until the task stops; raise :class:`TaskTimeout` when it outlives ``timeout_s``."""
        status = self._wait(lambda: self.task_status(upid), upid, timeout_s, poll_s)
        assert isinstance(status, PbsTaskStatus)
        return status

    def task_log(self, upid: str) -> list[str]:
        return self._log_lines(self.get(f"nodes/{self.node}/tasks/{upid}/log", start=0, limit=0))

    # -- maintenance state (backups flow's audit) -----------------------------------------------

    def gc_status(self, store: str | None = None) -> PbsGcStatus:
        return PbsGcStatus.model_validate(self.get(f"admin/datastore/{store or self.datastore}/gc"))

    def verify_jobs(self, store: str | None = None) -> list[PbsJobStatus]:
        data = self.get("admin/verify", store=store or self.datastore)
        return [PbsJobStatus.model_validate(j) for j in data or []]

    def prune_jobs(self, store: str | None = None) -> list[PbsJobStatus]:
        data = self.get("admin/prune", store=store or self.datastore)
        return [PbsJobStatus.model_validate(j) for j in data or []]

    def sync_jobs(self) -> list[PbsSyncJob]:
        """Every sync job, pull and push (``sync-direction=all``; older PBS ignore it)."""
        data = self.get("admin/sync", **{"sync-direction": "all"})
        return [PbsSyncJob.model_validate(j) for j in data or []]

    def tasks(
        self, typefilter: str | None = None, since: int | None = None, limit: int = 500
    ) -> list[PbsTaskItem]:
        data = self.get(f"nodes/{self.node}/tasks", typefilter=typefilter, since=since, limit=limit)
        return [PbsTaskItem.model_validate(t) for t in data or []]

    def prune_dry_run(
        self,
        backup_type: str,
        backup_id: str,
        keep: dict[str, int],
        store: str | None = None,
        ns: str | None = None,
    ) -> list[dict[str, Any]]:
        """What a prune of one group (in namespace ``ns``; root: None) would keep and remove;
        changes nothing."""
        return list(
            self.post_read(
                f"admin/datastore/{store or self.datastore}/prune",
                **{
                    "backup-type": backup_type,
                    "backup-id": backup_id,
                    "ns": ns or None,
                    "dry-run": True,
                    **keep,
                },
            )
            or []
        )
