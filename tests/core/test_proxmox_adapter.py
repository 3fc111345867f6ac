"""PveClient / PbsClient: payload models from fixture files, the error mapping against a scripted
HTTPS server, and the real thing against the sandbox's PVE and PBS."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from labops.config import load_config
from labops.config.secrets import resolve_secret
from labops.config.systems import HttpRetry, PbsSystem, ProxmoxSystem
from labops.errors import ApiError, AuthFailed, MaybeApplied, Unreachable
from labops.models import PbsSnapshot, PbsUpid, PveGuest, PveTaskStatus, PveUpid, is_upid
from labops.proxmox import PbsClient, PveClient, TaskTimeout
from tests.core.test_http_policy import BIG, CAPPED, SLOW, TRICKLED, WELL_BEFORE
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.scripted_http import Reply, ScriptedServer
from tests.fixtures.sshd import free_port

DATA = Path(__file__).parents[1] / "data" / "proxmox"
FAST = HttpRetry(attempts=3, backoff_s=0.01, backoff_max_s=0.05, jitter=0.0, timeout_s=2)
SECRET = SecretStr("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


# -- payload models (pure) ---------------------------------------------------------------------


def test_guests_from_cluster_resources() -> None:
    guests = [PveGuest.model_validate(g) for g in _load("cluster_resources.json")["data"]]
    dns, tpl, odd = guests
    assert (dns.vmid, dns.tags, dns.template, dns.label) == (
        101,
        ["dns", "infra"],
        False,
        "guest 101 (dns)",
    )
    assert dns.running
    assert tpl.template is True and tpl.type == "qemu"
    assert odd.vmid == 105 and odd.tags == ["app", "nobackup", "rpo-7d"] and odd.lock == "backup"
    assert odd.label == "guest 105" and not odd.running


@pytest.mark.parametrize("case", _load("task_status.json"), ids=lambda c: c["case"])
def test_task_status(case: dict[str, Any]) -> None:
    status = PveTaskStatus.model_validate(case["data"])
    got = {k: getattr(status, k) for k in case["expect"]}
    assert got == case["expect"]


def test_pbs_snapshots_kebab_case() -> None:
    ct, host = [PbsSnapshot.model_validate(s) for s in _load("pbs_snapshots.json")["data"]]
    assert (ct.backup_type, ct.backup_id, ct.vmid, ct.size) == ("ct", "101", 101, 734004676)
    assert ct.files[1].crypt_mode == "none" and ct.verified_ok is True
    assert ct.time.isoformat() == "2024-05-24T00:00:03+00:00"
    assert host.vmid is None and host.protected and host.verified_ok is None


def test_upids() -> None:
    pve = PveUpid.parse("UPID:pve1:0032A1F2:0B5E27C1:6650A1B2:vzdump:101:root@pam!prefect:")
    assert (pve.node, pve.type, pve.id, pve.user) == ("pve1", "vzdump", "101", "root@pam!prefect")
    assert pve.starttime.timestamp() == 1716560306
    pbs = PbsUpid.parse(
        "UPID:pbs:000004D2:0000ABCD:00000002:66510000:verificationjob:store1\\x3av\\x2ddaily:"
        "root@pam:"
    )
    assert (pbs.worker_type, pbs.worker_id, pbs.authid) == (
        "verificationjob",
        "store1:v-daily",
        "root@pam",
    )
    with pytest.raises(ValueError):
        PveUpid.parse(pbs.model_dump()["node"])
    with pytest.raises(ValueError, match="not a PVE UPID"):
        PveUpid.parse("UPID:pbs:000004D2:0000ABCD:00000002:66510000:verify:store1:root@pam:")
    assert is_upid("UPID:x") and not is_upid("OK") and not is_upid(None)


# -- error mapping against a scripted HTTPS server -----------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer(tls=True, cert_dir=tmp_path) as server:
        yield server


def _pve(server: ScriptedServer, retry: HttpRetry = FAST) -> PveClient:
    system = ProxmoxSystem(
        url=server.url,
        token_id="root@pam!labops",
        token_secret="env:UNUSED",
        tls={"ca_bundle": server.ca_file},
        retry=retry,
    )
    return PveClient(system, SECRET)


@pytest.mark.parametrize("body_only", [False, True], ids=["trickled-head", "trickled-body"])
def test_a_trickling_answer_is_abandoned_at_the_deadline(
    fake: ScriptedServer, body_only: bool
) -> None:
    """requests bounds one socket read only: the deadline of the HTTP policy holds here too."""
    fake.default = Reply(200, TRICKLED, trickle_s=1.0, trickle_body_only=body_only)
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        _pve(fake, SLOW).version()
    assert time.monotonic() - started < WELL_BEFORE
    assert "GET /version: no complete answer within 2s (retry.deadline_s)" in str(err.value)


def test_a_trickled_post_may_have_been_applied_and_is_not_sent_again(fake: ScriptedServer) -> None:
    fake.default = Reply(200, {"data": "UPID:pve1:x"}, trickle_s=1.0, trickle_body_only=True)
    started = time.monotonic()
    with pytest.raises(MaybeApplied) as err:
        _pve(fake, SLOW.model_copy(update={"attempts": 3})).vzdump("pve1", 101, "pbs")
    assert time.monotonic() - started < WELL_BEFORE
    assert "no complete answer within 2s" in str(err.value)
    assert len(fake.requests) == 1


def test_an_answer_over_the_size_cap_is_refused_not_retried(fake: ScriptedServer) -> None:
    fake.default = Reply(200, BIG)
    with pytest.raises(ApiError) as err:
        _pve(fake, CAPPED).nodes()
    assert "answer larger than 1000 bytes (retry.max_response_bytes)" in str(err.value)
    assert len(fake.requests) == 1
    assert (
        _pve(fake, CAPPED.model_copy(update={"max_response_bytes": 100_000})).get("nodes")
        == (BIG["data"])
    )


def test_5xx_is_retried_and_the_token_header_sent(fake: ScriptedServer) -> None:
    fake.script = [
        Reply(500, {"data": None}, reason="got timeout"),
        Reply(596, {"data": None}, reason="broken pipe"),
    ]
    fake.default = Reply(200, {"data": {"version": "9.1.1", "release": "9.1", "repoid": "x"}})
    assert _pve(fake).version().version == "9.1.1"
    assert len(fake.requests) == 3
    assert fake.requests[0].path == "/api2/json/version"
    auth = fake.requests[0].headers["Authorization"]
    assert auth == f"PVEAPIToken=root@pam!labops={SECRET.get_secret_value()}"


def test_4xx_carries_pve_reason_phrase(fake: ScriptedServer) -> None:
    fake.default = Reply(
        400,
        {"data": None, "errors": {"vmid": "type check ('integer') failed - got 'abc'"}},
        reason="Parameter verification failed.",
    )
    with pytest.raises(ApiError) as err:
        _pve(fake).get("nodes/pve1/lxc/abc/status/current")
    assert len(fake.requests) == 1
    assert err.value.status == 400 and err.value.system == "proxmox"
    assert "Parameter verification failed." in str(err.value)
    assert "type check ('integer') failed" in str(err.value)


def test_401_names_the_token_not_the_secret(fake: ScriptedServer) -> None:
    fake.default = Reply(401, "", reason="Authentication failed!")
    with pytest.raises(AuthFailed) as err:
        _pve(fake).nodes()
    text = str(err.value)
    assert len(fake.requests) == 1
    assert text.startswith("proxmox: token root@pam!labops refused for GET /nodes")
    assert "token_secret" in text and SECRET.get_secret_value() not in text


def test_403_hints_at_the_missing_privilege(fake: ScriptedServer) -> None:
    fake.default = Reply(
        403, {"data": None}, reason="Permission check failed (/nodes/pve1, Sys.Modify)"
    )
    with pytest.raises(AuthFailed, match=r"grant it Sys\.Modify on /nodes/<node>"):
        _pve(fake).get("nodes/pve1/apt/update")


def test_post_is_not_repeated_when_the_answer_is_lost(fake: ScriptedServer) -> None:
    fake.default = Reply(200, {"data": "UPID:pve1:1:2:3:vzdump:101:root@pam:"}, delay_s=1.0)
    retry = HttpRetry(attempts=3, backoff_s=0.01, jitter=0.0, timeout_s=0.3)
    with pytest.raises(ApiError, match="it may have been applied"):
        _pve(fake, retry).post("nodes/pve1/vzdump", vmid=101, protected=True, remove=False)
    assert len(fake.requests) == 1  # never a second backup
    assert fake.requests[0].body == b"vmid=101&protected=1&remove=0"  # PVE wants 1/0


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, "QEMU guest agent is not running"),  # PVE's 500 also follows partial work
        (502, "Bad Gateway"),  # a proxy in front of pveproxy, after forwarding
        (596, "Broken pipe"),  # pveproxy lost the node after sending it the request
    ],
)
def test_a_change_answered_5xx_is_not_sent_again(
    fake: ScriptedServer, status: int, reason: str
) -> None:
    fake.default = Reply(status, {"data": None}, reason=reason)
    with pytest.raises(MaybeApplied, match=f"{status} {reason}.*not repeated"):
        _pve(fake).post("nodes/pve1/qemu/100/agent/exec", command=["apt-get", "upgrade"])
    assert len(fake.requests) == 1  # the old policy sent it 4 times


def test_a_change_refused_before_any_work_is_retried(fake: ScriptedServer) -> None:
    """429, 503 and pveproxy's 595 (it could not connect to the node: nothing forwarded)."""
    fake.script = [
        Reply(595, {"data": None}, reason="Errors during connection establishment"),
        Reply(503, {"data": None}, reason="Service Unavailable"),
        Reply(429, {"data": None}, reason="Too Many Requests"),
    ]
    fake.default = Reply(200, {"data": "UPID:pve1:1:2:3:vzdump:101:root@pam:"})
    four = FAST.model_copy(update={"attempts": 4})
    assert _pve(fake, four).post("nodes/pve1/vzdump", vmid=101).startswith("UPID:")
    assert len(fake.requests) == 4


