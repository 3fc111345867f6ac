"""``/etc/os-release``: the check command, its parser, and the end-of-life table of the releases a
homelab runs."""

from __future__ import annotations

import re
import shlex
from datetime import date

from pydantic import BaseModel, Field

COMMAND = "cat /etc/os-release 2>/dev/null"
"""Check: the distribution and release (:func:`parse_os_release`)."""

# End of free security support (Debian: end of LTS; Ubuntu: end of standard support, ESM aside;
# Alpine: end of the release's main-repository support). Keyed by (ID, release).
END_OF_LIFE: dict[tuple[str, str], date] = {
    ("debian", "9"): date(2022, 6, 30),
    ("debian", "10"): date(2024, 6, 30),
    ("debian", "11"): date(2026, 8, 31),
    ("debian", "12"): date(2028, 6, 30),
    ("debian", "13"): date(2030, 6, 30),
    ("ubuntu", "20.04"): date(2025, 5, 31),
    ("ubuntu", "22.04"): date(2027, 6, 1),
    ("ubuntu", "24.04"): date(2029, 5, 31),
    ("ubuntu", "24.10"): date(2025, 7, 10),
    ("ubuntu", "25.04"): date(2026, 1, 15),
    ("ubuntu", "25.10"): date(2026, 7, 9),
    ("alpine", "3.17"): date(2024, 11, 22),
    ("alpine", "3.18"): date(2025, 5, 9),
    ("alpine", "3.19"): date(2025, 11, 1),
    ("alpine", "3.20"): date(2026, 4, 1),
    ("alpine", "3.21"): date(2026, 11, 1),
    ("alpine", "3.22"): date(2027, 5, 1),
    ("alpine", "3.23"): date(2027, 11, 1),
}


class OsRelease(BaseModel):
    id: str = Field("unknown", description="ID (debian, ubuntu, alpine).")
    version_id: str | None = None
    codename: str | None = None
    pretty_name: str | None = None

    @property
    def release(self) -> str | None:
        """The key of the EOL table: Debian major, Ubuntu YY.MM, Alpine major.minor."""
        if not self.version_id:
            return None
        if self.id == "alpine":
            return ".".join(self.version_id.split(".")[:2])
        if self.id == "debian":
            return self.version_id.split(".")[0]
        return self.version_id

    @property
    def label(self) -> str:
        """What the compliance table shows, e.g. ``debian 12 (bookworm)``."""
        text = f"{self.id} {self.version_id or '?'}"
        return f"{text} ({self.codename})" if self.codename else text

    def end_of_life(self) -> date | None:
        release = self.release
        return END_OF_LIFE.get((self.id, release)) if release else None

    def is_eol(self, today: date) -> bool:
        eol = self.end_of_life()
        return eol is not None and today > eol


# Values without shell specials: what every distribution's os-release holds. shlex is only
# needed for the rest, and costs ~20 us a line on every host of every sweep.
_PLAIN = re.compile(r"[^\s\"'\\$`]*")
_DOUBLE = re.compile(r'"([^"\\$`]*)"')
_SINGLE = re.compile(r"'([^']*)'")


def _first_word(value: str) -> str:
    """The first word of a shell-quoted value, as ``shlex.split`` gives it."""
    for pattern in (_PLAIN, _DOUBLE, _SINGLE):
        m = pattern.fullmatch(value)
        if m is not None:
            return m.group(m.lastindex or 0)
    try:
        parts = shlex.split(value)
    except ValueError:
        parts = [value.strip("\"'")]
    return parts[0] if parts else ""


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release (``KEY=value`` with shell quoting). The first value of a key wins."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), _first_word(value))
    codename = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME")
    return OsRelease(
        id=values.get("ID", "unknown").lower(),
        version_id=values.get("VERSION_ID") or None,
        codename=codename or None,
        pretty_name=values.get("PRETTY_NAME") or None,
    )
