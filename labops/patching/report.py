"""The patch flow's report: the compliance table of check mode, and the rollout of apply mode.

One model, four views: ``--json`` prints it, the artifacts render ``table()``/``markdown()``, the
notifier sends ``notification()`` and VictoriaMetrics gets ``metrics()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from labops.markdown import md_table, md_text
from labops.metrics import Metric
from labops.outcome import Checked, CouldNotCheck, Found, UnknownSince, check_columns
from labops.patching.cves import SEVERITIES, FeedState, PackageCve, rank_key, worst
from labops.patching.packages import PendingUpdate
from labops.reports import Notification, OperationReport, Severity, utcnow

CheckState = Literal[
    "up-to-date",
    "updates",
    "skipped",
    "unreachable",
    "host-key-rejected",
    "auth-failed",
    "timeout",
    "error",
]
# What each state says in the shared vocabulary (labops.outcome): every state is named, so a new
# state cannot silently count as fine. None: left out on purpose (excluded, stopped).
CHECKED: dict[str, Checked | None] = {
    "up-to-date": Checked.OK,
    "updates": Checked.FOUND,
    "skipped": None,
    "unreachable": Checked.UNKNOWN,
    "host-key-rejected": Checked.UNKNOWN,
    "auth-failed": Checked.UNKNOWN,
    "timeout": Checked.UNKNOWN,
    "error": Checked.UNKNOWN,
}


class HostCheck(BaseModel):
    """One row of the compliance table: what is pending on one node or container."""

    host: str
    kind: Literal["node", "container", "vm", "host"] = "container"
    node: str | None = None
    vmid: int | None = None
    access: Literal["ssh", "pct", "agent"] = "ssh"
    state: CheckState
    detail: str = ""
    os: str = "unknown"
    eol: bool = False
    end_of_life: date | None = None
    package_manager: Literal["apt", "apk"] | None = None
    packages: list[PendingUpdate] = Field(default_factory=list)
    held: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(
        default_factory=list,
        description="Pending packages left out by patching.exclusions.packages (never upgraded).",
    )
    installed: dict[str, str] = Field(
        default_factory=dict, description="Installed version of each pending package."
    )
    refused: list[str] = Field(
        default_factory=list,
        description="Package names or versions from the host's output outside the package-name "
        "grammar (shown quoted): never used in a command.",
    )
    reboot_required: bool = False
    reboot_packages: list[str] = Field(default_factory=list)
    restart_services: list[str] = Field(default_factory=list)
    systemd: bool = Field(False, description="systemd runs on the host (/run/systemd/system).")
    last_checked: datetime | None = None
    unknown_since: datetime | None = Field(
        None, description="When the first failed check in a row ran (kept across runs)."
    )
    cves: list[PackageCve] = Field(
        default_factory=list, description="CVEs the pending updates fix (patching.cves)."
    )
    cve_unchecked: str | None = Field(
        None, description="Why the CVEs of this host's updates could not be looked up."
    )
    exposed: list[str] = Field(
        default_factory=list,
        description="Traefik routers sending traffic to this host (router: rule @ entrypoints).",
    )

    @property
    def kev(self) -> list[PackageCve]:
        """Pending fixes of known-exploited CVEs."""
        return [c for c in self.cves if c.kev]

    @property
    def check(self) -> Checked | None:
        """ok, found (updates pending) or unknown (could not check); None when skipped."""
        return CHECKED.get(self.state, Checked.UNKNOWN)

    @property
    def could_not_check(self) -> CouldNotCheck | None:
        """Why and since when this host could not be checked (None when it was)."""
        if self.check is not Checked.UNKNOWN:
            return None
        since = self.unknown_since or self.last_checked or utcnow()
        return CouldNotCheck(reason=self.detail or self.state, kind=self.state, since=since)

    @property
    def pending(self) -> int:
        return len(self.packages)

    @property
    def security(self) -> int:
        return sum(1 for p in self.packages if p.security)

    @property
    def known(self) -> bool:
        """The check answered: the numbers mean something (never true for unreachable hosts)."""
        return self.check in (Checked.OK, Checked.FOUND)


ApplyOutcome = Literal[
    "patched",
    "already-clean",
    "failed",
    "rolled-back",
    "skipped",
    "not-run",
    "simulated",
    "still-running",
]


class HostApply(BaseModel):
    """What apply mode did on one host."""

    host: str
    kind: Literal["node", "container", "vm", "host"] = "container"
    node: str | None = None
    vmid: int | None = None
    phase: Literal["canary", "batch"] = "batch"
    batch: int = 0
    outcome: ApplyOutcome = "not-run"
    detail: str = ""
    upgraded: list[str] = Field(default_factory=list)
    held_back: list[str] = Field(
        default_factory=list,
        description="Pending packages left at their version (held by the operator or excluded).",
    )
    snapshot: str | None = None
    snapshot_kept: bool = False
    rolled_back: bool = False
    rebooted: bool = False
    reboot_left: str | None = Field(
        None, description="Why a reboot the host asked for after its upgrade was left for later."
    )
    rollback_point: str | None = Field(
        None, description="What a failed upgrade goes back to: a snapshot, or the gate's backup."
    )
    restore: str | None = Field(
        None, description="How to restore the gate's backup (when it is the rollback point)."
    )
    restored: str | None = Field(
        None,
        description="The automatic restore from the gate's backup after a failed upgrade "
        "(require_backup.auto_restore): 'restored from <volid>', 'restore failed: <why>' or why "
        "it was not done.",
    )
    command: str | None = Field(None, description="The upgrade command apply runs (dry run).")
    simulated: str | None = Field(None, description="The command the dry run ran instead.")
    simulation: str | None = Field(None, description="apt-get -s output (dry run).")
    started: datetime | None = None
    finished: datetime | None = None


def cve_plan_line(
    rows: list[HostCheck], planned: set[str], packages: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """The approval's line on CVEs of the planned hosts (None when no lookup ran): how many the
    plan fixes, which known-exploited ones on which hosts (exposed first), where unknown.
    ``packages``: each planned host's planned packages (a security-only plan leaves some out;
    None: all its pending ones)."""
    looked = [h for h in rows if h.host in planned and (h.cves or h.cve_unchecked is not None)]
    if not looked and not any(h.cves or h.cve_unchecked for h in rows):
        return None

    def fixes(h: HostCheck) -> list[PackageCve]:
        if packages is None or h.host not in packages:
            return h.cves
        return [c for c in h.cves if c.package in set(packages[h.host])]

    fixed = {c.cve for h in looked for c in fixes(h)}
    kev = sorted(
        (h for h in looked if any(c.kev for c in fixes(h))), key=lambda h: (not h.exposed, h.host)
    )
    line = f"- CVEs fixed by the plan: {len(fixed)}"
    if kev:
        names = ", ".join(h.host + (" (exposed)" if h.exposed else "") for h in kev[:8])
        exploited = ", ".join(sorted({c.cve for h in kev for c in fixes(h) if c.kev}))
        line += f"; known exploited ({exploited}) on {names}"
    unknown = [h.host for h in looked if h.cve_unchecked]
    if unknown:
        line += f"; CVEs unknown on {len(unknown)} host(s)"
    return line


def _cve_cell(h: HostCheck) -> str:
    """The compliance table's CVE cell: count, KEV count, worst severity ('?' when unknown)."""
    if h.cve_unchecked:
        return "?"
    if not h.cves:
        return "0"
    kev = sorted({c.cve for c in h.kev})
    named = f", KEV: {' '.join(kev)}" if kev else ""
    return f"{len({c.cve for c in h.cves})} ({worst(h.cves)}{named})"