def test_a_post_that_only_reads_is_retried_as_a_get(fake: ScriptedServer) -> None:
    fake.script = [Reply(500, {"data": None}, reason="got timeout")]
    fake.default = Reply(200, {"data": {"result": {}}})
    _pve(fake).agent_ping("pve1", 100)
    assert len(fake.requests) == 2


def test_get_is_retried_after_a_timeout(fake: ScriptedServer) -> None:
    fake.script = [Reply(200, {"data": []}, delay_s=1.0)]
    fake.default = Reply(200, {"data": [{"node": "pve1", "status": "online"}]})
    retry = HttpRetry(attempts=3, backoff_s=0.01, jitter=0.0, timeout_s=0.3)
    assert [n.node for n in _pve(fake, retry).nodes()] == ["pve1"]
    assert len(fake.requests) == 2


def test_refused_connection_is_unreachable_for_post_too() -> None:
    system = ProxmoxSystem(
        url=f"https://127.0.0.1:{free_port()}",
        token_id="root@pam!labops",
        token_secret="env:UNUSED",
        retry=FAST,
    )
    started = time.monotonic()
    with pytest.raises(Unreachable, match="after 3 tries"):
        PveClient(system, SECRET).post("nodes/pve1/vzdump", vmid=101)
    assert time.monotonic() - started < 2


