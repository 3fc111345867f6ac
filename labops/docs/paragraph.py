"""A Markdown paragraph read as one text, with a map back to its lines.

Prose is wrapped wherever the author's editor wrapped it: "at least 50\\ncontainers" or
"fifty-\\neight agents" is one claim over two lines. The lines of a paragraph are joined (a
space between them, none after a word broken by a hyphen) and every offset of the joined text
maps back to its line and column, so a claim found in it can still be reported, and patched,
where it stands.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

_SENTENCE_END = re.compile(r"[.;!?](?:\s|$)")
_BROKEN_WORD = re.compile(r"[A-Za-z]-$")


@dataclass
class Paragraph:
    """The joined text and, per line, where its text starts in it (``starts``), its line
    number (``numbers``), the column its text starts at (``columns``) and its length."""

    text: str = ""
    starts: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    _ends: list[int] | None = None

    def locate(self, offset: int) -> tuple[int, int]:
        """(line number, column) of an offset of the joined text; an offset on a joining
        space belongs to the end of the line before it."""
        i = max(0, bisect_right(self.starts, offset) - 1)
        column = min(offset - self.starts[i], self.lengths[i])
        return self.numbers[i], self.columns[i] + column

    def offset(self, number: int, column: int) -> int | None:
        """The offset in the joined text of a line's column (None: not in the paragraph)."""
        i = bisect_right(self.numbers, number) - 1
        if i < 0 or self.numbers[i] != number:
            return None
        return self.starts[i] + max(0, column - self.columns[i])

    def same_line(self, start: int, end: int) -> bool:
        """Whether the range start..end of the joined text lies on one line."""
        return end <= start or self.locate(start)[0] == self.locate(end - 1)[0]

    def sentence(self, offset: int) -> tuple[int, int, int]:
        """(index, start, end) of the sentence holding ``offset`` in the joined text."""
        if self._ends is None:  # found once: a long paragraph must not be rescanned per claim
            self._ends = [m.end() for m in _SENTENCE_END.finditer(self.text)]
        i = bisect_right(self._ends, offset)
        start = self._ends[i - 1] if i else 0
        return i, start, self._ends[i] if i < len(self._ends) else len(self.text)


def join_lines(lines: list[tuple[int, str]]) -> Paragraph:
    """One paragraph's lines (number, text) joined; continuation lines lose their indent."""
    par = Paragraph()
    parts: list[str] = []
    length = 0
    for i, (number, line) in enumerate(lines):
        text = line.rstrip() if i == 0 else line.strip()
        column = 0 if i == 0 else len(line) - len(line.lstrip())
        if i:
            previous = parts[-1]
            if not _BROKEN_WORD.search(previous):  # "fifty-" + "eight" is one word
                parts.append(" ")
                length += 1
        par.starts.append(length)
        par.numbers.append(number)
        par.columns.append(column)
        par.lengths.append(len(text))
        parts.append(text)
        length += len(text)
    par.text = "".join(parts)
    return par
