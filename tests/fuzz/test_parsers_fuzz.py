"""Fuzz every parser of remote output: apt, apk, needrestart, os-release, the combined host check,
Proxmox/PBS JSON models, PVE net strings, Traefik routers and rules, and the doc claim extractor.

The promise under test: a parser of command output never raises (garbage lines are skipped); a
model of an API payload raises only pydantic's ``ValidationError`` (a ``ValueError``); a UPID
parser raises only ``ValueError``; nothing takes longer than the hypothesis deadline.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from labops.certificates import pve as certificates
from labops.docs.extract import extract_claims
from labops.models import pbs, pve, traefik
from labops.patching import apk, apt, hostcheck, needrestart, osrelease
from tests.fuzz.strategies import FUZZ, json_like, lines_of, mutated, text

DATA = Path(__file__).resolve().parents[1] / "data"
CASES = Path(__file__).resolve().parents[1] / "patching" / "cases"
pytestmark = pytest.mark.timeout(120)

word = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)
version = st.from_regex(r"[0-9][0-9a-z.:~+]{0,10}(-r[0-9]{1,3})?", fullmatch=True)


def seeded(*areas: str) -> st.SearchStrategy[str]:
    """Real outputs of the parser cases (tests/patching/cases/<area>/), cut and spliced at random
    points."""
    files = sorted(f for area in areas for f in (CASES / area).glob("*.yaml"))
    originals = [str(yaml.safe_load(f.read_text())["output"]) for f in files]
    return st.tuples(
        st.sampled_from(originals), st.integers(0, 5000), st.integers(0, 5000), text
    ).map(lambda t: t[0][: t[1]] + t[3] + t[0][t[2] :])


# -- apt ------------------------------------------------------------------------------------

apt_line = st.builds(
    lambda n, s, v, a, o: f"{n}/{s} {v} {a} [upgradable from: {o}]",
    word,
    st.sampled_from(["bookworm-security", "stable,stable-updates", "noble-updates", ""]),
    version,
    st.sampled_from(["amd64", "all", ""]),
    version,
)
inst_line = st.builds(
    lambda n, o, v, suite: f"Inst {n} [{o}] ({v} Debian:12.5/{suite} [amd64])",
    word,
    version,
    version,
    st.sampled_from(["bookworm-security", "stable", ""]),
)
apt_text = st.one_of(
    lines_of(apt_line, inst_line, st.just("Listing... Done")), seeded("apt", "hostcheck")
)


@FUZZ
@given(apt_text)
def test_apt_parsers_never_raise(out: str) -> None:
    for update in apt.parse_upgradable(out):
        assert update.name and update.to_version
    apt.parse_showhold(out)
    sim = apt.parse_simulation(out)
    assert sim.upgraded >= 0
    holder = apt.lock_holder(out)
    assert holder is None or isinstance(holder, str)
    assert isinstance(apt.failure_reason(out), str)


# -- apk ------------------------------------------------------------------------------------

apk_line = st.builds(
    lambda n, v, op, w: f"{n}-{v}   {op} {w}",
    word,
    version,
    st.sampled_from(["<", ">", "=", "?", "<<"]),
    version,
)
upgrading = st.builds(
    lambda i, n, o, v: f"({i}/9) Upgrading {n} ({o} -> {v})",
    st.integers(0, 99),
    word,
    version,
    version,
)
apk_text = st.one_of(
    lines_of(apk_line, upgrading, st.just("Installed:   Available:")), seeded("apk")
)


@FUZZ
@given(apk_text)
def test_apk_parsers_never_raise(out: str) -> None:
    for update in apk.parse_version(out):
        assert update.name and update.security is None
    apk.parse_world_pins(out)
    apk.parse_upgrade_simulation(out)


@FUZZ
@given(st.one_of(text, st.builds(lambda n, v: f"{n}-{v}", word, version)))
def test_apk_split_name_version_raises_value_error_only(pkg: str) -> None:
    try:
        name, ver = apk.split_name_version(pkg)
    except ValueError as exc:
        assert "apk package-version" in str(exc)
    else:
        assert f"{name}-{ver}" == pkg


# -- needrestart, os-release, the combined host check ---------------------------------------

nr_line = st.builds(
    lambda k, v: f"NEEDRESTART-{k}: {v}",
    st.sampled_from(["VER", "KCUR", "KEXP", "KSTA", "UCSTA", "SVC", "CONT", "SESS", "X"]),
    st.one_of(word, st.integers(-5, 10**30).map(str), text),
)


@FUZZ
@given(st.one_of(lines_of(nr_line), seeded("needrestart")))
def test_needrestart_never_raises(out: str) -> None:
    nr = needrestart.parse_needrestart(out)
    assert isinstance(nr.reboot_advised, bool)
    assert isinstance(nr.kernel_state, str)


os_line = st.builds(
    lambda k, q, v: f"{k}={q}{v}{q}",
    st.sampled_from(["ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME", "UBUNTU_CODENAME"]),
    st.sampled_from(["", '"', "'"]),
    st.one_of(st.sampled_from(["debian", "alpine", "ubuntu", "12", "3.20.3", "24.04"]), text),
)


@FUZZ
@given(st.one_of(lines_of(os_line), seeded("osrelease")), st.dates())
def test_os_release_never_raises(out: str, today: date) -> None:
    release = osrelease.parse_os_release(out)
    assert release.label
    release.end_of_life()
    release.is_eol(today)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([name for name, _ in hostcheck._SECTIONS] + ["end", "bogus"]),
            st.one_of(apt_text, apk_text, lines_of(nr_line), lines_of(os_line)),
        ),
        max_size=10,
    ),
    st.dates(),
)
def test_host_check_output_never_raises(sections: list[tuple[str, str]], today: date) -> None:
    out = "\n".join(f"{hostcheck.MARK}{name}\n{body}" for name, body in sections)
    facts = hostcheck.parse_check_output(out, today)
    # an unknown result is never "up to date": it carries a problem
    if f"{hostcheck.MARK}end" not in out.splitlines():
        assert facts.problem


# -- Proxmox VE / PBS payload models --------------------------------------------------------

RESOURCES = json.loads((DATA / "proxmox/cluster_resources.json").read_text())["data"]
SNAPSHOTS = json.loads((DATA / "proxmox/pbs_snapshots.json").read_text())["data"]
TASKS = [case["data"] for case in json.loads((DATA / "proxmox/task_status.json").read_text())]

PAYLOADS: list[tuple[type[BaseModel], list[Any]]] = [
    (pve.PveGuest, RESOURCES),
    (pve.PveNode, [{"node": "pve1", "status": "online", "cpu": 0.1, "maxmem": 1 << 34}]),
    (pve.PveVersion, [{"version": "8.2.4", "release": "8.2", "repoid": "faa83925"}]),
    (pve.PveTaskStatus, TASKS),
    (pve.PveTaskItem, [{"upid": TASKS[0]["upid"], "starttime": 1, "status": "OK"}]),
    (
        pve.PveBackupVolume,
        [
            {
                "volid": "pbs:backup/ct/101/2024",
                "vmid": 101,
                "ctime": 1,
                "size": 5,
                "protected": 1,
                "verification": {"state": "ok"},
            }
        ],
    ),
    (pve.PveStorage, [{"storage": "local", "content": "backup,iso", "shared": 0}]),
    (
        pve.PveBackupJob,
        [{"id": "backup-1", "schedule": "21:00", "vmid": "101,102", "all": 0, "next-run": 1}],
    ),
    (pve.PveGuestState, [{"vmid": 101, "status": "running", "lock": "backup"}]),
    (pve.PveSnapshot, [{"name": "labops-pre-patch", "snaptime": 1}]),
    (pve.PveNodeStatus, [{"uptime": 1, "pveversion": "pve-manager/8.2.4", "kversion": "x"}]),
    (pbs.PbsSnapshot, SNAPSHOTS),
    (pbs.PbsDatastore, [{"store": "store1", "mount-status": "mounted"}]),
    (pbs.PbsTaskStatus, TASKS),
    (pbs.PbsGcStatus, [{"upid": "x", "last-run-state": "ok", "pending-bytes": 1}]),
    (pbs.PbsJobStatus, [{"id": "v-daily", "store": "store1", "last-run-state": "ok"}]),
    (
        certificates.PveCertificateInfo,
        [
            {
                "filename": "pve-ssl.pem",
                "notafter": 1900000000,
                "san": ["pve1"],
                "public-key-bits": 2048,
            }
        ],
    ),
]


def _touch_properties(obj: BaseModel) -> None:
    """Read every property: a model that validated must not blow up when read."""
    for name in dir(type(obj)):
        if isinstance(getattr(type(obj), name, None), property):
            getattr(obj, name)


@pytest.mark.parametrize("model,seeds", PAYLOADS, ids=[m.__name__ for m, _ in PAYLOADS])
@FUZZ
@given(data=st.data())
def test_api_payload_models(model: type[BaseModel], seeds: list[Any], data: st.DataObject) -> None:
    payload = data.draw(
        st.one_of(
            json_like,
            st.sampled_from(seeds).flatmap(
                lambda seed: mutated(seed, sorted({k for s in seeds for k in s}))
            ),
        )
    )
    try:
        obj = model.model_validate(payload)
    except ValidationError:
        return
    _touch_properties(obj)


upid_part = st.one_of(text, st.from_regex(r"[0-9A-F]{1,16}", fullmatch=True), word)


@FUZZ
@given(
    st.one_of(
        text,
        st.lists(upid_part, min_size=7, max_size=9).map(lambda p: "UPID:" + ":".join(p) + ":"),
        st.sampled_from([t["upid"] for t in TASKS]),
    )
)
@example("UPID:pve1:1:1:FFFFFFFFFFFFFFFF:vzdump:101:root@pam:")  # a start time past any clock
@example("UPID:pbs:1:1:1:FFFFFFFFFFFFFFFF:verify:s:root@pam:")
def test_upid_parsers_raise_value_error_only(upid: str) -> None:
    for parse in (pve.PveUpid.parse, pbs.PbsUpid.parse):
        with contextlib.suppress(ValueError):
            parse(upid)
    pve.is_upid(upid)


# -- Traefik routers and rules --------------------------------------------------------------

rule = st.lists(
    st.one_of(
        st.builds(
            lambda k, h: f"{k}(`{h}`)",
            st.sampled_from(["Host", "HostSNI", "!Host", "HostRegexp", "PathPrefix"]),
            st.one_of(word.map(lambda w: f"{w}.lab.internal"), text),
        ),
        st.sampled_from(["&&", "||", "(", ")", "!", "Host(`a`, `b`)", 'Host("x")', "`", ","]),
        text,
    ),
    max_size=12,
).map(" ".join)


@FUZZ
@given(rule)
def test_traefik_rule_hosts_never_raises(value: str) -> None:
    for host in traefik.rule_hosts(value):
        assert host == host.strip().lower() and host != "*"


router: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"name": st.one_of(word, json_like)},
    optional={
        "rule": st.one_of(rule, json_like),
        "status": st.one_of(word, json_like),
        "tls": st.one_of(st.none(), st.just({}), json_like),
        "entryPoints": st.one_of(st.lists(word), json_like),
    },
)


@FUZZ
@given(st.lists(st.one_of(router, json_like), max_size=6))
def test_traefik_parse_routers_raises_value_error_only(items: list[Any]) -> None:
    try:
        routers = traefik.parse_routers(items)
    except ValueError as exc:
        assert str(exc).startswith("traefik router ")
        assert "\n" not in str(exc).split(":", 1)[0]
        return
    traefik.tls_hosts(routers)


# -- docs -----------------------------------------------------------------------------------

doc_line = st.one_of(
    st.builds(
        lambda n, noun: f"The lab runs {n} {noun}.",
        st.integers(0, 10**7).map(str),
        st.sampled_from(["LXC containers", "VMs", "Proxmox nodes", "agents", "k scrape targets"]),
    ),
    st.builds(
        lambda k, i, n: f"- {n} ({k} {i}) on pve{i % 4}",
        st.sampled_from(["CT", "VM"]),
        st.integers(0, 10**9),
        word,
    ),
    st.builds(lambda a: f"| {a} | dns | pve1 | 192.168.1.{a % 256} |", st.integers(0, 10**6)),
    st.sampled_from(
        [
            "| CT | Name | Node | IP |",
            "|---|---|---|---|",
            "```",
            "# Heading",
            "*.lab.internal points to 192.168.1.110",
            "pve1 <-> pve2",
            "Proxmox VE 8.2.4",
            "192.168.1.110 (Traefik)",
            "~650k blocked domains",
        ]
    ),
    text,
)
doc_text = st.one_of(
    lines_of(doc_line),
    st.sampled_from([f.read_text() for f in sorted((DATA / "docs").glob("*.md"))]).flatmap(
        lambda doc: st.tuples(st.integers(0, len(doc)), text).map(
            lambda t: doc[: t[0]] + t[1] + doc[t[0] :]
        )
    ),
)


@FUZZ
@given(doc_text)
def test_doc_extraction_never_raises(doc: str) -> None:
    lines = doc.splitlines()
    for claim in extract_claims(doc, "fuzz.md"):
        assert 1 <= claim.line <= len(lines)
        for span in claim.spans.values():
            assert 0 <= span.start <= span.end <= len(lines[span.line - 1])


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param("a." * 3_000 + " no pointer here", id="dns"),
        pytest.param("x" * 6_000 + " <- nothing links", id="link"),
        pytest.param("1 " * 4_000 + "things", id="count"),
        pytest.param("CT 101 " * 1_100, id="guests"),
        pytest.param("Beszel 1 agents " * 1_000, id="service-counts"),
        pytest.param("*.a.b " * 2_000 + "192.168.1.1", id="wildcards"),
        pytest.param("pve1 runs 3 containers tagged x. " * 300, id="scoped-counts"),
        pytest.param("| CT |" + "|" * 8_000 + "\n|---|\n| 101 |", id="table"),
        # one paragraph of a thousand wrapped lines, read again as one text
        pytest.param("CT 101 on pve1\n" * 1_100, id="wrapped-guests"),
        pytest.param("Beszel 1 agents and\n" * 1_000, id="wrapped-service-counts"),
        pytest.param("3 containers, one of them on pve2,\n" * 1_000, id="wrapped-parts"),
        pytest.param("pve1 is the backup node and\n" * 1_000, id="wrapped-roles"),
        # an inline image: blank regions of a PNG encode to long runs of 'A'
        pytest.param(
            "![x](data:image/png;base64,iVBOR" + "A" * 6_000 + ")",
            id="inline-image",
        ),
        pytest.param("![x](data:image/png;base64," + "QUJD+/" * 1_000 + ")", id="b64-broken-up"),
    ],
)
def test_doc_extraction_is_fast_on_long_lines(doc: str) -> None:
    """One 6,000-character line must not stall the doc-reconcile run (linear work is ~10-90 ms).

    The CPU time of this thread is measured, not the wall clock: a loaded machine delays the
    test, it does not make the extractor do more work. A backtracking pattern or a search over
    the whole line per match costs seconds here."""
    started = time.thread_time()
    extract_claims(doc, "big.md")
    assert time.thread_time() - started < 2.0


# -- PVE net strings (a guest config's netN, as the restore drill reads them) ---------------

net_part = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["name", "bridge", "ip", "tag", "hwaddr", "link_down", "virtio", "x"]),
        st.one_of(word, st.sampled_from(["1", "0", "dhcp", "10.0.0.5/24", ""])),
    ),
    word,
    text,
)
net_string = st.one_of(st.lists(net_part, max_size=8).map(",".join), text)


@given(net_string, st.sampled_from(["lxc", "qemu", None]))
@example("name=eth0,bridge=vmbr0,ip=10.0.0.5/24", "lxc")
@example("virtio=BC:24:11:00:00:01,bridge=vmbr0,link_down=0", "qemu")
def test_net_strings_unplugged_keep_every_other_part(value: str, kind: str | None) -> None:
    from labops.models import pve_net

    problem = pve_net.check_net_string(value, kind)
    assert problem is None or (isinstance(problem, str) and problem)
    down = pve_net.with_link_down(value)
    assert pve_net.link_is_down(down)
    kept = [p for p in value.split(",") if p.partition("=")[0].strip() != "link_down"]
    assert down.split(",")[:-1] == kept
    pve_net.describe_net(value)
