"""PVE storage replication over a real connection: labops's PVE client reads the sandbox's
replication jobs (``/cluster/replication``) and each node's ``pvesr status``
(``/nodes/{node}/replication``); the core makes one off-site row per job: the healthy job fresh,
the failing one a problem with its error, the disabled one named; a node whose replication
state cannot be read leaves its guests' rows could-not-check."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from labops.backups.models import BackupGuest
from labops.backups.offsite import OffsiteStatus
from labops.backups.replication import log_reason, replication_rows
from labops.config import load_config
from labops.config.policies.backups import OffsitePolicy
from labops.config.secrets import resolve_secret
from labops.config.systems import HttpRetry
from labops.errors import LabopsError
from labops.models.pve import PveReplicationState
from labops.proxmox import PveClient
from tests.fixtures.sandbox import SandboxHandle

FAST = HttpRetry(attempts=2, backoff_s=0.01, backoff_max_s=0.05, jitter=0.0, timeout_s=10)


@pytest.fixture
def pve(sandbox_clean: SandboxHandle) -> Iterator[PveClient]:
    system = load_config(str(sandbox_clean.config_path)).systems.proxmox
    assert system is not None
    yield PveClient(system.model_copy(update={"retry": FAST}), resolve_secret(system.token_secret))


def _status(
    pve: PveClient, nodes: set[str]
) -> tuple[dict[str, PveReplicationState], dict[str, str]]:
    status: dict[str, PveReplicationState] = {}
    unreadable: dict[str, str] = {}
    for node in sorted(nodes):
        try:
            status |= {s.id: s for s in pve.replication_status(node)}
        except LabopsError as exc:
            unreadable[node] = str(exc)
    return status, unreadable


def test_replication_jobs_and_status_read_from_the_sandbox(pve: PveClient) -> None:
    jobs = {j.id: j for j in pve.replication_jobs()}
    guests = {g.vmid: BackupGuest.from_pve(g) for g in pve.guests()}
    assert len(jobs) == 3 and all(j.id == f"{j.guest}-{j.jobnum}" for j in jobs.values())
    disabled = [j for j in jobs.values() if j.disable]
    assert len(disabled) == 1

    nodes = {guests[j.guest].node for j in jobs.values()}
    status, unreadable = _status(pve, nodes)
    assert not unreadable and set(status) == set(jobs)  # each job on its guest's node only
    failing = [s for s in status.values() if s.fail_count > 0]
    assert len(failing) == 1 and "exit code 255" in (failing[0].error or "")
    assert all(s.next_sync for s in status.values() if not s.disable)

    now = time.time()
    replicated = [guests[j.guest] for j in jobs.values()]
    rows = {
        r.jobs[0]: r
        for r in replication_rows(replicated, list(jobs.values()), status, OffsitePolicy(), now)
    }
    by_status = {r.status: r for r in rows.values()}
    assert set(by_status) == {OffsiteStatus.OK, OffsiteStatus.SYNC_FAILED, OffsiteStatus.DISABLED}
    ok = by_status[OffsiteStatus.OK]
    assert ok.problem is None and ok.age_s is not None and ok.age_s < 3600
    assert ok.target == f"replication:{jobs[ok.jobs[0]].target}"
    bad = by_status[OffsiteStatus.SYNC_FAILED]
    assert f"replication job {bad.jobs[0]} to " in (bad.problem or "")
    assert "failed 96 time(s) in a row" in (bad.problem or "")
    off = by_status[OffsiteStatus.DISABLED]
    assert f"replication job {disabled[0].id} to {disabled[0].target} is disabled" in (
        off.problem or ""
    )
    # the status of one guest alone (pvesr status --guest)
    one = pve.get(f"nodes/{guests[ok.vmid].node}/replication", guest=ok.vmid)
    assert [s["id"] for s in one] == [ok.jobs[0]]


def test_an_unreadable_replication_state_is_could_not_check(
    sandbox_clean: SandboxHandle, pve: PveClient
) -> None:
    jobs = pve.replication_jobs()
    guests = {g.vmid: BackupGuest.from_pve(g) for g in pve.guests()}
    broken = guests[jobs[0].guest].node
    sandbox_clean.set_faults("pve", extra={"replication_unreadable": [broken]})

    status, unreadable = _status(pve, {guests[j.guest].node for j in jobs})
    assert set(unreadable) == {broken} and "pve-replication-state.json" in unreadable[broken]
    rows = replication_rows(
        [guests[j.guest] for j in jobs], jobs, status, OffsitePolicy(), time.time(), unreadable
    )
    on_broken = [r for r in rows if guests[r.vmid].node == broken]
    assert on_broken and all(
        r.status is OffsiteStatus.UNKNOWN and r.age_s is None and r.problem is None
        for r in on_broken
    )
    assert all(
        f"replication status of {broken} could not be read" in (r.unknown or "") for r in on_broken
    )
    assert all(r.status is not OffsiteStatus.UNKNOWN for r in rows if r not in on_broken)


def test_a_token_sees_the_replication_of_the_guests_it_may_audit(
    private_sandbox: SandboxHandle,
) -> None:
    """PVE lists a job only with VM.Audit on its guest: a token auditing one guest sees that
    guest's job alone, in the config and in its node's status."""
    from proxmoxer import ProxmoxAPI

    root = private_sandbox.pve()
    jobs = root.cluster.replication.get()
    seen = jobs[0]
    try:
        root.access.users.post(userid="audit@pve")
        secret = root.access.users("audit@pve").token("repl").post(privsep=0)["value"]
        root.access.acl.put(path=f"/vms/{seen['guest']}", roles="PVEAuditor", users="audit@pve")
        pve = ProxmoxAPI(
            "127.0.0.1",
            port=private_sandbox.port("pve"),
            user="audit@pve",
            token_name="repl",
            token_value=secret,
            verify_ssl=str(private_sandbox.ca_path),
            timeout=10,
        )
        assert [j["id"] for j in pve.cluster.replication.get()] == [seen["id"]]
        listed = [s["id"] for n in ("pve1", "pve2") for s in pve.nodes(n).replication.get()]
        assert listed == [seen["id"]]
    finally:
        private_sandbox.control("pve", "access-reset")


def test_a_jobs_log_is_served_on_its_guests_node_only(pve: PveClient) -> None:
    """``/nodes/{node}/replication/{id}/log``: the last run's lines on the node that ran it
    (the failing job's ends with its error, the ssh complaint before); another node has no file."""
    guests = {g.vmid: BackupGuest.from_pve(g) for g in pve.guests()}
    status, _ = _status(pve, {guests[j.guest].node for j in pve.replication_jobs()})
    failing = next(s for s in status.values() if s.fail_count > 0)
    node = guests[failing.guest].node
    lines = pve.replication_log(node, failing.id)
    assert lines[0].endswith(f"{failing.id}: start replication job")
    assert lines[-1].endswith(f"{failing.id}: end replication job with error: {failing.error}")
    assert log_reason(lines, failing.id) == f"Host key verification failed. ({failing.error})"
    healthy = next(s for s in status.values() if s.fail_count == 0 and not s.disable)
    assert (
        log_reason(pve.replication_log(guests[healthy.guest].node, healthy.id), healthy.id) is None
    )
    elsewhere = next(n for n in ("pve1", "pve2", "pve3") if n != node)
    assert pve.replication_log(elsewhere, failing.id) == [
        "unable to open file - No such file or directory"
    ]
    two = pve.get(f"nodes/{node}/replication/{failing.id}/log", start=1, limit=2)
    assert [r["n"] for r in two] == [2, 3]
