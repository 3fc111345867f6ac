"""The vzdump job against a fake PVE client: start, a lost answer adopted, a lock waited out,
a failure's reason. No network, no Prefect."""

from __future__ import annotations

from typing import Any, cast

from labops.backups.models import BackupGuest
from labops.backups.vzdump_job import VzdumpSettings, run_backup, run_lane
from labops.errors import MaybeApplied
from labops.models.pve import PveGuestState, PveTaskItem, PveTaskStatus

UPID = "UPID:pve1:0000A1B2:00C0FFEE:66000000:vzdump:101:labops@pve!ci:"


class FakePve:
    """The PVE calls the job makes, scripted: what ``vzdump`` does, the node's task list, the
    guest's lock, how tasks end and their logs."""

    def __init__(self) -> None:
        self.listed: list[PveTaskItem] = []
        self.locks: list[str | None] = []
        self.ends: list[PveTaskStatus] = []
        self.logs: dict[str, list[str]] = {}
        self.starts: list[Any] = []  # each: a UPID to answer, or an exception to raise
        self.posts = 0
        self.sleeps: list[float] = []

    def tasks(self, node: str, **_kw: Any) -> list[PveTaskItem]:
        return list(self.listed)

    def vzdump(self, node: str, vmid: int, storage: str, **_kw: Any) -> str:
        self.posts += 1
        step = self.starts.pop(0)
        if isinstance(step, Exception):
            raise step
        return str(step)

    def wait_task(self, node: str, upid: str, *_a: Any, **_kw: Any) -> PveTaskStatus:
        return self.ends.pop(0)

    def task_log(self, node: str, upid: str) -> list[str]:
        return self.logs.get(upid, [])

    def guest_state(self, node: str, kind: str, vmid: int) -> PveGuestState:
        return PveGuestState(vmid=vmid, status="running", lock=self.locks.pop(0))


def guest(lock: str | None = None) -> BackupGuest:
    return BackupGuest(vmid=101, name="web", node="pve1", type="lxc", lock=lock)


def ended(exitstatus: str, upid: str = UPID) -> PveTaskStatus:
    return PveTaskStatus(upid=upid, status="stopped", exitstatus=exitstatus, starttime=1)


def settings(**kw: Any) -> VzdumpSettings:
    return VzdumpSettings(**{"storage": "pbs", "lost_answer_wait_s": 0, "lock_retry_s": 1, **kw})


def run(pve: FakePve, g: BackupGuest, s: VzdumpSettings, logs: list[str] | None = None) -> Any:
    log = (logs if logs is not None else []).append
    return run_backup(cast(Any, pve), g, s, sleep=pve.sleeps.append, log=log)


def test_a_backup_is_started_once_and_followed_to_its_end() -> None:
    pve = FakePve()
    pve.starts = [UPID]
    pve.ends = [ended("OK")]
    out = run(pve, guest(), settings())
    assert (out.status, out.upid, out.attempts, out.adopted) == ("ok", UPID, 1, False)
    assert pve.posts == 1


def test_a_start_whose_answer_was_lost_adopts_the_task_it_began() -> None:
    pve = FakePve()
    lost = MaybeApplied("proxmox", "POST /nodes/pve1/vzdump: timed out after the request was sent")

    def lost_then_listed(*_a: Any, **_kw: Any) -> str:
        pve.posts += 1
        pve.listed = [PveTaskItem(upid=UPID, id="101", status="RUNNING")]  # the node acted on it
        raise lost

    pve.vzdump = lost_then_listed  # type: ignore[method-assign]
    pve.ends = [ended("OK")]
    logs: list[str] = []
    out = run(pve, guest(), settings(lost_answer_wait_s=30), logs)
    assert pve.posts == 1, "a lost answer is never sent again while its task shows up"
    assert (out.status, out.upid) == ("ok", UPID)
    assert any("adopting the vzdump it started" in line for line in logs), logs


def test_a_vzdump_already_running_is_waited_for_not_doubled() -> None:
    pve = FakePve()
    pve.listed = [PveTaskItem(upid=UPID, id="101", status="RUNNING")]
    pve.ends = [ended("OK")]
    out = run(pve, guest(), settings())
    assert pve.posts == 0 and out.adopted and out.status == "ok"


def test_a_locked_guest_is_waited_for_then_backed_up() -> None:
    pve = FakePve()
    pve.locks = ["snapshot", None]  # still locked at the first look, free at the second
    pve.starts = [UPID]
    pve.ends = [ended("WARNINGS: 1")]
    out = run(pve, guest(lock="snapshot"), settings(lock_wait_s=60))
    assert (out.status, out.lock_waits) == ("warning", 1)
    assert pve.sleeps == [1.0] and pve.posts == 1


def test_a_lock_held_past_the_wait_fails_without_a_start() -> None:
    pve = FakePve()
    pve.locks = ["backup"]
    out = run(pve, guest(lock="backup"), settings(lock_wait_s=0))
    assert out.status == "failed" and pve.posts == 0
    assert out.reason == "locked (backup) for longer than 0s"


