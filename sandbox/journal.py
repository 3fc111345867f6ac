"""What the sandbox received that could change the lab: every PVE/PBS request other than a read
and every command the SSH fleet ran, in order, so a test can prove a dry run sent none.

Entries are kept in memory (the newest ``limit``), numbered from 1. Tests read ``mark`` before an
operation and ``GET /_sandbox/journal?since=<mark>`` after it.

- ``kind="http"``: a PVE or PBS request whose method is not GET (``system``, ``method``, ``path``,
  ``args`` as sent, values cut at 200 characters), recorded when it arrives, whether or not
  it then succeeds. Logins (``POST /access/ticket``) are not
  recorded: they change nothing in the lab.
- ``kind="ssh"``: the command line of one SSH session (``host``, ``command``), as the client sent
  it.
- ``kind="exec"``: one simple command the host's shell ran after expanding wrappers (``sudo``,
  ``env``, ``nohup``), with ``argv``; commands run inside a container through ``pct exec`` are
  recorded under the container's host name with ``via`` naming the node.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    if isinstance(value, list):
        return [_cut(v) for v in value[:50]]
    return value


class Journal:
    """An append-only, bounded record (the sandbox runs on one asyncio loop: no lock needed)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self.seq = 0

    def _add(self, entry: dict[str, Any]) -> None:
        self.seq += 1
        self.entries.append({"seq": self.seq, "t": round(time.time(), 3), **entry})

    def http(self, system: str, method: str, path: str, args: dict[str, Any]) -> None:
        self._add(
            {
                "kind": "http",
                "system": system,
                "method": method,
                "path": path,
                "args": {k: _cut(v) for k, v in args.items()},
            }
        )

    def ssh(self, host: str, command: str) -> None:
        self._add({"kind": "ssh", "system": "fleet", "host": host, "command": _cut(command)})

    def exec(self, host: str, argv: list[str], via: str | None = None) -> None:
        entry: dict[str, Any] = {"kind": "exec", "system": "fleet", "host": host, "argv": argv}
        if via:
            entry["via"] = via
        self._add(entry)

    def since(self, mark: int, system: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.entries if e["seq"] > mark and (system is None or e["system"] == system)
        ]