def test_untrusted_certificate_is_not_retried(fake: ScriptedServer) -> None:
    system = ProxmoxSystem(
        url=fake.url, token_id="root@pam!labops", token_secret="env:UNUSED", retry=FAST
    )  # no ca_bundle: the scripted server's CA is unknown
    with pytest.raises(ApiError, match=r"tls\.ca_bundle"):
        PveClient(system, SECRET).version()
    assert fake.requests == []


def test_pbs_plain_text_errors(fake: ScriptedServer) -> None:
    system = PbsSystem(
        url=fake.url,
        token_id="root@pam!labops",
        token_secret="env:UNUSED",
        tls={"ca_bundle": fake.ca_file},
        retry=FAST,
    )
    fake.default = Reply(400, "no such snapshot ct/101/2024-05-24T00:00:03Z")
    with pytest.raises(ApiError) as err:
        PbsClient(system, SECRET).snapshots(backup_type="ct", backup_id=101)
    assert "no such snapshot ct/101" in str(err.value) and err.value.system == "pbs"
    assert fake.requests[0].path.startswith("/api2/json/admin/datastore/store1/snapshots?")
    assert fake.requests[0].headers["Authorization"].startswith("PBSAPIToken=root@pam!labops:")


def test_proxmoxer_bodies_stay_out_of_the_logs(
    fake: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.default = Reply(200, {"data": [{"node": "pve1", "status": "online", "secretish": "xyz"}]})
    _pve(fake).nodes()
    assert "secretish" not in caplog.text


# -- against the sandbox -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_systems(sandbox: SandboxHandle) -> tuple[ProxmoxSystem, PbsSystem]:
    cfg = load_config(str(sandbox.config_path))
    assert cfg.systems.proxmox is not None and cfg.systems.pbs is not None
    return cfg.systems.proxmox, cfg.systems.pbs


@pytest.fixture(scope="module")
def pve(lab_systems: tuple[ProxmoxSystem, PbsSystem]) -> PveClient:
    system = lab_systems[0].model_copy(update={"retry": FAST})
    return PveClient(system, resolve_secret(system.token_secret))


@pytest.fixture(scope="module")
def pbs(lab_systems: tuple[ProxmoxSystem, PbsSystem]) -> PbsClient:
    system = lab_systems[1].model_copy(update={"retry": FAST})
    return PbsClient(system, resolve_secret(system.token_secret))


def test_sandbox_inventory(pve: PveClient) -> None:
    assert pve.version().release
    nodes = {n.node: n for n in pve.nodes()}
    assert {"pve1", "pve2", "pve3", "pve4"} <= set(nodes)
    guests = pve.guests()
    assert len(guests) >= 57
    assert all(isinstance(g.vmid, int) for g in guests)
    template = next(g for g in guests if g.vmid == 9000)
    assert template.template and template.type == "qemu"
    assert any("nobackup" in g.tags for g in guests)


def test_sandbox_backup_task_waited_to_its_end(pve: PveClient) -> None:
    guest = next(g for g in pve.guests() if g.type == "lxc" and g.running and g.node == "pve1")
    upid = pve.post(f"nodes/{guest.node}/vzdump", vmid=guest.vmid, mode="snapshot")
    assert is_upid(upid)
    with pytest.raises(TaskTimeout, match=r"still running after 0\.001s"):
        pve.wait_task(guest.node, upid, timeout_s=0.001)
    status = pve.wait_task(guest.node, upid, timeout_s=30, poll_s=0.05)
    assert status.succeeded and status.exitstatus == "OK" and status.type == "vzdump"
    log = pve.task_log(guest.node, upid)
    assert log[0].startswith("INFO: starting new backup job")
    assert log[-1] == "TASK OK"


def test_sandbox_wrong_token_is_auth_failed(lab_systems: tuple[ProxmoxSystem, PbsSystem]) -> None:
    system = lab_systems[0].model_copy(update={"retry": FAST})
    with pytest.raises(AuthFailed, match="token root@pam!labops refused"):
        PveClient(system, SecretStr("not-the-secret")).version()
    pbs_system = lab_systems[1].model_copy(update={"retry": FAST})
    with pytest.raises(AuthFailed, match=r"^pbs: token root@pam!labops refused .*401"):
        PbsClient(pbs_system, SecretStr("not-the-secret")).version()


def test_sandbox_server_errors_are_retried(
    sandbox_clean: SandboxHandle,
    lab_systems: tuple[ProxmoxSystem, PbsSystem],
    caplog: pytest.LogCaptureFixture,
) -> None:
    retry = HttpRetry(attempts=6, backoff_s=0.001, backoff_max_s=0.01, jitter=0.0, timeout_s=5)
    system = lab_systems[0].model_copy(update={"retry": retry})
    client = PveClient(system, resolve_secret(system.token_secret))
    sandbox_clean.set_faults("pve", error_rate=0.1)
    caplog.set_level(logging.DEBUG, logger="labops.http")
    results = [len(client.nodes()) for _ in range(80)]
    assert set(results) == {4}
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all("HTTP 500" in r.getMessage() for r in retries)


def test_sandbox_pbs_snapshots_and_verify_task(pbs: PbsClient) -> None:
    snapshots = pbs.snapshots()
    assert snapshots and all(s.backup_type in ("vm", "ct", "host") for s in snapshots)
    first = next(s for s in snapshots if s.vmid is not None)
    group = pbs.snapshots(backup_type=first.backup_type, backup_id=first.backup_id)
    assert group and {s.backup_id for s in group} == {first.backup_id}
    upid = pbs.post(
        f"admin/datastore/{pbs.datastore}/verify",
        **{
            "backup-type": first.backup_type,
            "backup-id": first.backup_id,
            "backup-time": first.backup_time,
            "ignore-verified": False,
        },
    )
    assert PbsUpid.parse(upid).worker_type == "verify_snapshot"
    status = pbs.wait_task(upid, timeout_s=30, poll_s=0.05)
    assert not status.running and status.exitstatus is not None
    assert pbs.task_log(upid)
