"""The doc reconciliation report: the drift table, the proposed diff, what nobody documented."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from labops.docs.models import Status, Undocumented, Verdict
from labops.docs.staleness import StaleDoc
from labops.markdown import md_block, md_code, md_text
from labops.metrics import Metric
from labops.outcome import Found
from labops.reports import Notification, OperationReport, Severity


class DocReport(OperationReport):
    operation: str = "doc_reconcile"
    documents: list[str] = Field(default_factory=list)
    not_read: list[str] = Field(
        default_factory=list,
        description="Files skipped with why: symlinks and submodules are never followed.",
    )
    commit: str | None = Field(None, description="Commit of the docs repository that was checked.")
    verdicts: list[Verdict] = Field(default_factory=list)
    undocumented: list[Undocumented] = Field(default_factory=list)
    diff: str = ""
    branch: str | None = Field(None, description="Branch holding the proposed fix, if written.")
    previous_drift: int | None = None
    llm_note: str = Field("", description="What the optional LLM pass did, or why it did not.")
    stale: list[StaleDoc] = Field(
        default_factory=list, description="Docs whose own review date is older than allowed."
    )

    def count(self, status: Status) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def drifted(self) -> int:
        return self.count(Status.DRIFTED)

    def found(self) -> list[Found]:
        """Warning: a documented value that no longer matches the lab. Info: what is live but
        undocumented, and claims nothing live can confirm. A source that could not be read is a
        failure (in ``failures``)."""

        def claims(status: Status) -> list[str]:
            return [
                f"{v.claim.file}:{v.claim.line} {v.claim.subject}"
                for v in self.verdicts
                if v.status == status
            ]

        return [
            *Found.of(Severity.WARNING, "claim(s) drifted", claims(Status.DRIFTED), shown=3),
            *Found.of(
                Severity.INFO,
                "item(s) live but undocumented",
                [u.entity for u in self.undocumented],
                shown=3,
            ),
            *Found.of(Severity.INFO, "claim(s) unverifiable", claims(Status.UNVERIFIABLE), shown=3),
            *Found.of(
                Severity.WARNING,
                "doc(s) stale",
                [f"{s.file} (reviewed {s.reviewed}, {s.drifted} drifted)" for s in self.stale],
                shown=3,
            ),
        ]

    def table(self) -> list[dict[str, Any]]:
        order = {Status.DRIFTED: 0, Status.UNVERIFIABLE: 1, Status.MATCH: 2}
        rows = sorted(self.verdicts, key=lambda v: (order[v.status], v.claim.file, v.claim.line))
        return [
            {
                "claim": v.claim.text[:120],
                "location": f"{v.claim.file}:{v.claim.line}",
                "documented": v.documented,
                "live": v.live or "",
                "status": v.status.value + (f" ({v.reason})" if v.reason else ""),
                "source": v.claim.source,
            }
            for v in rows
        ]

    def markdown(self) -> str:
        t = md_text
        lines = [
            f"# Doc reconciliation: {self.drifted} drifted, {self.count(Status.MATCH)} match, "
            f"{self.count(Status.UNVERIFIABLE)} unverifiable",
            "",
            f"Documents: {', '.join(t(d) for d in self.documents) or 'none'}"
            + (f" at commit {md_code(self.commit[:12])}" if self.commit else ""),
        ]
        if self.not_read:
            lines += ["", "## Not read", ""] + [f"- {n}" for n in self.not_read]
        if self.drifted:
            lines += ["", "## Drifted", ""]
            lines += [
                f"- {md_code(f'{v.claim.file}:{v.claim.line}')} {t(v.claim.subject)}: documented "
                f"{t(v.documented)}, live {t(v.live)}" + (f" ({t(v.reason)})" if v.reason else "")
                for v in self.verdicts
                if v.status == Status.DRIFTED
            ]
        if self.stale:
            lines += ["", "## Stale docs", ""]
            lines += [
                f"- {t(s.file)}: {'reviewed' if s.dated_by == 'the doc' else 'last commit'} "
                f"{s.reviewed} ({s.age_days} days ago), {s.drifted} drifted claim(s)"
                for s in self.stale
            ]
        if self.undocumented:
            # One line per kind; the things themselves folded away (a lab has dozens).
            lines += ["", "## Live but undocumented", ""]
            kinds: dict[tuple[str, str], list[str]] = {}
            for u in self.undocumented:
                kinds.setdefault((u.kind, u.source), []).append(u.entity)
            for (kind, source), entities in kinds.items():
                lines += [
                    f"<details><summary>{len(entities)} {t(source)} {t(kind)}(s) not mentioned"
                    "</summary>",
                    "",
                    *[f"- {t(e)}" for e in entities],
                    "",
                    "</details>",
                ]
        unverifiable = [v for v in self.verdicts if v.status == Status.UNVERIFIABLE]
        if unverifiable:
            lines += ["", "## Unverifiable", ""]
            lines += [
                f"- {md_code(f'{v.claim.file}:{v.claim.line}')} {t(v.claim.subject)}: {t(v.reason)}"
                for v in unverifiable
            ]
        if self.llm_note:
            lines += ["", f"LLM pass: {t(self.llm_note)} (proposals are listed, never applied)."]
        if self.skipped:
            lines += ["", "## Skipped", ""] + [f"- {t(s)}" for s in self.skipped]
        if self.diff:
            lines += ["", "## Proposed patch", "", md_block(self.diff, "diff")]
        if self.branch:
            lines += ["", f"Committed on branch {md_code(self.branch)}."]
        return "\n".join(lines)

    def metrics(self) -> list[Metric]:
        labels = {"lab": self.lab}
        return [
            Metric(name="labops_docs_drifted_claims", value=self.drifted, labels=labels),
            Metric(
                name="labops_docs_unverifiable_claims",
                value=self.count(Status.UNVERIFIABLE),
                labels=labels,
            ),
            Metric(
                name="labops_docs_undocumented_items", value=len(self.undocumented), labels=labels
            ),
        ]

    def notification(self) -> Notification | None:
        grew = self.previous_drift is None or self.drifted > self.previous_drift
        if not (self.drifted and grew) and not self.failures:
            return None
        body = [
            f"{v.claim.file}:{v.claim.line} {v.claim.subject}: {v.documented} -> {v.live}"
            for v in self.verdicts
            if v.status == Status.DRIFTED
        ]
        body += [f"failure: {f.entity}: {f.reason}" for f in self.failures]
        return Notification(
            title=f"{self.lab}: docs drifted ({self.drifted} claims)",
            severity=Severity.WARNING,
            body="\n".join(body),
            topic="docs/drift",
            payload={
                "drifted": self.drifted,
                "undocumented": len(self.undocumented),
                "branch": self.branch,
            },
        )
