"""The proposed patch: drifted values replaced in place, the prose kept, as a unified diff."""

from __future__ import annotations

import difflib
from collections import defaultdict

from labops.docs.models import Span, Status, Verdict


def patched_texts(texts: dict[str, str], verdicts: list[Verdict]) -> dict[str, str]:
    """New text of each file that changes; files without drift are left out."""
    edits: dict[str, dict[int, list[tuple[Span, str]]]] = defaultdict(lambda: defaultdict(list))
    for verdict in verdicts:
        if verdict.status != Status.DRIFTED or verdict.claim.source == "llm":
            continue  # proposals of the LLM pass are shown, never applied
        for key, new in verdict.replacements.items():
            span = verdict.claim.spans.get(key)
            if span is not None:
                edits[span.file][span.line].append((span, new))
    out: dict[str, str] = {}
    for file, by_line in edits.items():
        lines = texts[file].splitlines(keepends=True)
        for number, changes in by_line.items():
            line = lines[number - 1]
            seen: set[tuple[int, int]] = set()
            # Right to left, so earlier offsets stay valid.
            for span, new in sorted(changes, key=lambda c: c[0].start, reverse=True):
                if (span.start, span.end) in seen:
                    continue
                seen.add((span.start, span.end))
                line = line[: span.start] + new + line[span.end :]
            lines[number - 1] = line
        new_text = "".join(lines)
        if new_text != texts[file]:
            out[file] = new_text
    return out


def unified_diff(texts: dict[str, str], patched: dict[str, str]) -> str:
    """One diff over every changed file, ``git apply``-able (a/ and b/ prefixes)."""
    chunks: list[str] = []
    for file in sorted(patched):
        chunks.extend(
            difflib.unified_diff(
                texts[file].splitlines(keepends=True),
                patched[file].splitlines(keepends=True),
                fromfile=f"a/{file}",
                tofile=f"b/{file}",
            )
        )
    return "".join(chunks)
