"""The reports of the backups flow and the restore drill: one model each, four views (JSON, table
and markdown artifacts, one notification, metrics)."""

from __future__ import annotations

import time
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from labops.backups.archive import ArchivedGroup
from labops.backups.drill_proof import DrillCoverage, DrillTimes
from labops.backups.models import JobCheck, OrphanGroup, RetentionGroup
from labops.backups.namespaces import NamespaceCoverage, ns_name
from labops.backups.offsite import OffsiteRow
from labops.backups.plan import human_age
from labops.config.policies.backups import format_duration
from labops.markdown import md_table, md_text
from labops.metrics import Metric
from labops.outcome import Checked, CouldNotCheck, Found, UnknownSince, check_columns
from labops.reports import Notification, OperationReport, Severity


class GuestStatus(StrEnum):
    BACKED_UP = "backed-up"
    WARNING = "backed-up-with-warnings"
    FRESH = "fresh"  # skipped: last good backup inside its window
    WOULD_BACK_UP = "would-back-up"  # dry run
    FAILED = "failed"
    NOT_BACKED_UP = "not-backed-up"  # node offline
    EXCLUDED = "excluded"
    TEMPLATE = "template"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + "Z" if ts else "never"


def _size(n: int | None) -> str:
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class GuestRow(BaseModel):
    """One guest's line of the report."""

    vmid: int
    name: str
    node: str
    tier: str | None = None
    rpo_s: float | None = None
    status: GuestStatus
    reason: str = ""
    last_good: float | None = Field(None, description="Time of the last good backup (epoch).")
    last_good_volid: str | None = None
    age_s: float | None = None
    size: int | None = None
    verified: str = Field("-", description="ok | never | failed | verified Nd ago ...")
    locations: list[str] = Field(
        default_factory=list,
        description="Storages holding its backups, PBS ones with datastore/namespace.",
    )
    problems: list[str] = Field(default_factory=list)
    upid: str | None = None
    duration_s: float | None = None
    unknown: CouldNotCheck | None = Field(
        None, description="Why this guest's recovery point could not be checked, since when."
    )

    @property
    def check(self) -> Checked | None:
        """ok, found (failed, stale, not backed up, a verification problem) or unknown (its
        backups could not be listed); None for guests left out (excluded, templates)."""
        if not self.watched:
            return None
        if self.unknown is not None:
            return Checked.UNKNOWN
        if self.status in (GuestStatus.FAILED, GuestStatus.NOT_BACKED_UP):
            return Checked.FOUND
        return Checked.FOUND if self.stale or self.problems else Checked.OK

    @property
    def severity(self) -> Severity:
        """What the security digest ranks a found row by: a failed backup is critical."""
        check = self.check
        if check is Checked.FOUND:
            return Severity.CRITICAL if self.status is GuestStatus.FAILED else Severity.WARNING
        return Severity.WARNING if check is Checked.UNKNOWN else Severity.OK

    @property
    def label(self) -> str:
        return f"guest {self.vmid} ({self.name})" if self.name else f"guest {self.vmid}"

    @property
    def watched(self) -> bool:
        """Selected for backups (so its RPO is checked)."""
        return self.status not in (GuestStatus.EXCLUDED, GuestStatus.TEMPLATE)

    @property
    def verify_failed(self) -> bool:
        """The latest PBS verification of this guest's backups failed (see backup_audit)."""
        return self.verified.startswith("FAILED")

    @property
    def stale(self) -> bool:
        """Last good backup older than the RPO; never claimed (nor denied) for an unknown row."""
        if not self.watched or self.unknown is not None:
            return False
        return self.age_s is None or (self.rpo_s is not None and self.age_s > self.rpo_s)


