"""Text from outside is inert in every report's markdown artifact.

Each report is rendered twice: with plain words, and with attacker text in every field that
comes from outside (alert titles, scenario names, host and guest names, failure reasons, doc
lines, package names). Parsed by a CommonMark parser (markdown-it, tables on), both documents
must have the same structure: no line, heading, list item, table cell, link, image, HTML or
code span of the attacker's. GFM also links bare URLs, www. names and e-mail addresses, which
CommonMark does not: those are checked on the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from labops.backups.report import BackupReport, GuestRow, GuestStatus, RestoreDrillReport
from labops.certificates.classify import CertStatus, Classification
from labops.certificates.models import Target
from labops.certificates.report import CertificateReport, EndpointResult, RenewalResult
from labops.digest.findings import Finding
from labops.digest.render import as_text, load_template, render_markdown
from labops.docs.models import Claim, ClaimKind, Status, Undocumented, Verdict
from labops.docs.report import DocReport
from labops.docs.staleness import StaleDoc
from labops.housekeeping import HousekeepingReport
from labops.markdown import md_block, md_code, md_text
from labops.patching.report import HostApply, HostCheck, PatchReport
from labops.reports import Failure, Severity

EVIL = (
    "x]) \n\n# injected heading\n| a | b |\n|---|---|\n- item\n1. one\n"
    "[link](https://evil.example/a) ![img](https://evil.example/i.png) "
    '<img src=x onerror="alert(1)"> <b>html</b> `code` ``two`` \\| '
    "www.evil.example mail@evil.example https://evil.example/bare <https://evil.example/auto>"
    "\r\n> quote\u2028line\x00end"
)
# as long as EVIL: a value wider than a table cell is shortened there and written out below the
# table for both, so the two documents differ only where the attacker's text would add something
PLAIN = " ".join(["plain words"] * 30)
GFM_AUTOLINKS = re.compile(r"(?i)https?://|www\.|[\w.+-]+@[\w-]+\.\w")
PARSER = MarkdownIt("commonmark").enable("table")
INLINE_NOISE = {"text", "em_open", "em_close", "strong_open", "strong_close"}


def structure(markdown: str) -> list[tuple[str, ...]]:
    """Block tokens, and the inline tokens that are not plain text, in order."""
    out: list[tuple[str, ...]] = []

    def walk(tokens: list[Token]) -> None:
        for tok in tokens:
            if tok.type == "inline":
                walk(tok.children or [])
            elif tok.type not in INLINE_NOISE:
                out.append((tok.type, tok.tag, str(tok.nesting)))

    walk(PARSER.parse(markdown))
    return out


def shown_text(markdown: str) -> str:
    """The text a reader sees outside code (where GFM looks for bare links)."""
    out: list[str] = []
    for tok in PARSER.parse(markdown):
        out += [c.content for c in tok.children or [] if c.type == "text"]
    return "\n".join(out)


def assert_inert(build: Callable[[str], str]) -> None:
    plain, hostile = build(PLAIN), build(EVIL)
    assert structure(hostile) == structure(plain), hostile
    seen = shown_text(hostile)
    assert not GFM_AUTOLINKS.search(seen), GFM_AUTOLINKS.findall(seen)
    assert "evil" in seen  # shown, as text, not dropped


def test_a_table_cell_is_never_wider_than_the_ui_shows() -> None:
    """A long value is cut in its cell with a numbered mark, and written out in full below."""
    from labops.markdown import CELL_CHARS, md_table

    reason = "TLS handshake failed: " + "certificate signed by an unknown authority " * 4
    lines = md_table(["target", "reason"], [["traefik.lab.internal:443", reason], ["b", "ok"]])
    tokens = PARSER.parse("\n".join(lines))
    cells = [t.content for t in tokens if t.type == "inline" and t.map and t.map[0] < 4]
    assert cells[:2] == ["target", "reason"] and len(cells) == 6
    assert all(len(c) <= CELL_CHARS for c in cells), cells
    assert cells[3].endswith("\u2026 (1)") and cells[5] == "ok"
    assert lines[-1] == f"- (1) {md_text(reason)}"  # the full text, below the table


def test_md_text_is_one_inert_line() -> None:
    text = md_text(EVIL)
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    assert structure(f"- {text}") == structure("- x")
    assert structure(f"| a | b |\n|---|---|\n| {text} | {text} |") == structure(
        "| a | b |\n|---|---|\n| x | y |"
    )
    assert md_text("pve1.lab.internal") == "pve1.lab.internal"  # ordinary text unchanged
    assert md_text("203.0.113.7") == "203.0.113.7"
    assert len(md_text("y" * 5000)) == 1000


def test_an_llm_answer_is_quoted_text_line_by_line() -> None:
    quoted = as_text(EVIL)
    kinds = {t for t, _, _ in structure(quoted)}
    assert kinds <= {"blockquote_open", "blockquote_close", "paragraph_open", "paragraph_close"} | {
        "softbreak"
    }, quoted
    assert not GFM_AUTOLINKS.search(shown_text(quoted))


def test_code_spans_and_blocks_hold_any_backticks() -> None:
    assert structure(f"a {md_code('x`` `y` |z')} b") == structure("a `c` b")
    block = md_block("+ ok\n```\n# not a heading\n````\n", "diff")
    tokens = PARSER.parse(block)
    assert [t.type for t in tokens] == ["fence"] and "# not a heading" in tokens[0].content


def backups(text: str) -> str:
    row = GuestRow(
        vmid=101,
        name=text,
        node=text,
        tier="24h",
        rpo_s=3600,
        status=GuestStatus.WOULD_BACK_UP,
        reason=text,
        verified=text,
    )
    report = BackupReport(dry_run=True, guests=[row], skipped=[text], warnings=[text])
    report.failures.append(Failure(entity=text, reason=text))
    return report.markdown()


def drill(text: str) -> str:
    report = RestoreDrillReport(
        vmid=101, name=text, volid=text, node=text, storage=text, reason=text, steps=[text]
    )
    report.checks[text] = False
    report.failures.append(Failure(entity=text, reason=text))
    return report.markdown()


def housekeeping(text: str) -> str:
    return HousekeepingReport(retention_days=30, slots_released=[text]).markdown()


def patching(text: str) -> str:
    report = PatchReport(
        mode="apply",
        hosts=[HostCheck(host=text, state="updates", excluded=[text])],
        applied=[HostApply(host=text, detail=text, held_back=[text], outcome="failed")],
        approval=text,
        stopped=text,
        leftover_snapshots=[text],
        skipped=[text],
    )
    report.failures.append(Failure(entity=text, reason=text))
    return report.markdown()


def certificates(text: str) -> str:
    soon = datetime.now(UTC) + timedelta(days=3)
    endpoint = EndpointResult(
        target=Target(name=text, address="10.0.0.5", sources=(text,)),
        status=CertStatus.CRITICAL,
        reason=text,
        classification=Classification(
            status=CertStatus.CRITICAL, expires=soon, seconds_left=3 * 86400.0
        ),
    )
    report = CertificateReport(
        endpoints=[endpoint],
        renewals=[RenewalResult(node=text, action="failed", detail=text)],
        skipped=[text],
    )
    report.failures.append(Failure(entity=text, reason=text))
    return report.markdown()


def docs(text: str) -> str:
    claim = Claim(kind=ClaimKind.GUEST, file=text, line=3, text=text, subject=text)
    report = DocReport(
        documents=[text],
        commit=text,
        verdicts=[
            Verdict(claim=claim, status=Status.DRIFTED, documented=text, live=text, reason=text),
            Verdict(claim=claim, status=Status.UNVERIFIABLE, documented=text, reason=text),
        ],
        undocumented=[Undocumented(kind="guest", entity=text, source=text)],
        stale=[StaleDoc(file=text, reviewed=date(2024, 1, 1), age_days=700, drifted=1)],
        llm_note=text,
        skipped=[text],
        diff=f"--- a\n+++ b\n+{text}\n",
        branch=text,
    )
    return report.markdown()


def digest(text: str) -> str:
    finding = Finding(source="crowdsec", severity=Severity.CRITICAL, title=text, entity=text)
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    return render_markdown(
        load_template(None),
        lab="homelab",
        period="daily",
        window_start=now - timedelta(days=1),
        window_end=now,
        findings=[finding],
        resolved=[finding],
        problems=[text],
        sources_ok=[text],
        new_bans=[text],
        suppressed_count=1,
        summary=as_text("the model's answer\nsecond line"),  # inert: see the next test
        summary_note=None,
        max_shown=10,
    )


@pytest.mark.parametrize(
    "build",
    [backups, drill, housekeeping, patching, certificates, docs, digest],
    ids=lambda b: b.__name__,
)
def test_outside_text_cannot_change_a_report(build: Callable[[str], str]) -> None:
    assert_inert(build)
