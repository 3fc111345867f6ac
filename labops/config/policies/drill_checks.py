"""What a restore drill checks inside the scratch guest, beyond its healthy boot: a TCP port
listening, an HTTP path answering on the guest's own loopback, a command exiting 0. Each check
runs inside the guest (``pct exec`` for a container, the QEMU guest agent for a VM), so it works
on the isolated network."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from labops.config.systems import Strict

# A path for a URL on the guest's loopback: printable, no spaces or quotes (it goes into a shell
# word), so a config value cannot add a second command.
_PATH = re.compile(r"^/[A-Za-z0-9._~/%?=&+:@!,;-]*$")


class GuestCheck(Strict):
    """One check inside the restored guest. ``tcp``: something listens on ``port``. ``http``:
    ``http://127.0.0.1:<port><path>`` answers below 400. ``command``: ``command`` exits 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tcp", "http", "command"]
    port: int | None = Field(None, ge=1, le=65535)
    path: str = Field("/", max_length=512)
    command: str | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _complete(self) -> GuestCheck:
        if self.kind in ("tcp", "http") and self.port is None:
            raise ValueError(f"a {self.kind} check needs a port")
        if self.kind == "command" and not self.command:
            raise ValueError("a command check needs a command")
        if self.kind != "command" and self.command:
            raise ValueError(f"a {self.kind} check takes no command")
        if not _PATH.match(self.path):
            raise ValueError(f"path {self.path!r}: a URL path starting with /, no spaces or quotes")
        return self

    @property
    def label(self) -> str:
        if self.kind == "tcp":
            return f"tcp {self.port} listening"
        if self.kind == "http":
            return f"http 127.0.0.1:{self.port}{self.path}"
        return f"command {self.command!r}"
