"""Hypothesis strategies shared by the fuzz tests: JSON-like trees, text that looks like the
remote output it stands for, and mutations of a real document."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=200,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""A few seconds per target; ``deadline`` (ms) turns a slow example into a failure."""

# Characters remote output is made of, plus the awkward ones (NUL, CR, tabs, non-ASCII, RTL).
_ALPHABET = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S", "Zs", "Cc"),
)
text = st.text(_ALPHABET, max_size=80)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)

json_like: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(text, children, max_size=5),
    ),
    max_leaves=25,
)


def lines_of(*templates: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text made of lines that are either shaped like the real format or garbage."""
    line = st.one_of(*templates, text)
    return st.lists(line, max_size=30).map("\n".join)


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys/indexes) into a JSON-like tree, the root included."""
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out.extend(paths(value, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn, seed: Any, keys: list[str]) -> Any:
    """``seed`` with a few random edits: a value replaced, a key dropped, a key added or renamed.

    Starting from a valid document reaches the deep validators that random trees never do.
    """
    tree = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(paths(tree)))
        parent: Any = None
        node = tree
        for step in where:
            parent, node = node, node[step]
        action = draw(st.sampled_from(["replace", "drop", "add", "rename"]))
        if action == "replace" or not where:
            value = draw(st.one_of(json_like, st.sampled_from(["env:X", "file:", "-1", "", "0"])))
            if not where:
                if not isinstance(value, dict):
                    continue
                tree = value
            else:
                parent[where[-1]] = value
        elif action == "drop" and isinstance(parent, dict):
            parent.pop(where[-1], None)
        elif action == "add" and isinstance(node, dict):
            node[draw(st.one_of(st.sampled_from(keys), text))] = draw(json_like)
        elif action == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(keys), text))
            parent[new] = parent.pop(where[-1])
    return tree