def test_a_failed_backup_says_why_in_the_task_logs_words() -> None:
    pve = FakePve()
    pve.starts = [UPID]
    pve.ends = [ended("job errors")]
    pve.logs[UPID] = [
        "INFO: starting new backup job",
        "ERROR: Backup of VM 101 failed - unable to open file '/dev/zvol/x' - No space left",
        "INFO: Backup job finished with errors",
    ]
    out = run(pve, guest(), settings())
    assert out.status == "failed" and out.exitstatus == "job errors"
    assert out.reason == "unable to open file '/dev/zvol/x' - No space left"


def test_an_answer_naming_no_task_means_the_guest_is_elsewhere() -> None:
    pve = FakePve()
    pve.starts = ["OK"]
    out = run(pve, guest(), settings())
    assert out.status == "failed" and "not on node pve1" in out.reason


# -- a node lane: one guest after another, the next one's tasks read during the vzdump ---------


class LanePve(FakePve):
    """Every guest's vzdump starts (or raises what ``raises`` says) and ends OK; each call is
    written down in order, with the guest it was for."""

    def __init__(self, raises: dict[int, Exception] | None = None) -> None:
        super().__init__()
        self.raises = raises or {}
        self.calls: list[str] = []
        self.listed_for: dict[int, list[PveTaskItem]] = {}

    def tasks(self, node: str, **kw: Any) -> list[PveTaskItem]:
        self.calls.append(f"tasks {kw['vmid']}")
        return list(self.listed_for.get(kw["vmid"], []))

    def vzdump(self, node: str, vmid: int, storage: str, **_kw: Any) -> str:
        self.calls.append(f"vzdump {vmid}")
        self.posts += 1
        if vmid in self.raises:
            raise self.raises[vmid]
        return UPID.replace(":101:", f":{vmid}:")

    def wait_task(self, node: str, upid: str, *_a: Any, **_kw: Any) -> PveTaskStatus:
        self.calls.append(f"wait {upid.split(':')[6]}")
        return ended("OK", upid)


def lane_guest(vmid: int) -> BackupGuest:
    return BackupGuest(vmid=vmid, name=f"g{vmid}", node="pve1", type="lxc")


def run_the_lane(pve: LanePve, vmids: list[int]) -> tuple[list[Any], list[Any], list[str]]:
    told: list[Any] = []
    warnings: list[str] = []
    s = settings(listed_at=1_700_000_000.0)
    outs = run_lane(
        cast(Any, pve),
        [(lane_guest(v), s) for v in vmids],
        told.append,
        warn=warnings.append,
        sleep=pve.sleeps.append,
    )
    return outs, told, warnings


def test_a_guest_whose_backup_raised_fails_alone_and_the_lane_goes_on() -> None:
    pve = LanePve(raises={102: RuntimeError("bug in a parser")})
    outs, told, warnings = run_the_lane(pve, [101, 102, 103])
    assert [(o.vmid, o.status) for o in outs] == [(101, "ok"), (102, "failed"), (103, "ok")]
    assert "RuntimeError: bug in a parser" in outs[1].reason
    assert told == outs  # each guest told once, as it ended
    assert warnings == ["guest 102 (g102): RuntimeError: bug in a parser"]  # named once


def test_the_next_guests_tasks_are_read_while_the_vzdump_runs() -> None:
    pve = LanePve()
    run_the_lane(pve, [101, 102, 103])
    # one task-list read per guest, the next guest's between the start and the wait
    assert pve.calls == [
        "tasks 101",
        "vzdump 101",
        "tasks 102",
        "wait 101",
        "vzdump 102",
        "tasks 103",
        "wait 102",
        "vzdump 103",
        "wait 103",
    ]


def test_tasks_read_ahead_too_long_ago_are_read_again(monkeypatch: Any) -> None:
    import labops.backups.vzdump_job as job

    monkeypatch.setattr(job, "LOOKED_AHEAD_FRESH_S", -1.0)  # every look-ahead is stale
    pve = LanePve()
    run_the_lane(pve, [101, 102])
    ahead = ["tasks 101", "vzdump 101", "tasks 102", "wait 101"]
    assert pve.calls == [*ahead, "tasks 102", "vzdump 102", "wait 102"]  # read again at its turn


def test_a_killed_runs_vzdump_seen_ahead_is_adopted_not_started_again() -> None:
    pve = LanePve()
    running = PveTaskItem(
        upid=UPID.replace(":101:", ":102:"), node="pve1", type="vzdump", id="102", starttime=1
    )
    pve.listed_for[102] = [running]
    outs, _told, _w = run_the_lane(pve, [101, 102])
    assert (outs[1].status, outs[1].adopted, outs[1].attempts) == ("ok", True, 0)
    assert "vzdump 102" not in pve.calls


def test_the_poller_can_wait_before_its_first_read() -> None:
    from types import SimpleNamespace

    from labops.proxmox import PveClient

    naps: list[float] = []
    reads: list[float] = []
    statuses = [True, False]

    def read() -> Any:
        reads.append(sum(naps))
        return SimpleNamespace(running=statuses.pop(0))

    me = SimpleNamespace(sleep=naps.append, name="proxmox")
    PveClient._wait(cast(Any, me), read, "t", 60, 0.05, first_poll_s=0.02, read_first=False)
    assert reads == [0.02, 0.02 + 0.03]  # no read at once: a task just started is running
