"""Staleness by a doc's own review date, and undocumented things grouped by kind."""

from __future__ import annotations

from datetime import date

from labops.docs.models import Undocumented
from labops.docs.report import DocReport
from labops.docs.staleness import review_date, stale_docs
from tasks.docs import last_changed


def test_review_date_is_the_newest_the_doc_states() -> None:
    text = "Last reviewed: 2024-06-01\n...\nUpdated 2025-01-10.\nrelease 2026-01-01"
    assert review_date(text) == date(2025, 1, 10)
    assert review_date("no date here, 2024-13-40 either") is None


def test_a_doc_older_than_allowed_is_stale_with_its_drift() -> None:
    texts = {"old.md": "Reviewed: 2024-06-01\n", "new.md": "Updated 2026-11-30\n", "x.md": ""}
    stale = stale_docs(texts, [], date(2026, 12, 5), 365)
    assert [(s.file, s.drifted) for s in stale] == [("old.md", 0)]
    assert stale[0].age_days == (date(2026, 12, 5) - date(2024, 6, 1)).days


def test_undocumented_is_one_line_per_kind() -> None:
    report = DocReport(lab="t")
    report.undocumented = [
        Undocumented(kind="router", entity=f"r{i}", source="traefik") for i in range(42)
    ]
    md = report.markdown()
    assert "42 traefik router(s) not mentioned" in md
    assert md.count("<details>") == 1


def test_without_a_stated_date_the_last_commit_dates_a_doc() -> None:
    log = b"@1764547200\n\ndocs/new.md\n@1700000000\n\ndocs/old.md\ndocs/new.md\nREADME.md\n"
    changed = last_changed(log, "docs")
    assert changed == {"new.md": date(2025, 12, 1), "old.md": date(2023, 11, 14)}
    texts = {"new.md": "", "old.md": "", "dated.md": "Reviewed: 2026-05-01"}
    stale = stale_docs(texts, [], date(2026, 6, 1), 365, changed | {"dated.md": date(2020, 1, 1)})
    assert [(s.file, s.dated_by) for s in stale] == [("old.md", "last commit")]
