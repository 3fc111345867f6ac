"""Recall and verdict accuracy of the extractor on pages it was not built around.

Each page of ``tests/docs/corpus/`` has a hand-written answer key (``<page>.key.yaml``): every
checkable claim with its line, what it is about, and the verdict and live value it must get on
the sandbox lab. The test prints recall and verdict accuracy per page and holds the goal: at
least 90 % of the key's claims found, every verdict of a found claim right, and no claim outside
the key reported as drifted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from blocks.context import LabContext
from labops.docs.compare import compare
from labops.docs.extract import extract_claims
from labops.docs.models import Claim, LiveFacts, Status, Verdict
from labops.docs.reconcile import record
from tasks.doc_facts import dns_doc_facts, proxmox_doc_facts
from tasks.live_facts import beszel_facts, traefik_facts, wazuh_agent_facts

CORPUS = Path(__file__).parent / "corpus"
PAGES = sorted(p.name for p in CORPUS.glob("*.md"))


def claim_id(claim: Claim) -> str:
    """How a key names a claim: the live fact of a count, else what it is about."""
    if claim.kind.value == "count":
        return claim.fact or f"?{claim.subject}"
    return claim.subject


@pytest.fixture(scope="module")
def live(sandbox: Any) -> LiveFacts:
    ctx = LabContext.load(sandbox.config_path)
    facts = LiveFacts()
    sources = {
        "proxmox": proxmox_doc_facts,
        "traefik": traefik_facts,
        "technitium": dns_doc_facts,
        "beszel": beszel_facts,
        "wazuh_api": wazuh_agent_facts,
    }
    for source, fetch in sources.items():
        record(facts, source, fetch.fn(ctx.block(source)))  # type: ignore[attr-defined]
    facts.unavailable["victoriametrics"] = "not configured"
    return facts


def score(page: str, verdicts: list[Verdict]) -> dict[str, Any]:
    key = yaml.safe_load((CORPUS / page.replace(".md", ".key.yaml")).read_text())
    found: dict[tuple[int, str], Verdict] = {}
    for v in verdicts:
        found.setdefault((v.claim.line, claim_id(v.claim)), v)
    hits, right = 0, 0
    wrong: list[str] = []
    missed: list[str] = []
    for entry in key:
        if (entry["line"], entry["claim"]) not in found:
            missed.append(f"{entry['line']} {entry['claim']}")
            continue
        v = found.pop((entry["line"], entry["claim"]))
        hits += 1
        ok = v.status.value == entry["status"] and (
            "live" not in entry or str(entry["live"]) in (v.live or "")
        )
        if ok:
            right += 1
        else:
            wrong.append(f"{entry['line']} {entry['claim']}: {v.status.value} live={v.live}")
    false_drift = [
        f"{line} {cid}: {v.live}" for (line, cid), v in found.items() if v.status == Status.DRIFTED
    ]
    return {
        "key": len(key),
        "recall": hits / len(key),
        "accuracy": right / hits if hits else 0.0,
        "missed": missed,
        "wrong": wrong,
        "extra": len(found),
        "false_drift": false_drift,
    }


@pytest.mark.parametrize("page", PAGES)
def test_recall_and_verdicts(page: str, live: LiveFacts) -> None:
    claims = extract_claims((CORPUS / page).read_text(), page)
    result = score(page, compare(claims, live))
    print(
        f"\n{page}: {result['key']} claims in the key, recall {result['recall']:.0%}, "
        f"verdicts right {result['accuracy']:.0%}, {result['extra']} other claims; "
        f"missed {result['missed']}, wrong {result['wrong']}"
    )
    assert result["recall"] >= 0.9, result
    assert result["accuracy"] == 1.0, result
    assert not result["false_drift"], result


def test_corpus_has_five_pages_in_different_styles() -> None:
    assert len(PAGES) >= 5
