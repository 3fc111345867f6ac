"""The maintenance window, pure: whether a window is open at a time (in the window's own zone,
windows past midnight included), when one opens next and when the open ones close, and the guard
the patch flow asks before every step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from labops.config.policies.patching import MaintenanceWindow

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def window_open(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether ``now`` (timezone-aware) falls inside ``window`` in the window's own zone."""
    local = now.astimezone(ZoneInfo(window.timezone))
    start, end = window.start_time(), window.end_time()
    t = local.time()
    today = _DAYS[local.weekday()]
    yesterday = _DAYS[(local.weekday() - 1) % 7]
    if start <= end:
        return today in window.days and start <= t < end
    # past midnight: the evening part opens on a listed day, the morning part belongs to the day
    # before
    return (today in window.days and t >= start) or (yesterday in window.days and t < end)


def in_any_window(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    return any(window_open(w, now) for w in windows)


def next_opening(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """The next time a window opens (minute resolution, within 8 days), for the refusal message."""
    probe = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        if in_any_window(windows, probe):
            return probe
        probe += timedelta(minutes=1)
    return None


def window_end(window: MaintenanceWindow, now: datetime) -> datetime | None:
    """When ``window`` closes, if it is open at ``now`` (None: it is not)."""
    if not window_open(window, now):
        return None
    zone = ZoneInfo(window.timezone)
    local = now.astimezone(zone)
    day = local.date()
    if window.start_time() > window.end_time() and local.time() >= window.start_time():
        day += timedelta(days=1)  # the evening part of a window that runs past midnight
    return datetime.combine(day, window.end_time(), tzinfo=zone)


def open_until(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """When the open windows close (the latest end of those open at ``now``), or None."""
    ends = [e for w in windows if (e := window_end(w, now)) is not None]
    return max(ends) if ends else None


class WindowGuard:
    """The maintenance window, asked again before every step: after approval, before each
    batch and before each reboot. Time comes from ``clock`` (injectable; tests pass a fake)."""

    def __init__(self, windows: Sequence[MaintenanceWindow], clock: Callable[[], datetime]) -> None:
        self.windows = list(windows)
        self.clock = clock
        self.end: datetime | None = None  # the end of the window last seen open

    def closed(self) -> str:
        """ "" while a window is open, else why not ("window closed at 04:00")."""
        end = open_until(self.windows, self.clock())
        if end is not None:
            self.end = end
            return ""
        if self.end is None:
            return "outside the maintenance window"
        return f"window closed at {self.end:%H:%M}"

    def leaves(self, need: timedelta, what: str) -> str:
        """ "" while a window is open for ``need`` more, else why not: closed, or closing before
        ``what`` (e.g. a node's reboot) may be over."""
        closed = self.closed()
        if closed or self.end is None or self.clock() + need <= self.end:
            return closed
        return (
            f"window closes at {self.end:%H:%M}, sooner than {what} may take "
            f"({need.total_seconds() / 60:.0f} min)"
        )
