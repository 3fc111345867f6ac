"""Every flow, run twice on two identical labs (same seed): once on a healthy lab, once while 10%
of the Proxmox VE and PBS API calls fail (500) and 5% have their connection reset. The faulty
run must complete with the results of the healthy one: no failure, nothing done twice.

Afterwards the same runs serve the secrets drill: no secret the sandbox holds (its ``secrets/``
files) may appear in the Prefect database, the run logs, artifacts, persisted results, MQTT or
Telegram messages.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures.sandbox import SandboxHandle, start_sandbox
from tests.patching.helpers import run_paused_flow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

OPEN = [
    {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
]
PATCHED_HOSTS = ["gitea", "actual"]
FAULTS = {"error_rate": 0.1, "reset_rate": 0.05}
FLOWS = [
    "certificates",
    "patch-check",
    "backups",
    "restore-drill",
    "patch-apply",
    "security-digest",
    "doc-reconcile",
    "housekeeping",
]


class Bus:
    """Every MQTT message under a prefix of the machine's Mosquitto (what a subscriber sees)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", 1883)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def lab_config(sandbox: SandboxHandle, work: Path, prefix: str, name: str) -> str:
    """The sandbox's config with quick policies: every guest due for a backup, an open patch
    window, MQTT on the machine's broker under ``prefix``. ``name``: the lab's own name, so the
    two labs' runs (at the same time, on one Prefect server) hold slots of their own."""
    cfg = yaml.safe_load(sandbox.config_path.read_text())
    cfg["lab"]["name"] = name
    cfg["lab"]["state_dir"] = str(work / "state")
    cfg["systems"]["mqtt"] = {"host": "127.0.0.1", "port": 1883, "topic_prefix": prefix}
    retry = {"timeout_s": 3, "attempts": 8, "backoff_s": 0.02, "backoff_max_s": 0.3}
    cfg["systems"]["proxmox"]["retry"] = retry
    cfg["systems"]["pbs"]["retry"] = retry
    cfg["backups"] = {
        "tiers": {"short": {"rpo": "10m"}, "7d": {"rpo": "7d"}},
        "default_tier": "short",
        "tier_tags": {},
        "poll_interval": 0.1,
        "lock_retry": 0.2,
        "lock_wait": 20,
        "task_timeout": 60,
        # An injected 500 on a vzdump/restore/start is a lost answer (the work may have begun):
        # the node's task list is watched this long before the request is sent again. The
        # sandbox's tasks begin at once, so 3 s is plenty; the default 30 s per lost answer,
        # one after another in a node's lane, made the faulty lab's backups outlast the join.
        "lost_answer_wait": 3,
        "per_storage_limit": 8,
        "limits_scope": f"res-{uuid.uuid4().hex[:8]}",
        "restore_drill": {
            "start_wait": 5,
            "timeout": 60,
            "scratch_vmid_min": 9900,
            "scratch_vmid_max": 9909,
        },
    }
    # overlaps listed, never refused: the sandbox's nightly backup jobs (02:00, 02:30) would
    # refuse the patched hosts' node when the suite runs near them
    cfg["patching"] = {
        "windows": OPEN,
        "overlaps": "list",
        "refresh": False,
        "canary_count": 0,
        "delete_snapshots_after_h": 0,
    }
    cfg["certificates"] = {"handshake_timeout_s": 2.0, "connect_timeout_s": 2.0}
    # The sandbox's two dead endpoints (offline, stalled) could never be checked: the run would
    # fail on both labs for them. Left out, "completes with the healthy lab's results" stays
    # the question (the API faults must not fail it).
    cfg["inventory"]["endpoints"] = []
    work.mkdir(parents=True, exist_ok=True)
    path = work / "labops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _summary(name: str, report: Any) -> Any:
    """What must not change when the API misbehaves (timings, ids and ports left out)."""
    if name == "certificates":
        return sorted(Counter(str(e.status) for e in report.endpoints).items())
    if name == "patch-check":
        return {h.host: (str(h.state), len(h.packages), h.reboot_required) for h in report.hosts}
    if name == "backups":
        return {g.vmid: str(g.status) for g in report.guests}
    if name == "restore-drill":
        return {"vmid": report.vmid, "ok": report.ok}
    if name == "patch-apply":
        return {a.host: str(a.outcome) for a in report.applied}
    if name == "security-digest":
        return {"findings": len(report.findings), "unknown": len(report.unknown)}
    if name == "doc-reconcile":
        return sorted(Counter(str(v.status) for v in report.verdicts).items())
    return {"failed": report.failed}