class BackupReport(OperationReport):
    """Every guest's recovery point, what this run did, and the coverage audit."""

    operation: str = "backups"
    guests: list[GuestRow] = Field(default_factory=list)
    offline_nodes: list[str] = Field(default_factory=list)
    not_in_job: list[str] = Field(
        default_factory=list, description="Guests in no scheduled backup job (PVE's own view)."
    )
    job_gaps: list[str] = Field(
        default_factory=list,
        description="Guests in a backup job, but none enabled that writes where their backups "
        "count.",
    )
    orphans: list[OrphanGroup] = Field(default_factory=list)
    archived: list[ArchivedGroup] = Field(
        default_factory=list, description="Backups of deleted guests kept on purpose."
    )
    archive_changes: list[str] = Field(
        default_factory=list, description="What changed in the archived backups since last run."
    )
    templates_unprotected: list[str] = Field(default_factory=list)
    retention_options: dict[str, int] = Field(default_factory=dict)
    retention: list[RetentionGroup] = Field(default_factory=list)
    pbs_jobs: list[JobCheck] = Field(default_factory=list)
    namespaces: list[NamespaceCoverage] = Field(
        default_factory=list,
        description="Whether PBS's verify and prune jobs reach each namespace holding backups.",
    )
    vzdump_started: int = Field(0, description="vzdump tasks this run started.")
    warnings: list[str] = Field(default_factory=list)
    offsite: list[OffsiteRow] = Field(
        default_factory=list, description="Each guest's newest copy on each off-site target."
    )
    offsite_since: dict[str, datetime] = Field(
        default_factory=dict, description="Off-site row key -> since when it could not be checked."
    )

    # --- off-site copies ----------------------------------------------------------------------

    @staticmethod
    def offsite_key(row: OffsiteRow) -> str:
        return f"{row.vmid}@{row.target}"

    def offsite_check(self, row: OffsiteRow) -> tuple[Checked, CouldNotCheck | None]:
        """found (a known problem: stale, missing, no job, a failed sync, even when the target
        itself could not be read), unknown (the copy could not be checked: why, since when),
        else ok."""
        unknown = None
        if row.unknown is not None:
            since = self.offsite_since.get(self.offsite_key(row), self.started)
            unknown = CouldNotCheck(reason=row.unknown, since=since)
        if row.problem:
            return Checked.FOUND, unknown
        return (Checked.UNKNOWN, unknown) if unknown else (Checked.OK, None)

    @property
    def offsite_problems(self) -> list[OffsiteRow]:
        return [r for r in self.offsite if r.problem]

    @property
    def offsite_unknown(self) -> list[OffsiteRow]:
        return [r for r in self.offsite if r.unknown is not None and not r.problem]

    def date_offsite_unknown(self, book: UnknownSince) -> UnknownSince:
        """Date every off-site row that could not be checked from its first such run; returns
        the memory for the next run (see :meth:`date_unknown`)."""
        book = book.carry(
            {self.offsite_key(r): self.started for r in self.offsite if r.unknown is not None},
            [self.offsite_key(r) for r in self.offsite if r.unknown is None],
        )
        self.offsite_since = {
            self.offsite_key(r): book.since.get(self.offsite_key(r), self.started)
            for r in self.offsite
            if r.unknown is not None
        }
        return book

    def unchecked(self) -> list[str]:
        """Off-site copies that could not be checked, one line per target and reason; PBS
        namespaces whose verify or prune coverage could not be checked."""
        offsite = sorted(
            {f"off-site copies on {r.target}: {r.unknown}" for r in self.offsite_unknown}
        )
        return offsite + [n.unchecked for n in self.namespaces if n.unchecked]

    # --- derived -----------------------------------------------------------------------------

    def rows(self, *statuses: GuestStatus) -> list[GuestRow]:
        return [r for r in self.guests if r.status in statuses]

    @property
    def stale(self) -> list[GuestRow]:
        return [r for r in self.guests if r.stale]

    @property
    def verification_problems(self) -> list[GuestRow]:
        return [r for r in self.guests if r.watched and any("verif" in p for p in r.problems)]

    @property
    def gaps(self) -> list[str]:
        """Coverage gaps: guests in no job, orphans, unprotected templates, stale PBS jobs."""
        out = [f"not in any backup job: {g}" for g in self.not_in_job]
        out += self.job_gaps
        out += [
            f"orphan backups of guest {o.vmid} on {o.storage}: {o.count} ({_size(o.size)})"
            for o in self.orphans
        ]
        out += [f"template without a backup: {t}" for t in self.templates_unprotected]
        out += [f"PBS {j.job}: {j.detail}" for j in self.pbs_jobs if not j.ok]
        out += [n.gap for n in self.namespaces if n.gap]
        return out

    def found(self) -> list[Found]:
        """Critical: a guest past its RPO, a failed verification. Warning: no recent
        verification, a coverage gap (no job, orphans, unprotected template, PBS maintenance
        too old), a backup that ended with warnings. Info: the notes. A guest whose backup
        failed, or that an offline node kept from its backup, is a failure, not a finding."""
        verification = self.verification_problems
        return [
            *Found.of(Severity.CRITICAL, "guest(s) past their RPO", [r.label for r in self.stale]),
            *Found.of(
                Severity.CRITICAL,
                "guest(s) whose latest verification failed",
                [r.label for r in verification if r.verify_failed],
            ),
            *Found.of(
                Severity.WARNING,
                "guest(s) without a recent verification",
                [r.label for r in verification if not r.verify_failed],
            ),
            *Found.of(Severity.WARNING, "coverage gap(s)", self.gaps, shown=3),
            *Found.of(Severity.WARNING, "archived backup change(s)", self.archive_changes, shown=3),
            *Found.of(
                Severity.WARNING,
                "guest(s) backed up with warnings",
                [r.label for r in self.rows(GuestStatus.WARNING)],
            ),
            *Found.of(
                Severity.WARNING,
                "guest(s) without a fresh off-site copy",
                [f"{r.label} on {r.target}" for r in self.offsite_problems],
            ),
            *Found.of(Severity.INFO, "note(s)", self.warnings, shown=3),
        ]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {s.value: 0 for s in GuestStatus}
        for row in self.guests:
            out[row.status.value] += 1
        out["stale"] = len(self.stale)
        return out

    # --- views ------------------------------------------------------------------------------

    def table(self) -> list[dict[str, Any]]:
        """One row per guest, then one per guest and off-site target (its own entity)."""
        return self._guest_table() + self._offsite_table()

    def _offsite_table(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.offsite:
            check, unknown = self.offsite_check(r)
            rows.append(
                {
                    "guest": f"{r.vmid} {r.name}".strip() + f" off-site {r.target}",
                    "node": "-",
                    "tier": f"off-site {format_duration(r.rpo_s)}",
                    "last good backup": _when(r.newest),
                    "age": human_age(r.age_s),
                    "size": "-",
                    "locations": r.target,
                    "verified": "-",
                    # the digest names a finding by the status up to its first ":"
                    "status": f"off-site {r.status.value}"
                    + (f": {r.problem}" if r.problem else ""),
                    "severity": (
                        Severity.WARNING if check is not Checked.OK else Severity.OK
                    ).value,
                    **check_columns(check, unknown),
                }
            )
        return rows

    def _guest_table(self) -> list[dict[str, Any]]:
        return [
            {
                "guest": f"{r.vmid} {r.name}".strip(),
                "node": r.node,
                "tier": r.tier or "-",
                "last good backup": _when(r.last_good),
                "age": human_age(r.age_s),
                "size": _size(r.size),
                "locations": ", ".join(r.locations) or "-",
                "verified": r.verified,
                "status": r.status.value + (" (stale)" if r.stale else ""),
                "severity": r.severity.value,
                **check_columns(r.check, r.unknown),
            }
            for r in self.guests
        ]

    def date_unknown(self, book: UnknownSince) -> UnknownSince:
        """Date every guest whose backups could not be listed from its first such run (as
        ``book``, the previous runs' memory, knows it); returns the memory for the next run."""
        book = book.carry(
            {str(r.vmid): r.unknown.since for r in self.guests if r.unknown is not None},
            [str(r.vmid) for r in self.guests if r.check in (Checked.OK, Checked.FOUND)],
        )
        for r in self.guests:
            if r.unknown is not None:
                r.unknown = r.unknown.earlier(book.since.get(str(r.vmid)))
        return book

    @property
    def unknown(self) -> list[GuestRow]:
        return [r for r in self.guests if r.check is Checked.UNKNOWN]

    def headline(self) -> str:
        c = self.counts()
        if self.dry_run:
            parts = [f"{c['would-back-up']} would be backed up (dry run)", f"{c['fresh']} fresh"]
        else:
            parts = [
                f"{c['backed-up'] + c['backed-up-with-warnings']} backed up",
                f"{c['fresh']} fresh",
            ]
        if c["failed"]:
            parts.append(f"{c['failed']} failed")
        if c["not-backed-up"]:
            parts.append(f"{c['not-backed-up']} not backed up")
        if c["stale"]:
            parts.append(f"{c['stale']} stale")
        if self.unknown:
            parts.append(f"{len(self.unknown)} could not be checked")
        gaps = self.gaps
        if gaps:
            parts.append(f"{len(gaps)} coverage gap(s)")
        if self.offsite_problems:
            parts.append(f"{len(self.offsite_problems)} off-site problem(s)")
        if self.offsite_unknown:
            parts.append(f"{len(self.offsite_unknown)} off-site copies could not be checked")
        return ", ".join(parts)

    def markdown(self) -> str:
        t = md_text
        lines = [f"# Backups: {t(self.lab)}", "", self.headline(), ""]
        if self.failures:
            lines += ["## Failures", ""]
            lines += [f"- {t(f.entity)}: {t(f.reason)}" for f in self.failures]
            lines.append("")
        if self.dry_run:
            lines += ["## Would back up", ""]
            lines += [
                f"- {t(r.label)} on {t(r.node)}: {t(r.reason)}"
                for r in self.rows(GuestStatus.WOULD_BACK_UP)
            ] or ["- nothing"]
            lines.append("")
        if self.unknown:
            lines += ["## Could not check", ""]
            lines += [
                f"- {t(r.label)}: {t(r.unknown.describe())}" for r in self.unknown if r.unknown
            ]
            lines.append("")
        if self.stale:
            lines += ["## Stale (last good backup older than its RPO)", ""]
            lines += [
                f"- {t(r.label)}: last good {human_age(r.age_s)} ago, tier {t(r.tier)}"
                for r in self.stale
            ]
            lines.append("")
        if self.verification_problems:
            lines += ["## Verification", ""]
            lines += [f"- {t(r.label)}: {t(r.verified)}" for r in self.verification_problems]
            lines.append("")
        if self.gaps:
            lines += ["## Coverage gaps", ""] + [f"- {t(g)}" for g in self.gaps] + [""]
        if self.archived or self.archive_changes:
            lines += ["## Archived (backups of deleted guests kept on purpose)", ""]
            lines += [f"- CHANGED: {t(c)}" for c in self.archive_changes]
            lines += [
                f"- guest {a.vmid} on {t(a.storage)}: {a.count} backup(s), {_size(a.size)}, "
                f"newest {_when(a.newest)}, {t(a.why)}"
                + (f", keep until {a.keep_until}" if a.keep_until else "")
                + (f" - {t(a.note)}" if a.note else "")
                for a in self.archived
            ]
            lines.append("")
        lines += self._offsite_lines()
        if self.pbs_jobs:
            lines += ["## PBS maintenance", ""]
            lines += [
                f"- {t(j.job)}: {'ok' if j.ok else 'TOO OLD'} - {t(j.detail)}"
                for j in self.pbs_jobs
            ]
            lines.append("")
        if self.namespaces:
            lines += ["## PBS namespaces", ""]
            lines += [
                f"- {n.kind} of namespace {t(ns_name(n.namespace))} ({t(n.datastore)}, "
                f"{t(', '.join(n.storages))}): "
                + (
                    f"could not check - {t(n.unknown)}"
                    if n.unknown is not None
                    else (
                        f"ok - {t(', '.join(n.jobs))}"
                        if n.jobs
                        else ("no job, no backup group yet" if n.groups == 0 else "NO JOB")
                    )
                )
                for n in self.namespaces
            ]
            lines.append("")
        if self.retention:
            removable = sum(g.remove for g in self.retention)
            opts = ", ".join(f"{k}={v}" for k, v in self.retention_options.items()) or "keep all"
            lines += [
                "## Retention (dry run)",
                "",
                f"A prune with {t(opts)} would remove {removable} backup(s) of "
                f"{sum(1 for g in self.retention if g.remove)} guest(s).",
                "",
            ]
        if self.skipped:
            lines += ["## Skipped", ""] + [f"- {t(s)}" for s in self.skipped] + [""]
        if self.warnings:
            lines += ["## Notes", ""] + [f"- {t(w)}" for w in self.warnings] + [""]
        lines += [f"vzdump tasks started: {self.vzdump_started}"]
        return "\n".join(lines)

    def _offsite_lines(self) -> list[str]:
        if not self.offsite:
            return []
        t = md_text
        lines = [
            "## Off-site copies",
            "",
            "| guest | target | newest copy | age | off-site RPO | jobs | state |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.offsite:
            check, unknown = self.offsite_check(r)
            state = r.problem or (unknown.describe() if unknown else "ok")
            if r.problem and unknown:
                state += f"; {unknown.describe()}"
            lines.append(
                f"| {t(r.label)} | {t(r.target)} | {_when(r.newest)} | {human_age(r.age_s)} "
                f"| {format_duration(r.rpo_s)} | {t(', '.join(r.jobs) or '-')} "
                f"| {check.value}: {t(state)} |"
            )
        return [*lines, ""]

    def _offsite_metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for r in self.offsite:
            labels = {"vmid": str(r.vmid), "guest": r.name or str(r.vmid), "target": r.target}
            check, _ = self.offsite_check(r)
            # unknown: no age series (never a made-up 0), and its own indicator
            out.append(
                Metric(
                    name="labops_backup_offsite_unknown",
                    value=1.0 if r.unknown is not None else 0.0,
                    labels=labels,
                )
            )
            if r.age_s is not None:
                out.append(
                    Metric(name="labops_backup_offsite_age_seconds", value=r.age_s, labels=labels)
                )
            out.append(
                Metric(name="labops_backup_offsite_rpo_seconds", value=r.rpo_s, labels=labels)
            )
            if check is not Checked.UNKNOWN:
                out.append(
                    Metric(
                        name="labops_backup_offsite_problem",
                        value=1.0 if check is Checked.FOUND else 0.0,
                        labels=labels,
                    )
                )
        return out

    def metrics(self) -> list[Metric]:
        out: list[Metric] = self._offsite_metrics()
        for r in self.guests:
            if not r.watched or r.unknown is not None:  # unknown: no series, never a 0
                continue
            labels = {"vmid": str(r.vmid), "guest": r.name, "node": r.node, "tier": r.tier or ""}
            if r.last_good is not None:
                out.append(
                    Metric(
                        name="labops_backup_last_success_timestamp_seconds",
                        value=r.last_good,
                        labels=labels,
                    )
                )
                out.append(
                    Metric(name="labops_backup_size_bytes", value=float(r.size or 0), labels=labels)
                )
            if r.age_s is not None:
                out.append(Metric(name="labops_backup_age_seconds", value=r.age_s, labels=labels))
            if r.rpo_s is not None:  # beside the age, so a dashboard can hold one against the other
                out.append(Metric(name="labops_backup_rpo_seconds", value=r.rpo_s, labels=labels))
            out.append(
                Metric(name="labops_backup_stale", value=1.0 if r.stale else 0.0, labels=labels)
            )
        for status, n in self.counts().items():
            out.append(
                Metric(name="labops_backup_guests", value=float(n), labels={"status": status})
            )
        out.append(Metric(name="labops_backup_coverage_gaps", value=float(len(self.gaps))))
        out.append(Metric(name="labops_backup_archived_groups", value=float(len(self.archived))))
        return out

    def notification(self) -> Notification | None:
        stale, gaps, verif = self.stale, self.gaps, self.verification_problems
        changed, offsite = self.archive_changes, self.offsite_problems
        unchecked = self.unchecked()
        if not (self.failures or stale or gaps or verif or changed or offsite or unchecked):
            return None
        failed = bool(self.failures or unchecked)  # could not check: the run failed too
        severity = Severity.CRITICAL if failed else Severity.WARNING
        body: list[str] = [self.headline()]
        if self.failures:
            body += ["", "Failed:"] + [f"- {f.entity}: {f.reason}" for f in self.failures]
        if stale:
            body += ["", "Stale:"] + [
                f"- {r.label}: last good {human_age(r.age_s)} ago (tier {r.tier})" for r in stale
            ]
        if verif:
            body += ["", "Verification:"] + [f"- {r.label}: {r.verified}" for r in verif]
        if gaps:
            body += ["", "Coverage gaps:"] + [f"- {g}" for g in gaps]
        if changed:
            body += ["", "Archived backups changed:"] + [f"- {c}" for c in changed]
        if offsite:
            body += ["", "Off-site copies:"] + [f"- {r.label}: {r.problem}" for r in offsite]
        if unchecked:
            body += ["", "Could not check:"] + [f"- {u}" for u in unchecked]
        return Notification(
            title=f"Backups {self.lab}: " + ("FAILED" if failed else "attention needed"),
            severity=severity,
            body="\n".join(body),
            topic="backups/report",
            payload={
                "lab": self.lab,
                "dry_run": self.dry_run,
                "counts": self.counts(),
                "failures": [f.model_dump() for f in self.failures],
                "stale": [r.vmid for r in stale],
                "gaps": gaps,
                "archive_changes": changed,
                "offsite": [r.model_dump() for r in offsite],
            },
        )


class DrillResult(BaseModel):
    """One restore drill, as remembered between runs."""

    vmid: int
    name: str = ""
    ok: bool
    when: float
    duration_s: float | None = None
    volid: str | None = None
    reason: str = ""
    times: DrillTimes | None = None


class DrillHistory(BaseModel):
    """What the drill flow remembers in the state store: the last drill of each guest, and the
    recovery times of its recent passed drills (oldest first)."""

    last: dict[int, DrillResult] = Field(default_factory=dict)
    rtos: dict[int, list[float]] = Field(default_factory=dict)

    def when(self) -> dict[int, float]:
        """vmid -> when the guest was last drilled."""
        return {vmid: r.when for vmid, r in self.last.items()}


class RestoreDrillReport(OperationReport):
    """A restore drill: which backup, restored where, what was checked, how long it took."""

    operation: str = "restore_drill"
    vmid: int | None = None
    name: str = ""
    volid: str | None = None
    backup_location: str | None = Field(
        None,
        description="Where the backup is: its PVE storage, and for PBS its datastore and "
        "namespace (pbs-home (store1/home)); PVE's volume id names the storage only.",
    )
    backup_time: float | None = None
    scratch_vmid: int | None = None
    node: str | None = None
    storage: str | None = None
    tag: str | None = Field(None, description="The tag marking this run's scratch guest.")
    pool: str | None = Field(None, description="The PVE pool the scratch guest is restored into.")
    left: list[str] = Field(
        default_factory=list,
        description="Guests the drill did not destroy and why: for the operator to look at.",
    )
    steps: list[str] = Field(default_factory=list, description="What was done, in order.")
    checks: dict[str, bool] = Field(default_factory=dict)
    ok: bool = False
    duration_s: float | None = None
    reason: str = Field("", description="Why this guest was chosen, or why the drill failed.")
    times: DrillTimes = Field(default_factory=DrillTimes)
    rto_baseline_s: float | None = Field(
        None, description="The guest's recent recovery time (median of its last passed drills)."
    )
    rto_regression: str | None = Field(
        None, description="Why this drill's recovery time is a regression (a finding)."
    )
    coverage: DrillCoverage | None = None
    not_checked: list[str] = Field(
        default_factory=list,
        description="Checks that could not run inside the scratch guest, each with why.",
    )

    def unchecked(self) -> list[str]:
        return [f"{self.label}: could not check {x}" for x in self.not_checked]

    def found(self) -> list[Found]:
        """Warning: a recovery time above the guest's baseline by more than the configured
        margin; guests in scope not drilled within the period. A drill that failed (a check, the
        restore, the boot) is a failure, not a finding."""
        out = []
        if self.rto_regression:
            out.append(
                Found(severity=Severity.WARNING, what=f"{self.label}: {self.rto_regression}")
            )
        if self.coverage is not None:
            out += Found.of(
                Severity.WARNING,
                f"guest(s) not drilled within {format_duration(self.coverage.period_s)}",
                [g.label for g in self.coverage.overdue],
            )
        return out

    @property
    def label(self) -> str:
        return f"guest {self.vmid} ({self.name})" if self.name else f"guest {self.vmid}"

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "guest": f"{self.vmid} {self.name}".strip() if self.vmid else "-",
                "backup": self.volid or "-",
                "backup time": _when(self.backup_time),
                "scratch vmid": self.scratch_vmid or "-",
                "node": self.node or "-",
                "result": "dry run" if self.dry_run else ("ok" if self.ok else "FAILED"),
                "duration": human_age(self.duration_s),
            }
        ]

    def markdown(self) -> str:
        t = md_text
        result = "dry run" if self.dry_run else ("passed" if self.ok else "FAILED")
        lines = [
            f"# Restore drill: {result}",
            "",
            f"- guest: {self.vmid} {t(self.name)}",
            f"- backup: {t(self.volid or '-')} ({_when(self.backup_time)})"
            + (f", on {t(self.backup_location)}" if self.backup_location else ""),
            f"- restored as: {self.scratch_vmid or '-'} on {t(self.node or '-')}"
            f" / {t(self.storage or '-')}",
            f"- marked with: tag {t(self.tag or '-')}, pool {t(self.pool or '-')}",
            f"- duration: {human_age(self.duration_s)}",
            f"- why: {t(self.reason)}" if self.reason else "",
            "",
            "## Steps",
            "",
        ]
        lines += [f"{i}. {t(s)}" for i, s in enumerate(self.steps, 1)] or ["nothing done"]
        if self.checks:
            lines += ["", "## Checks", ""]
            lines += [f"- {t(k)}: {'ok' if v else 'FAILED'}" for k, v in self.checks.items()]
        lines += self._recovery_lines() + self._coverage_lines()
        if self.not_checked:
            lines += ["", "## Could not check", ""] + [f"- {t(x)}" for x in self.not_checked]
        if self.left:
            lines += ["", "## Left for the operator", ""] + [f"- {t(x)}" for x in self.left]
        if self.failures:
            lines += ["", "## Failures", ""]
            lines += [f"- {t(f.entity)}: {t(f.reason)}" for f in self.failures]
        return "\n".join(lines)

    def _recovery_lines(self) -> list[str]:
        times = self.times
        if times.restore_s is None:
            return []
        lines = ["", "## Recovery time", ""]
        lines.append(f"- restore: {human_age(times.restore_s)}")
        lines.append(f"- start to healthy boot: {human_age(times.boot_s)}")
        lines.append(f"- total (restore to service checked): {human_age(times.rto_s)}")
        if self.rto_baseline_s is not None:
            lines.append(f"- baseline: {human_age(self.rto_baseline_s)}")
        if self.rto_regression:
            lines.append(f"- REGRESSION: {md_text(self.rto_regression)}")
        return lines

    def _coverage_lines(self) -> list[str]:
        cov = self.coverage
        if cov is None:
            return []
        lines = [
            "",
            "## Rotation",
            "",
            f"- drilled within {format_duration(cov.period_s)}: {cov.drilled} of {cov.in_scope} "
            f"guest(s) ({cov.percent:.0f}%); keeping up takes {cov.pace_per_week:.1f} drill(s) "
            "a week",
        ]
        if cov.overdue:
            names = ", ".join(md_text(g.label) for g in cov.overdue[:10])
            more = f" and {len(cov.overdue) - 10} more" if len(cov.overdue) > 10 else ""
            lines.append(f"- overdue, oldest first: {names}{more}")
        rows: list[list[object]] = [
            [
                g.label,
                _when(g.last_drill) if g.last_drill else "never",
                _when(g.due) if g.due else "now",
            ]
            for g in cov.next_due
        ]
        lines += ["", *md_table(["next due", "last drill", "due"], rows)]
        return lines

    def metrics(self) -> list[Metric]:
        if self.dry_run or self.vmid is None:
            return []
        labels = {"vmid": str(self.vmid), "guest": self.name}
        out = [
            Metric(
                name="labops_restore_drill_success", value=1.0 if self.ok else 0.0, labels=labels
            )
        ]
        if self.ok:
            out.append(
                Metric(
                    name="labops_restore_drill_last_success_timestamp_seconds",
                    value=time.time(),
                    labels=labels,
                )
            )
        if self.duration_s is not None:
            out.append(
                Metric(
                    name="labops_restore_drill_duration_seconds",
                    value=self.duration_s,
                    labels=labels,
                )
            )
        phases = {
            "restore": self.times.restore_s,
            "boot": self.times.boot_s,
            "total": self.times.rto_s,
        }
        out += [
            Metric(name="labops_drill_rto_seconds", value=v, labels={**labels, "phase": k})
            for k, v in phases.items()
            if v is not None
        ]
        if self.coverage is not None:
            out += [
                Metric(name="labops_drill_coverage_ratio", value=self.coverage.percent / 100),
                Metric(name="labops_drill_overdue_guests", value=float(len(self.coverage.overdue))),
            ]
        return out

    def notification(self) -> Notification | None:
        """On a failed drill (or one that could not check the guest): critical; on findings (a
        recovery-time regression, guests overdue in the rotation): warning; else nothing."""
        found = self.found()
        failed = bool(self.failures or self.not_checked)
        if not failed and not found:
            return None
        return Notification(
            title=f"Restore drill {self.lab}: {'FAILED' if failed else 'findings'}",
            severity=Severity.CRITICAL if failed else Severity.WARNING,
            body="\n".join(
                [f"guest {self.vmid} ({self.name}), backup {self.volid or '-'}"]
                + [f"- {f.entity}: {f.reason}" for f in self.failures]
                + [f"- could not check {x}" for x in self.not_checked]
                + [f"- {f.line()}" for f in found]
            ),
            topic="backups/restore-drill",
            payload={
                "vmid": self.vmid,
                "ok": self.ok,
                "scratch_vmid": self.scratch_vmid,
                "failures": [f.model_dump() for f in self.failures],
                "not_checked": self.not_checked,
                "rto_s": self.times.rto_s,
                "rto_regression": self.rto_regression,
                "found": [f.line() for f in found],
            },
        )
