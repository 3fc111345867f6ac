"""What proves a restored guest serves, pure: the in-guest scripts of a drill (the healthy
boot, the per-guest checks from config and tags), the recovery time of a drill compared with
the guest's recent drills, and the rotation (which guests in scope were drilled within the
period, which are due next).

The scripts run through ``sh -c`` inside the guest (``pct exec`` or the QEMU guest agent); every
value put into them is an int or a validated path, never free text from outside.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from statistics import median

from pydantic import BaseModel, Field

from labops.backups.models import BackupGuest
from labops.config.policies.drill_checks import GuestCheck

_TAG_CHECK = re.compile(r"^drill-(tcp|http)-(\d{1,5})$")


def healthy_boot_script(timeout_s: float) -> str:
    """Exit 0 when the guest finished booting with nothing failed: systemd's
    ``is-system-running --wait`` says ``running`` (else its state and the failed units are
    printed), or OpenRC reached the default runlevel with no crashed service. Another init
    exits 3 ("could not check"). Plain ``&&``/``||`` lists: the same in dash, bash and ash."""
    t = max(1, int(timeout_s))
    has = "command -v {} >/dev/null 2>&1"
    return "; ".join(
        [
            f"{has.format('systemctl')} && timeout {t} systemctl is-system-running --wait "
            "&& exit 0",
            f"{has.format('systemctl')} && systemctl --failed --no-legend --plain && exit 1",
            f"{has.format('systemctl')} && exit 1",
            f"{has.format('rc-status')} && rc-status --crashed | grep -q . "
            "&& echo 'crashed:' && rc-status --crashed && exit 1",
            f"{has.format('rc-status')} && rc-status --runlevel | grep -q '^default$' && exit 0",
            f"{has.format('rc-status')} && echo 'runlevel default not reached' && exit 1",
            "echo 'no systemd or OpenRC'; exit 3",
        ]
    )


def check_script(check: GuestCheck, timeout_s: float) -> str:
    """The shell script of one check, run inside the guest; exit 0 means it passed."""
    t = max(1, int(timeout_s))
    if check.kind == "command":
        return check.command or "false"
    has = "command -v {} >/dev/null 2>&1"
    if check.kind == "tcp":
        port = int(check.port or 0)
        return "; ".join(
            [
                f"{has.format('ss')} && ss -Hltn 'sport = :{port}' | grep -q . && exit 0",
                f"{has.format('ss')} && echo 'nothing listens on {port}' && exit 1",
                f"netstat -ltn | grep -q ':{port} ' && exit 0",
                f"echo 'nothing listens on {port}'; exit 1",
            ]
        )
    url = shlex.quote(f"http://127.0.0.1:{int(check.port or 0)}{check.path}")
    return "; ".join(
        [
            f"{has.format('curl')} && curl -fsS -o /dev/null --max-time {t} {url} && exit 0",
            f"{has.format('curl')} && exit 1",
            f"wget -q -O /dev/null -T {t} {url}",
        ]
    )


def guest_checks(
    guest: BackupGuest,
    configured: Mapping[int, Sequence[GuestCheck]],
    command: str | None = None,
) -> list[GuestCheck]:
    """The checks of ``guest``'s drill, in order: ``restore_drill.check_command`` (every
    container and VM), then ``restore_drill.checks[vmid]``, then one per drill-tcp-<port> /
    drill-http-<port> tag of the original; each check once."""
    out: list[GuestCheck] = []
    if command:
        out.append(GuestCheck(kind="command", command=command))
    out += configured.get(guest.vmid, [])
    for tag in guest.tags:
        m = _TAG_CHECK.match(tag)
        if m and 1 <= int(m.group(2)) <= 65535:
            out.append(GuestCheck(kind=m.group(1), port=int(m.group(2))))  # type: ignore[arg-type]
    unique: list[GuestCheck] = []
    for check in out:
        if check not in unique:
            unique.append(check)
    return unique


# -- recovery time ------------------------------------------------------------------------------


class DrillTimes(BaseModel):
    """The recovery time of one drill: the restore task, the start until the guest booted
    healthy, and the whole way from the restore to the last check passed (the RTO)."""

    restore_s: float | None = None
    boot_s: float | None = None
    rto_s: float | None = None


def rto_regression(
    rto_s: float, past: Sequence[float], limit: float, baseline_of: int
) -> tuple[float | None, str | None]:
    """The baseline (median of the last ``baseline_of`` passed drills) and, when this drill took
    more than ``limit`` above it, why that is a finding."""
    recent = [p for p in past if p > 0][-baseline_of:]
    if not recent:
        return None, None
    base = median(recent)
    if rto_s > base * (1 + limit):
        return base, (
            f"recovery took {rto_s:.0f}s, {rto_s / base - 1:.0%} above its baseline of "
            f"{base:.0f}s (median of the last {len(recent)} passed drill(s))"
        )
    return base, None


def remembered_rtos(past: Sequence[float], rto_s: float | None, keep: int) -> list[float]:
    """The recent RTOs of a guest with this one appended (the newest ``keep``)."""
    return [*past, *([rto_s] if rto_s else [])][-keep:]


# -- rotation -----------------------------------------------------------------------------------


class DueGuest(BaseModel):
    vmid: int
    name: str = ""
    last_drill: float | None = Field(None, description="When it was last drilled (None: never).")
    due: float | None = Field(None, description="When its next drill is due (None: now).")

    @property
    def label(self) -> str:
        return f"{self.vmid} {self.name}".strip()


class DrillCoverage(BaseModel):
    """The rotation: of the guests in scope, how many were drilled within the period; the
    overdue ones, oldest first, and the next ones due."""

    period_s: float
    in_scope: int
    drilled: int
    overdue: list[DueGuest] = Field(default_factory=list)
    next_due: list[DueGuest] = Field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.drilled / self.in_scope if self.in_scope else 100.0

    @property
    def pace_per_week(self) -> float:
        """Drills a week needed to drill every guest in scope within the period."""
        return self.in_scope / max(self.period_s / (7 * 86400), 1e-9)


def coverage(
    scope: Iterable[BackupGuest],
    last: Mapping[int, float],
    now: float,
    period_s: float,
    shown: int = 5,
) -> DrillCoverage:
    """Rotation over ``scope``; ``last``: vmid -> when it was last drilled (passed or not: a
    failed drill is a drill that found a problem, reported on its own)."""
    rows = sorted(
        (
            DueGuest(
                vmid=g.vmid,
                name=g.name,
                last_drill=last.get(g.vmid),
                due=last[g.vmid] + period_s if g.vmid in last else None,
            )
            for g in scope
        ),
        key=lambda r: (r.last_drill or 0.0, r.vmid),
    )
    overdue = [r for r in rows if r.due is None or r.due <= now]
    return DrillCoverage(
        period_s=period_s,
        in_scope=len(rows),
        drilled=len(rows) - len(overdue),
        overdue=overdue,
        next_due=rows[:shown],
    )
