"""Which journal entries of the sandbox could have changed the lab: the one rule every dry-run
test applies (``sandbox.journal(mark)`` entries in, offending lines out)."""

from __future__ import annotations

import re
from typing import Any

# What a dry run may make a host run: argv joined by spaces, matched whole. Anything else counts
# as mutating. Keep it tight: a pattern here is a promise that the command changes nothing.
READ_ONLY_COMMANDS = [
    # Wrappers: the sandbox journals the commands they run as entries of their own (inside the
    # container for `pct exec`), and those are judged by this list.
    r"(/bin/)?sh -c .+",  # /bin/sh: the guest agent runs argv without a shell of its own
    r"pct exec \d+ -- .+",
    # The host check (labops/patching/hostcheck.py): section markers and reads.
    r"echo @@labops:[a-z-]+",
    r"echo yes",  # `test -e /run/reboot-required && echo yes`
    r"test -e /run/reboot-required",
    r"test -d /run/systemd/system",  # whether a node upgrade would run under systemd-run
    r"cat /etc/os-release",
    r"cat /etc/apk/world",
    r"cat /run/reboot-required\.pkgs",
    r"apt list --upgradable",
    r"apt-mark showhold",
    r"apk version -l <",
    r"needrestart -b",
    # Doc reconcile's runbook checks (labops/docs/runbook.py): its fixed read-only templates.
    r"echo @@(path|unit|command|links|ports)",
    r"echo @@rc=\d+",
    r"test -e /[\w.@+/-]+",
    r"systemctl cat [\w@.-]+\.(service|socket|timer)",
    r"command -v [a-z][\w.+-]*",
    r"ip -o link show",
    r"ss -ltn",
    # The simulation a patch dry run shows: apt-get -s (never `update`), apk's --simulate.
    r"apt-get (-o \S+ |-q )*-s( -o \S+| -q)* (upgrade|dist-upgrade|full-upgrade|install)( \S+)*",
    r"apk upgrade (-s|--simulate)( \S+)*",
]
_READ_ONLY = [re.compile(p) for p in READ_ONLY_COMMANDS]
# PVE requests that only carry a command to a VM's guest agent (what the VM then ran is journaled
# as "exec" entries, judged by the list above) or ask whether the agent answers.
_AGENT_CARRIERS = re.compile(r"/nodes/[^/]+/qemu/\d+/agent/(exec|ping)")


def is_mutating(entry: dict[str, Any]) -> bool:
    """Whether one journal entry could have changed the lab."""
    return bool(mutating([entry]))


def mutating(entries: list[dict[str, Any]]) -> list[str]:
    """The journal entries that could have changed the lab, one line each."""
    out = []
    for e in entries:
        if e["kind"] == "http":  # the journal holds every PVE/PBS request but reads and logins
            if _AGENT_CARRIERS.fullmatch(e["path"]):
                continue
            out.append(f"{e['system']} {e['method']} {e['path']} {e['args']}")
        elif e["kind"] == "exec":
            line = " ".join(e["argv"])
            if not any(p.fullmatch(line) for p in _READ_ONLY):
                out.append(f"{e['host']}: {line}")
        # kind "ssh" is the command line as sent; what the host's shell ran of it is journaled
        # as "exec" entries, judged above.
    return out
