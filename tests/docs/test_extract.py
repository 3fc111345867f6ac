"""The deterministic claim extractor, the comparison and the patch, from sample docs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labops.docs.compare import compare, undocumented
from labops.docs.extract import extract_claims
from labops.docs.models import ClaimKind, LiveFacts, Span, Status
from labops.docs.patch import patched_texts, unified_diff

DATA = Path(__file__).parents[1] / "data" / "docs"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "infrastructure.md"


def load(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture(scope="module")
def live() -> LiveFacts:
    return LiveFacts.model_validate(json.loads(load("live.json")))


def verdicts_of(name: str, live: LiveFacts) -> dict[str, tuple[Status, str | None]]:
    claims = extract_claims(load(name), name)
    return {f"{v.claim.line}:{v.claim.subject}": (v.status, v.live) for v in compare(claims, live)}


def test_prose_counts_guests_dns_and_versions(live: LiveFacts) -> None:
    got = verdicts_of("prose.md", live)
    assert got["3:Proxmox nodes"] == (Status.MATCH, "4")
    assert got["3:LXC containers"] == (Status.DRIFTED, "14")
    assert got["3:VMs"][0] == Status.MATCH  # the template is not a VM in the operator's sense
    assert got["7:CT 100"][0] == Status.MATCH
    assert got["7:CT 110"][0] == Status.MATCH
    assert got["8:*.lab.internal"] == (Status.MATCH, "192.168.1.110")
    assert got["9:HTTPS services"] == (Status.MATCH, "9")
    assert got["9:scrape targets"] == (Status.MATCH, "6")
    assert got["10:Beszel agents"] == (Status.DRIFTED, "16")
    assert got["11:Proxmox VE"][0] == Status.MATCH


def test_bullets_moved_node_changed_ip_and_unverifiable(live: LiveFacts) -> None:
    claims = extract_claims(load("bullets.md"), "bullets.md")
    by_subject = {
        (c.line, c.subject): v for c, v in zip(claims, compare(claims, live), strict=True)
    }
    moved = by_subject[(3, "CT 102")]
    assert moved.status == Status.DRIFTED and "runs on pve4" in moved.reason
    assert moved.replacements == {"node": "pve4"}
    changed_ip = by_subject[(4, "CT 104")]
    assert changed_ip.status == Status.DRIFTED and changed_ip.replacements == {
        "ip": "192.168.1.144"
    }
    assert by_subject[(5, "VMs")].status == Status.MATCH  # "About 3" is a bound, 2 is within it
    assert by_subject[(6, "pve1 <-> pve2")].status == Status.UNVERIFIABLE
    assert by_subject[(7, "blocked domains")].status == Status.UNVERIFIABLE


def test_table_rows_are_guest_claims(live: LiveFacts) -> None:
    claims = extract_claims(load("table.md"), "table.md")
    assert [c.vmid for c in claims if c.kind == ClaimKind.GUEST] == [100, 108, 999]
    verdicts = {v.claim.vmid: v for v in compare(claims, live)}
    assert verdicts[100].status == Status.MATCH
    assert verdicts[999].status == Status.DRIFTED and verdicts[999].live == "no such guest"


@pytest.mark.parametrize(
    ("text", "op", "value", "live_value", "holds"),
    [
        ("scraping 20+ targets", "ge", 20, 25, True),
        ("scraping 20+ targets", "ge", 20, 19, False),
        ("~650k blocked domains", "approx", 650_000, 700_000, True),
        ("up to 8 VMs", "le", 8, 9, False),
        ("over 30 containers", "ge", 30, 31, True),
        ("1,200 containers", "eq", 1200, 1200, True),
    ],
)
def test_bounds(text: str, op: str, value: int, live_value: int, holds: bool) -> None:
    (claim,) = [c for c in extract_claims(text, "x.md") if c.kind == ClaimKind.COUNT]
    assert claim.bound is not None
    assert (claim.bound.op, claim.bound.value) == (op, value)
    assert claim.bound.holds(live_value) is holds


def test_units_and_ambiguous_nouns() -> None:
    claims = extract_claims("10 MB Go agents on 62 nodes of the topology", "x.md")
    counts = [c for c in claims if c.kind == ClaimKind.COUNT]
    assert [(c.subject, c.fact) for c in counts] == [("nodes", None)]


def test_patch_changes_only_drifted_values_and_applies(live: LiveFacts, tmp_path: Path) -> None:
    names = ["prose.md", "bullets.md", "table.md"]
    texts = {n: load(n) for n in names}
    verdicts = [v for n in names for v in compare(extract_claims(texts[n], n), live)]
    patched = patched_texts(texts, verdicts)
    assert "14 LXC containers" in patched["prose.md"]
    assert "16 agents" in patched["prose.md"]
    assert "CT 102 step-ca on pve4 (192.168.1.102)" in patched["bullets.md"]
    assert "CT 104 wazuh on pve2 (192.168.1.144)" in patched["bullets.md"]
    assert "table.md" not in patched  # the missing guest is reported, not invented
    diff = unified_diff(texts, patched)
    changed = [
        ln
        for ln in diff.splitlines()
        if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))
    ]
    assert len(changed) == 2 * 4  # four lines change, each one - and one +
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "p.diff").write_text(diff)
    subprocess.run(["git", "apply", "--check", "p.diff"], cwd=tmp_path, check=True)


def test_no_drift_gives_empty_diff(live: LiveFacts) -> None:
    text = load("nodrift.md")
    verdicts = compare(extract_claims(text, "nodrift.md"), live)
    assert {v.status for v in verdicts} == {Status.MATCH}
    assert unified_diff({"nodrift.md": text}, patched_texts({"nodrift.md": text}, verdicts)) == ""


def test_undocumented_guests_and_routers(live: LiveFacts) -> None:
    claims = extract_claims(load("prose.md"), "prose.md")
    extra = undocumented(claims, live)
    assert any(u.entity.startswith("CT 111 uptime-kuma") for u in extra)
    assert not any("debian12-tpl" in u.entity for u in extra)
    assert any(u.kind == "router" and "wiki.lab.internal" in u.entity for u in extra)


def test_real_homelab_page() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (shared fixtures sit beside the checkout)")
    claims = extract_claims(SHARED.read_text(), "infrastructure.md")
    facts = {(c.subject, c.bound.describe() if c.bound else c.vmid) for c in claims}
    assert ("Proxmox nodes", "4") in facts
    assert ("LXC containers", "53") in facts
    assert ("HTTPS services", "39") in facts
    assert ("scrape targets", ">= 20") in facts
    assert ("Beszel agents", "30") in facts
    assert ("CT 110", 110) in facts
    guests = {c.vmid: c for c in claims if c.kind == ClaimKind.GUEST}
    assert guests[100].node == "pve1" and guests[101].node == "pve2"
    assert guests[110].name == "Traefik"
    assert not any(c.subject == "Beszel agents" and c.bound and c.bound.value == 10 for c in claims)


@pytest.mark.parametrize(
    ("text", "fact", "bound"),
    [
        ("Five hypervisors run the lab.", "nodes", "5"),
        ("It runs thirty-one containers.", "lxc", "31"),
        ("About a dozen VMs.", "qemu", "~12"),
        ("Only one VM is left.", "qemu", "1"),
        ("One container per service.", None, None),  # an article, not a count
        ("The two main Proxmox nodes share a link.", None, "2"),  # some of them, not all
        ("4 Proxmox nodes, self-hosted.\n\nlive topology · 62 nodes · exported.", "nodes", "4"),
        ("A Proxmox cluster.\n\n- **Nodes:** 4", "nodes", "4"),
        ("Beszel (30 hosts) and Wazuh (58 agents)", "beszel_agents", "30"),
        ("pve2 runs 31 containers.", "node:pve2:lxc", "31"),
        ("Three guests are tagged `nobackup`.", "tag:nobackup:guests", "3"),
    ],
)
def test_counts_in_words_scopes_and_subsets(text: str, fact: str | None, bound: str) -> None:
    counts = [c for c in extract_claims(text, "p.md") if c.kind == ClaimKind.COUNT]
    if bound is None:
        assert not counts
        return
    first = counts[0]
    assert (first.fact, first.bound.describe() if first.bound else None) == (fact, bound)


def test_nodes_in_prose_need_proxmox_near_them() -> None:
    text = "4 Proxmox nodes, self-hosted.\n\nlive topology · 62 nodes · exported.\n"
    counts = [c for c in extract_claims(text, "p.md") if c.kind == ClaimKind.COUNT]
    assert [(c.line, c.fact) for c in counts] == [(1, "nodes"), (3, None)]


def counts_of(text: str) -> list[tuple[int, str | None, str]]:
    """(line, fact or ?subject, bound) of each count claim of a text."""
    return [
        (c.line, c.fact or f"?{c.subject}", c.bound.describe() if c.bound else "")
        for c in extract_claims(text, "p.md")
        if c.kind == ClaimKind.COUNT
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- pve1 (192.168.1.11)\n  - no VMs\n", [(2, "node:pve1:qemu", "0")]),
        ("pve3 runs no containers.", [(1, "node:pve3:lxc", "0")]),
        ("The lab has no VMs and 53 containers.", [(1, "qemu", "0"), (1, "lxc", "53")]),
        ("No VMs are exposed to the internet.", []),  # says nothing of how many there are
    ],
)
def test_no_vms_is_a_count_of_none(text: str, expected: list[tuple[int, str, str]]) -> None:
    assert counts_of(text) == expected


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("The lab runs 53 containers. Thirty-one of them live on pve2.", ("node:pve2:lxc", "31")),
        ("We keep 56 guests; twenty two of them are tagged `app`.", ("tag:app:guests", "22")),
        ("We keep 56 guests, and only three of them are VMs.", ("qemu", "3")),
        (
            "Traefik has 42 routers; thirty-nine of them are HTTPS services.",
            ("https_services", "39"),
        ),
        # a part picked by what no live source knows: listed, never taken for the whole set
        (
            "Five hypervisors; only one of them is on for backups.",
            ("?Proxmox nodes (a part of them)", "1"),
        ),
        # nothing counted in this sentence or the one before: "them" is not resolved
        ("Only one of them is reachable from outside.", ("?a part of them", "1")),
        (
            "The lab has 4 Proxmox nodes. It is old. It is loud. One of them is new.",
            ("?a part of them", "1"),
        ),
    ],
)
def test_a_part_of_them_is_counted_against_the_set_before(text: str, part: tuple[str, str]) -> None:
    assert counts_of(text)[-1][1:] == part


def test_a_part_of_them_without_a_resolved_set_is_unverifiable_with_why(live: LiveFacts) -> None:
    claims = extract_claims("Only one of them is reachable from outside.", "p.md")
    (verdict,) = compare(claims, live)
    assert verdict.status == Status.UNVERIFIABLE
    assert "not counted in this sentence or the one before" in verdict.reason
    assert counts_of("If one of them fails, restart it.") == []  # a condition counts nothing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The lab runs twenty two containers.", [(1, "lxc", "22")]),
        ("Sixty One VMs.", [(1, "qemu", "61")]),
        (
            "The lab runs 53 containers, thirty-one of them on pve2.",
            [(1, "lxc", "53"), (1, "node:pve2:lxc", "31")],
        ),
        (
            "We keep fifty-six guests; twenty two of them are tagged `app`.",
            [(1, "guests", "56"), (1, "tag:app:guests", "22")],
        ),
        # a compound broken at its hyphen by the wrap is one number, not "eight agents"
        ("Wazuh collects logs and alerts from fifty-\neight agents.", [(1, "wazuh_agents", "58")]),
    ],
)
def test_compound_word_numbers(text: str, expected: list[tuple[int, str, str]]) -> None:
    assert counts_of(text) == expected


WRAPPED = (
    "# Lab\n"
    "\n"
    "The rack under the stairs is the whole lab. It is built from four\n"
    "Proxmox nodes, and Traefik fronts forty-\n"
    "two routers; Wazuh gathers logs and alerts from every guest through fifty\n"
    "agents.\n"
)


def test_a_sentence_wrapped_over_lines_is_one_claim_where_it_starts() -> None:
    assert sorted(counts_of(WRAPPED)) == [
        (3, "nodes", "4"),
        (3, "routers", "42"),  # not "two routers" on line 5: its sentence starts on line 3
        (5, "wazuh_agents", "50"),
    ]
    claims = {c.fact: c for c in extract_claims(WRAPPED, "lab.md")}
    assert claims["nodes"].text.startswith("It is built from four Proxmox nodes")
    assert claims["nodes"].spans["count"] == Span(file="lab.md", line=3, start=61, end=65)
    assert "count" not in claims["routers"].spans  # cut by a line break: not patched in place


def test_a_wrapped_drifted_count_is_patched_on_its_own_line() -> None:
    live = LiveFacts(nodes=["pve1", "pve2", "pve3"], routers=[], wazuh_agents=["a"] * 50)
    verdicts = compare(extract_claims(WRAPPED, "lab.md"), live)
    patched = patched_texts({"lab.md": WRAPPED}, verdicts)["lab.md"]
    assert "It is built from 3\nProxmox nodes" in patched
    assert "forty-\ntwo routers" in patched  # drifted, but no place to patch it


def test_a_list_item_wrapped_over_lines_is_read_whole() -> None:
    text = "- Monitoring\n  - Wazuh collects logs and alerts from\n    58 agents\n"
    assert counts_of(text) == [(2, "wazuh_agents", "58")]


@pytest.mark.parametrize(
    ("text", "node", "role"),
    [
        ("pve2 is the backup node.", "pve2", "backup"),
        ("The third box, pve3, acts as the quorum tiebreaker.", "pve3", "quorum tiebreaker"),
        ("In the end pve4 serves as a spare host for tests.", "pve4", "spare"),
        ("Since the move pve1 is the\ninfrastructure node of the lab.", "pve1", "infrastructure"),
    ],
)
def test_node_roles_in_prose(text: str, node: str, role: str) -> None:
    roles = [(c.node, c.value) for c in extract_claims(text, "p.md") if c.kind == ClaimKind.NODE]
    assert roles == [(node, role)]


def test_a_role_is_unverifiable_on_a_node_that_exists_drifted_on_one_that_does_not() -> None:
    live = LiveFacts(nodes=["pve1", "pve2"], node_ips={"pve1": "192.168.1.11"})
    text = "pve2 is the backup node. pve9 acts as the quorum tiebreaker."
    verdicts = {v.claim.subject: v for v in compare(extract_claims(text, "p.md"), live)}
    assert verdicts["pve2"].status == Status.UNVERIFIABLE
    assert "no live source knows node roles" in verdicts["pve2"].reason
    assert verdicts["pve9"].status == Status.DRIFTED and verdicts["pve9"].live == "no such node"
    assert extract_claims("pve2 is the only node with a GPU.", "p.md") == []


def test_lines_of_a_page_exported_from_html_are_not_one_sentence() -> None:
    # Each block on its own line, no full stops: "62 nodes" is the topology's, not Proxmox's,
    # though the paragraph names Proxmox, and the Beszel count stays on its own line.
    text = (
        "4 Proxmox nodes, 53 LXC containers, fully self-hosted. Not a single paid service.\n"
        "∷ live topology · 62 nodes · exported from Homelable\n"
        "hover any card for hostname & IP\n"
        "Overview\n"
        "The infrastructure runs on 4 heterogeneous Proxmox VE nodes.\n"
        "Beszel\n"
        "Rejected: Grafana + node_exporter (complex to maintain)\n"
        "Result: 30 deployed agents, instant overview\n"
    )
    assert counts_of(text) == [
        (1, "nodes", "4"),
        (1, "lxc", "53"),
        (2, "?nodes", "62"),
        (5, "nodes", "4"),
        (8, "beszel_agents", "30"),
    ]