def _simulated_upgrades(simulation: str, held_back: list[str]) -> int:
    """Packages a dry run's output would upgrade (``Inst`` of apt-get -s, ``(i/n)`` of apk -s),
    less the held-back ones: the simulation cannot hold them without changing the host."""
    kept = set(held_back)
    count = 0
    for line in simulation.splitlines():
        words = line.split()
        if line.startswith("Inst ") and len(words) > 1:
            count += words[1] not in kept
        elif line.startswith("(") and len(words) > 2:
            count += words[2] not in kept
    return count


class PatchReport(OperationReport):
    """Report of one patch run (check or apply)."""

    operation: str = "patch_check"
    mode: Literal["check", "apply"] = "check"
    hosts: list[HostCheck] = Field(default_factory=list)
    applied: list[HostApply] = Field(default_factory=list)
    approval: str | None = Field(None, description="Who/what approved, narrowed or rejected.")
    stopped: str | None = Field(None, description="Why the rollout stopped early.")
    narrowed: list[str] = Field(
        default_factory=list,
        description="How the approval narrowed the plan (hosts excluded, security only).",
    )
    widening_refused: list[str] = Field(
        default_factory=list,
        description="What the approval asked beyond the plan shown (e.g. all updates of a "
        "security-only plan): refused, only what the plan showed is applied.",
    )
    plan_changes: list[str] = Field(
        default_factory=list,
        description="What changed between the plan shown and its approval: host changes "
        "(re-checked then; never applied) and a window too short for what is left.",
    )
    leftover_snapshots: list[str] = Field(
        default_factory=list, description="labops snapshots from earlier runs still present."
    )
    deleted_snapshots: list[str] = Field(default_factory=list)
    overlaps: list[str] = Field(
        default_factory=list,
        description="Scheduled jobs (PVE backup, PBS verify/prune, labops) running in the "
        "window; a backup of a node being patched refuses that node.",
    )
    drains: list[str] = Field(
        default_factory=list,
        description="Each rebooted node's drain (moves, shutdowns, pinned guests) and return.",
    )
    gate_backups: list[str] = Field(
        default_factory=list,
        description="Backups labops took (or would take, dry run) because a guest had no "
        "recent enough one (patching.require_backup), and how each ended.",
    )
    cve_feeds: list[FeedState] = Field(
        default_factory=list,
        description="How each CVE source answered (empty: patching.cves not configured).",
    )

    def ranked_cves(self) -> list[tuple[HostCheck, PackageCve]]:
        """Every pending CVE fix, known-exploited first, then severity x exposure."""
        rows = [(h, c) for h in self.hosts for c in h.cves]
        return sorted(
            rows,
            key=lambda hc: (rank_key(hc[1].kev, hc[1].severity, bool(hc[0].exposed)), hc[1].cve),
            reverse=True,
        )

    def unchecked(self) -> list[str]:
        """A CVE source with no answer and no cached copy, and hosts whose CVEs it left unknown:
        never "no CVEs" (check mode: apply was there to patch, the plan names them)."""
        if self.mode != "check":
            return []
        out = [f"cve source {f.line()}" for f in self.cve_feeds if f.health == "unreachable"]
        return out + [f"{h.host}: CVEs: {h.cve_unchecked}" for h in self.hosts if h.cve_unchecked]

    def date_unknown(self, book: UnknownSince) -> UnknownSince:
        """Date every host that could not be checked from its first failed check in a row (as
        ``book``, the previous runs' memory, knows it); returns the memory for the next run."""
        now = {h.host: h.last_checked or self.started for h in self.hosts}
        book = book.carry(
            {h.host: now[h.host] for h in self.hosts if h.check is Checked.UNKNOWN},
            [h.host for h in self.hosts if h.check in (Checked.OK, Checked.FOUND)],
        )
        for h in self.hosts:
            if h.check is Checked.UNKNOWN:
                h.unknown_since = book.since[h.host]
        return book

    # -- views ------------------------------------------------------------------------------------

    def table(self) -> list[dict[str, Any]]:
        if self.mode == "apply":
            return [
                {
                    "host": a.host,
                    "phase": f"{a.phase} {a.batch}",
                    "outcome": a.outcome,
                    "upgraded": len(a.upgraded),
                    "snapshot": a.snapshot or "",
                    "rolled back": "yes" if a.rolled_back else "",
                    "rebooted": "yes" if a.rebooted else "",
                    "detail": a.detail,
                }
                for a in self.applied
            ]
        rows = [self._row(h) for h in self.hosts]
        if self.cve_feeds:  # only when looked up: a "0" must mean none found
            for row, h in zip(rows, self.hosts, strict=True):
                row["cves"] = _cve_cell(h) if h.known else "?"
                row["exposed"] = "; ".join(h.exposed)
        return rows

    @staticmethod
    def _row(h: HostCheck) -> dict[str, Any]:
        known = h.known
        return {
            "host": h.host,
            "os": h.os + (" (EOL)" if h.eol else ""),
            "pending": h.pending if known else "?",
            "security": (h.security if h.package_manager != "apk" else "n/a") if known else "?",
            "held": ", ".join(h.held) if known else "?",
            "reboot": ("yes" if h.reboot_required else "no") if known else "?",
            "restart services": ", ".join(h.restart_services) if known else "?",
            "last checked": h.last_checked.isoformat(timespec="seconds") if h.last_checked else "",
            "state": h.state + (f": {h.detail}" if h.detail else ""),
            **check_columns(h.check, h.could_not_check),
        }

    def counts(self) -> dict[str, int]:
        known = [h for h in self.hosts if h.known]
        return {
            "hosts": len(self.hosts),
            "checked": len(known),
            "up_to_date": sum(1 for h in known if h.state == "up-to-date"),
            "with_updates": sum(1 for h in known if h.state == "updates"),
            "pending": sum(h.pending for h in known),
            "security": sum(h.security for h in known),
            "reboot": sum(1 for h in known if h.reboot_required),
            "eol": sum(1 for h in self.hosts if h.eol),
            "failed": sum(1 for h in self.hosts if h.check is Checked.UNKNOWN),
            "skipped": sum(1 for h in self.hosts if h.state == "skipped"),
        }

    def found(self) -> list[Found]:
        """Critical: a host on an end-of-life release. Warning: pending security updates, a
        reboot required, labops snapshots left behind. Info: other pending updates, excluded or
        held-back packages. Apply mode leaves out what it was there to patch (the check before
        it). A host that could not be checked or patched is a failure, not a finding."""
        known = [h for h in self.hosts if h.known]
        out = Found.of(
            Severity.CRITICAL,
            "host(s) on an end-of-life release",
            [h.host for h in self.hosts if h.eol],
        )
        if self.mode == "check":
            out += Found.of(
                Severity.WARNING,
                "host(s) with security updates",
                [h.host for h in known if h.security],
            )
            out += Found.of(
                Severity.WARNING,
                "host(s) needing a reboot",
                [h.host for h in known if h.reboot_required],
            )
            out += Found.of(
                Severity.INFO,
                "host(s) with other pending updates",
                [h.host for h in known if h.pending and not h.security],
            )
            out += Found.of(
                Severity.INFO,
                "host(s) with excluded packages pending",
                [h.host for h in self.hosts if h.excluded],
            )
        else:
            out += Found.of(
                Severity.INFO,
                "host(s) with packages held back",
                [a.host for a in self.applied if a.held_back],
            )
            out += Found.of(
                Severity.WARNING,
                "patched host(s) still needing a reboot (left for later)",
                [a.host for a in self.applied if a.reboot_left],
            )
        if self.mode == "check":
            out += self._cve_found()
        return out + Found.of(
            Severity.WARNING, "labops snapshot(s) left behind", self.leftover_snapshots
        )

    def _cve_found(self) -> list[Found]:
        """Critical: a known-exploited CVE pending (exposed hosts named first). Warning: a high or
        critical CVE pending, a stale CVE source."""
        kev = [h for h in self.hosts if h.kev]
        kev.sort(key=lambda h: (not h.exposed, h.host))
        out = Found.of(
            Severity.CRITICAL,
            "host(s) with a known-exploited CVE pending",
            [h.host + (" (exposed)" if h.exposed else "") for h in kev],
        )
        out += Found.of(
            Severity.WARNING,
            "host(s) with a high or critical CVE pending",
            [h.host for h in self.hosts if not h.kev and worst(h.cves) in ("critical", "high")],
        )
        return out + Found.of(
            Severity.WARNING,
            "CVE source(s) stale",
            [f.line() for f in self.cve_feeds if f.health == "stale"],
        )

    def cve_headline(self) -> str | None:
        """One line for the top of the digest and the notification, e.g. "exploited CVE pending
        on 3 exposed containers" (None when no known-exploited CVE is pending)."""
        kev = [h for h in self.hosts if h.kev]
        if not kev:
            return None
        exposed = [h for h in kev if h.exposed]
        cves = sorted({c.cve for h in kev for c in h.kev})
        where = (
            f"{len(exposed)} exposed host(s) ({', '.join(h.host for h in exposed[:5])})"
            + (f" and {len(kev) - len(exposed)} other(s)" if len(kev) > len(exposed) else "")
            if exposed
            else f"{len(kev)} host(s) ({', '.join(h.host for h in kev[:5])})"
        )
        return f"exploited CVE pending on {where}: {', '.join(cves[:5])}"

    def _cve_markdown(self) -> list[str]:
        t = md_text
        if not self.cve_feeds and not any(h.cve_unchecked for h in self.hosts):
            return ["", "CVE lookup: not configured (patching.cves)."]
        lines = ["", "## CVEs fixed by pending updates"]
        lines.append("Sources: " + t("; ".join(f.line() for f in self.cve_feeds)))
        headline = self.cve_headline()
        if headline:
            lines.append(f"**{t(headline)}**")
        ranked = self.ranked_cves()
        if ranked:
            rows: list[list[object]] = []
            for i, (h, c) in enumerate(ranked[:50], 1):
                score = f" {c.score:.1f}" if c.score is not None else ""
                via = f" ({c.severity_from})" if c.severity_from else ""
                exposed = "; ".join(h.exposed) if h.exposed else "no"
                package = f"{c.package} {c.to_version}"
                kev = "yes" if c.kev else ""
                rows.append([i, h.host, exposed, package, c.cve, f"{c.severity}{score}{via}", kev])
            headers = ["rank", "host", "exposed", "package", "CVE", "severity", "KEV"]
            lines += ["", *md_table(headers, rows)]
            if len(ranked) > 50:
                lines.append(f"... and {len(ranked) - 50} more")
        else:
            lines.append("No CVE fixed by a pending update.")
        unchecked = [h for h in self.hosts if h.cve_unchecked]
        if unchecked:
            lines += ["", "CVEs could not be checked:"]
            lines += [f"- {t(h.host)}: {t(h.cve_unchecked or '')}" for h in unchecked]
        return lines

    def markdown(self) -> str:
        t = md_text
        lines = [f"# Patch {self.mode}{' (dry run)' if self.dry_run else ''}", ""]
        c = self.counts()
        lines.append(
            f"{c['checked']}/{c['hosts']} hosts checked: {c['with_updates']} with updates "
            f"({c['pending']} packages, {c['security']} security), {c['reboot']} need a reboot, "
            f"{c['eol']} on an end-of-life release, {c['failed']} could not be checked, "
            f"{c['skipped']} skipped."
        )
        if self.mode == "apply":
            done: dict[str, int] = {}
            for a in self.applied:
                done[a.outcome] = done.get(a.outcome, 0) + 1
            lines += ["", "Rollout: " + ", ".join(f"{v} {k}" for k, v in sorted(done.items()))]
            if self.approval:
                lines.append(f"Approval: {t(self.approval)}")
            if self.narrowed:
                lines.append(f"Narrowed at approval: {t('; '.join(self.narrowed))}")
            if self.widening_refused:
                beyond = t("; ".join(self.widening_refused))
                lines.append(f"**Refused at approval (beyond the plan shown):** {beyond}")
            if self.stopped:
                lines.append(f"**Stopped:** {t(self.stopped)}")
            if self.plan_changes:
                lines += ["", "## Changed since the plan"]
                lines += [f"- {t(c)}" for c in self.plan_changes]
            lines += ["", "## Rollout"]
            for a in self.applied:
                n = len(a.upgraded)
                sim = ""
                if a.simulation:
                    sim = f", would upgrade {t(_simulated_upgrades(a.simulation, a.held_back))}"
                extra = f" ({n} upgraded)" if n else ""
                kept = f", held back: {t(', '.join(a.held_back))}" if a.held_back else ""
                detail = f" - {t(a.detail)}" if a.detail else ""
                point = f", rollback point: {t(a.rollback_point)}" if a.rollback_point else ""
                lines.append(
                    f"- {a.phase} {a.batch}: {t(a.host)}: {a.outcome}{extra}{sim}{kept}{point}"
                    f"{detail}"
                )
                if a.restore and a.outcome == "failed":
                    lines.append(f"  - {t(a.restore)}")
                if a.restored:
                    lines.append(f"  - automatic restore: {t(a.restored)}")
            if self.overlaps:
                lines += ["", "## Jobs in the window"]
                lines += [f"- {t(o)}" for o in self.overlaps]
            if self.drains:
                lines += ["", "## Node drains (patching.drain)"]
                lines += [f"- {t(d)}" for d in self.drains]
            if self.gate_backups:
                lines += ["", "## Backups taken before patching (patching.require_backup)"]
                lines += [f"- {t(g)}" for g in self.gate_backups]
        excluded = [h for h in self.hosts if h.excluded]
        if excluded:
            lines += [
                "",
                "## Excluded packages left pending (patching.exclusions.packages)",
                *[f"- {t(h.host)}: {t(', '.join(h.excluded))}" for h in excluded],
            ]
        if self.mode == "check":
            lines += self._cve_markdown()
        refused = [h for h in self.hosts if h.refused]
        if refused:
            lines += [
                "",
                "## Package names refused (outside the package-name grammar, never used)",
                *[f"- {t(h.host)}: {t(', '.join(h.refused))}" for h in refused],
            ]
        if self.leftover_snapshots:
            lines += ["", "Leftover snapshots: " + t(", ".join(self.leftover_snapshots))]
        if self.failures:
            lines += ["", "## Failures"]
            lines += [f"- {t(f.entity)}: {t(f.reason)}" for f in self.failures]
        if self.skipped:
            lines += ["", "## Skipped", *[f"- {t(s)}" for s in self.skipped]]
        return "\n".join(lines)

    def metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for h in self.hosts:
            labels = {"host": h.host, "lab": self.lab, "kind": h.kind}
            out.append(
                Metric(name="labops_patch_check_ok", value=1.0 if h.known else 0.0, labels=labels)
            )
            if not h.known:
                continue  # unknown is never reported as 0 pending
            out += [
                Metric(name="labops_patch_pending_updates", value=float(h.pending), labels=labels),
                Metric(
                    name="labops_patch_reboot_required",
                    value=float(h.reboot_required),
                    labels=labels,
                ),
                Metric(name="labops_patch_eol", value=float(h.eol), labels=labels),
            ]
            if h.package_manager == "apt":
                out.append(
                    Metric(
                        name="labops_patch_security_updates", value=float(h.security), labels=labels
                    )
                )
            if self.cve_feeds and not h.cve_unchecked:  # unknown is never 0 CVEs
                for sev in SEVERITIES:
                    for kev in (True, False):
                        n = sum(1 for c in h.cves if c.severity == sev and c.kev == kev)
                        out.append(
                            Metric(
                                name="labops_patch_cves",
                                value=float(n),
                                labels={**labels, "severity": sev, "kev": str(kev).lower()},
                            )
                        )
        for f in self.cve_feeds:  # states are values: 0 fresh, 1 stale, 2 unreachable
            labels = {"lab": self.lab, "feed": f.name}
            health = {"fresh": 0.0, "stale": 1.0, "unreachable": 2.0}[f.health]
            out.append(Metric(name="labops_patch_cve_feed_health", value=health, labels=labels))
            if f.age_h is not None:
                out.append(
                    Metric(name="labops_patch_cve_feed_age_hours", value=f.age_h, labels=labels)
                )
        return out

    def notification(self) -> Notification | None:
        c = self.counts()
        severity = Severity.OK
        if c["with_updates"] or c["eol"]:
            severity = Severity.INFO
        if c["security"] or c["reboot"]:
            severity = Severity.WARNING
        if self.failures:
            severity = Severity.CRITICAL
        title = f"Patch {self.mode}: {c['pending']} pending ({c['security']} security)"
        if self.mode == "apply":
            patched = sum(1 for a in self.applied if a.outcome == "patched")
            title = f"Patch apply: {patched} patched, {len(self.failures)} failed"
        body = [self.markdown().split("\n", 2)[-1].split("\n## ")[0].strip()]
        headline = self.cve_headline()
        if headline:
            body.insert(0, headline)
            severity = max(severity, Severity.CRITICAL, key=lambda s: s.rank)
        worst = sorted((h for h in self.hosts if h.known and h.security), key=lambda h: -h.security)
        if worst:
            body.append(
                "Most security updates: " + ", ".join(f"{h.host} ({h.security})" for h in worst[:5])
            )
        if self.leftover_snapshots:
            body.append("Leftover snapshots: " + ", ".join(self.leftover_snapshots[:5]))
            severity = max(severity, Severity.WARNING, key=lambda s: s.rank)
        if self.failures:
            body.append(self.failure_summary())
        return Notification(
            title=title,
            severity=severity,
            body="\n".join(body),
            topic=f"patch/{self.mode}",
            payload={"counts": c, "failures": [f.model_dump() for f in self.failures]},
        )
