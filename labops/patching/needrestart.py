"""needrestart: the check command ``needrestart -b`` and the parser of its output (batch mode,
apt-dater style ``NEEDRESTART-KEY: value`` lines).

Inside a container needrestart skips the kernel checks (no KCUR/KSTA): a container never needs a
reboot for the host's kernel, which is what the patch flow relies on.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

COMMAND = "needrestart -b 2>/dev/null"
"""Check: what needs a restart (:func:`parse_needrestart`); prints nothing where not installed."""

_KERNEL_STATUS = {0: "unknown", 1: "current", 2: "abi-upgrade", 3: "version-upgrade"}


class NeedRestart(BaseModel):
    version: str | None = None
    kernel_current: str | None = None
    kernel_expected: str | None = None
    kernel_status: int | None = Field(
        None, description="KSTA: 0 unknown, 1 current, 2 ABI upgrade, 3 version upgrade."
    )
    microcode_status: int | None = Field(None, description="UCSTA: 0 unknown, 1 current, 2 old.")
    services: list[str] = Field(default_factory=list)
    containers: list[str] = Field(default_factory=list)
    sessions: list[str] = Field(default_factory=list)

    @property
    def reboot_advised(self) -> bool:
        """A newer kernel is installed than the running one, or the microcode is obsolete."""
        return (self.kernel_status or 0) >= 2 or self.microcode_status == 2

    @property
    def kernel_state(self) -> str:
        return _KERNEL_STATUS.get(self.kernel_status or 0, "unknown")


def parse_needrestart(text: str) -> NeedRestart:
    """Parse ``needrestart -b`` output; lines not in its format (perl warnings) are ignored."""
    nr = NeedRestart()
    for raw in text.splitlines():
        if not raw.startswith("NEEDRESTART-") or ":" not in raw:
            continue
        key, _, value = raw.partition(":")
        key = key.removeprefix("NEEDRESTART-")
        value = value.strip()
        if key == "VER":
            nr.version = value or None
        elif key == "KCUR":
            nr.kernel_current = value or None
        elif key == "KEXP":
            nr.kernel_expected = value or None
        elif key == "KSTA" and value.isdigit():
            nr.kernel_status = int(value)
        elif key == "UCSTA" and value.isdigit():
            nr.microcode_status = int(value)
        elif key == "SVC" and value:
            nr.services.append(value)
        elif key == "CONT" and value:
            nr.containers.append(value)
        elif key == "SESS" and value:
            nr.sessions.append(value)
    return nr