@dataclass
class LabRuns:
    sandbox: SandboxHandle
    config: str
    reports: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    t0: float = 0.0
    running: str = ""  # the flow under way, named when the lab's runs outlast the join


def _report(state: Any) -> Any:
    if hasattr(state, "result"):
        return state.result(raise_on_failure=False)
    return state


def run_every_flow(runs: LabRuns) -> None:
    from flows.backups import backups
    from flows.certificates import certificates
    from flows.doc_reconcile import doc_reconcile
    from flows.housekeeping import housekeeping
    from flows.patching import patch_apply, patch_check
    from flows.restore_drill import restore_drill
    from flows.security_digest import security_digest

    cfg = runs.config
    calls: dict[str, Callable[[], Any]] = {
        "certificates": lambda: certificates(config=cfg, return_state=True),
        "patch-check": lambda: patch_check(config=cfg, return_state=True),
        "backups": lambda: backups(config=cfg, return_state=True),
        "restore-drill": lambda: restore_drill(config=cfg, return_state=True),
        "patch-apply": lambda: run_paused_flow(
            lambda: patch_apply(config=cfg, hosts=PATCHED_HOSTS, return_state=True),
            cfg,
            {"approve": True},
            timeout=120,
        )[0],
        "security-digest": lambda: security_digest(config=cfg, return_state=True),
        "doc-reconcile": lambda: doc_reconcile(config=cfg, return_state=True),
        "housekeeping": lambda: housekeeping(config=cfg, return_state=True),
    }
    runs.t0 = time.time() - 1
    for name in FLOWS:
        runs.running = f"{name} (since {time.strftime('%H:%M:%S')})"
        state = calls[name]()
        runs.states[name] = state.type.value
        runs.reports[name] = _report(state)
    runs.running = ""


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    bus = Bus(f"labops-res-{uuid.uuid4().hex[:8]}")
    try:
        yield bus
    finally:
        bus.close()


class LogCapture(logging.Handler):
    """Every log line this process writes while the flows run (console and run logs alike)."""

    LOGGERS = ("", "prefect", "labops", "httpx", "paramiko", "proxmoxer", "urllib3", "LiteLLM")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a bad format string is not this test's business
            self.lines.append(str(record.msg))


@pytest.fixture(scope="module")
def process_logs() -> Iterator[LogCapture]:
    # Importing Prefect configures logging (dictConfig), which drops handlers added before it:
    # run alone, this module would first import Prefect inside the flows and capture nothing.
    import prefect  # noqa: F401

    capture = LogCapture()
    for name in LogCapture.LOGGERS:
        logging.getLogger(name).addHandler(capture)
    try:
        yield capture
    finally:
        for name in LogCapture.LOGGERS:
            logging.getLogger(name).removeHandler(capture)


