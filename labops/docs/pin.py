"""Pinned claims: the operator says what a sentence means when the extractor cannot know."""

from __future__ import annotations

import re

from labops.config.policies.docs import PinnedClaim
from labops.docs.models import Bound, Claim, ClaimKind, Span

_NUMBER = re.compile(r"(?<![\w.])(?P<prefix>~)?(?P<num>\d+)(?P<plus>\+)?")


def apply_pins(claims: list[Claim], texts: dict[str, str], pins: list[PinnedClaim]) -> list[Claim]:
    """Claims with pinned lines mapped to their fact; a pinned line without a claim gets one."""
    if not pins:
        return claims
    compiled = [(re.compile(p.match), p) for p in pins]
    out = list(claims)
    for file, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for regex, pin in compiled:
                hit = regex.search(line)
                if not hit:
                    continue
                here = [
                    c
                    for c in out
                    if c.file == file
                    and c.line == number
                    and c.kind == ClaimKind.COUNT
                    and hit.start() <= c.spans["count"].start <= hit.end()
                ]
                if here:
                    for claim in here:
                        out[out.index(claim)] = claim.model_copy(
                            update={"fact": pin.fact, "source": "pinned"}
                        )
                    continue
                num = _NUMBER.search(line, hit.start(), hit.end())
                if num is None:
                    continue
                op = "ge" if num.group("plus") else ("approx" if num.group("prefix") else "eq")
                out.append(
                    Claim(
                        kind=ClaimKind.COUNT,
                        file=file,
                        line=number,
                        text=line.strip(),
                        subject=hit.group(0),
                        fact=pin.fact,
                        source="pinned",
                        bound=Bound(value=int(num.group("num")), op=op),
                        value=num.group(0),
                        spans={
                            "count": Span(
                                file=file, line=number, start=num.start("num"), end=num.end("num")
                            )
                        },
                    )
                )
    return out