@pytest.fixture(scope="module")
def both_labs(
    prefect_server: Any,
    bus: Bus,
    process_logs: LogCapture,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LabRuns, LabRuns]]:
    """A healthy and a faulty lab (same seed), every flow run on each, at the same time."""
    dirs = [tmp_path_factory.mktemp("lab-healthy"), tmp_path_factory.mktemp("lab-faulty")]
    with ThreadPoolExecutor(2) as pool:
        labs = list(pool.map(lambda d: start_sandbox(d / "lab"), dirs))
    try:
        healthy, faulty = (
            LabRuns(lab, lab_config(lab, d / "work", bus.prefix, name))
            for lab, d, name in zip(labs, dirs, ("healthy", "faulty"), strict=True)
        )
        for system in ("pve", "pbs"):
            faulty.sandbox.set_faults(system, **FAULTS)
        threads = []
        errors: list[BaseException] = []
        for runs in (healthy, faulty):
            context = contextvars.copy_context()  # the session server's Prefect settings

            def target(runs: LabRuns = runs, context: contextvars.Context = context) -> None:
                try:
                    context.run(run_every_flow, runs)
                except BaseException as exc:
                    errors.append(exc)

            threads.append(threading.Thread(target=target, daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(360)
        faulty.sandbox.reset_faults()
        if errors:
            raise errors[0]
        hung = [
            f"{runs.sandbox.dir.parent.name}: {runs.running}"
            for runs, thread in zip((healthy, faulty), threads, strict=True)
            if thread.is_alive()
        ]
        assert not hung, f"a flow hung: {hung}"
        yield healthy, faulty
    finally:
        for lab in labs:
            lab.stop()


def vzdumps_per_guest(sandbox: SandboxHandle, since: float) -> Counter[str]:
    pve = sandbox.pve()
    counts: Counter[str] = Counter()
    for node in ("pve1", "pve2", "pve3", "pve4"):
        for task in pve.nodes(node).tasks.get(
            typefilter="vzdump", since=int(since), source="all", limit=1000
        ):
            counts[str(task.get("id"))] += 1
    return counts


@pytest.mark.parametrize(
    "name",
    list(FLOWS),
)
def test_flow_completes_with_the_same_results_under_api_faults(
    both_labs: tuple[LabRuns, LabRuns], name: str
) -> None:
    healthy, faulty = both_labs
    for label, runs in (("healthy", healthy), ("faulty", faulty)):
        failures = getattr(runs.reports[name], "failures", None)
        assert runs.states[name] == "COMPLETED", (
            f"{name} on the {label} lab ended {runs.states[name]}: {failures}"
        )
    want, got = _summary(name, healthy.reports[name]), _summary(name, faulty.reports[name])
    assert want == got, f"{name}: healthy {want} != faulty {got}"


def test_no_guest_backed_up_twice_under_api_faults(both_labs: tuple[LabRuns, LabRuns]) -> None:
    """A vzdump start whose answer was lost is adopted from the task list, never repeated."""
    healthy, faulty = both_labs
    counts = vzdumps_per_guest(faulty.sandbox, faulty.t0)
    assert counts, "the faulty lab ran no backup at all"
    assert {k: n for k, n in counts.items() if n > 1} == {}
    assert set(counts) == set(vzdumps_per_guest(healthy.sandbox, healthy.t0))


def test_no_secret_leaks_anywhere(
    both_labs: tuple[LabRuns, LabRuns], bus: Bus, prefect_server: Any, process_logs: LogCapture
) -> None:
    from tests.fixtures.prefect import drain_prefect_workers

    drain_prefect_workers()
    time.sleep(2)  # the server writes the last events and logs it was sent
    secrets: dict[str, str] = {}
    for runs in both_labs:
        for file in sorted((runs.sandbox.dir / "secrets").iterdir()):
            value = file.read_text().strip()
            if value:
                secrets[f"{runs.sandbox.dir.parent.name}/{file.name}"] = value
    assert len(secrets) >= 10

    places: dict[str, bytes] = {}
    home = Path(prefect_server.home)
    for db in sorted(home.glob("*.db*")):  # the database, its WAL and journal
        places[f"prefect database {db.name}"] = db.read_bytes()
    for runs in both_labs:
        state_dir = Path(yaml.safe_load(Path(runs.config).read_text())["lab"]["state_dir"])
        for file in state_dir.rglob("*"):
            if file.is_file():
                places[f"state file {file}"] = file.read_bytes()
        messages = runs.sandbox.control("telegram", "messages")["messages"]
        places[f"telegram of {runs.sandbox.dir.parent.name}"] = json.dumps(messages).encode()
    places["mqtt messages"] = b"\n".join(t.encode() + b" " + p for t, p in bus.messages)
    places["this process's log lines"] = "\n".join(process_logs.lines).encode()
    # results persisted by cached tasks (pickles of task returns) in this process's PREFECT_HOME
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    storage = Path(str(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())).expanduser()
    started = min(r.t0 for r in both_labs)
    if storage.is_dir():
        for file in storage.rglob("*"):
            if file.is_file() and file.stat().st_mtime >= started:
                places[f"persisted result {file.name}"] = file.read_bytes()

    # the search must be able to find things: the runs' own parameters are in the database
    assert bus.messages, "no MQTT message was seen: the drill would prove nothing"
    database = b"".join(blob for where, blob in places.items() if "prefect database" in where)
    assert all(r.config.encode() in database for r in both_labs), "the runs are not in the DB"
    assert len(process_logs.lines) > 100
    leaks = [
        f"{name} in {where}"
        for name, value in secrets.items()
        for where, blob in places.items()
        if value.encode() in blob
    ]
    assert not leaks, "secrets found:\n" + "\n".join(leaks)
