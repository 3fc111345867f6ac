"""Fuzz what the MQTT bridge does with a message (``labops.triggers.parse_run_request``).

The promise under test: any bytes on any topic either become a request the allowlist allows and
the flow's bounds accept, or are refused with one short, escaped line; nothing else is raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from labops.config.loader import parse_config
from labops.config.policies.platform import TriggerRule
from labops.flow_params import FLOW_PARAMETERS, check_parameters, parameter_names
from labops.triggers import ID_KEY, Refused, RunRequest, may_change_lab, parse_run_request
from tests.fuzz.strategies import FUZZ, json_like, text

pytestmark = pytest.mark.timeout(120)

PREFIX = "labops/run"
DEFAULT = parse_config({}).platform.triggers
# every parameter settable, nothing fixed: the deepest checks are reached
OPEN = {
    name: TriggerRule(parameters={p: {} for p in parameter_names(name)})  # type: ignore[misc]
    for name in FLOW_PARAMETERS
}
NAMES = sorted({p for flow in FLOW_PARAMETERS for p in FLOW_PARAMETERS[flow].model_fields})
topics = st.one_of(
    st.sampled_from([f"{PREFIX}/{name}" for name in FLOW_PARAMETERS]),
    st.builds(lambda t: f"{PREFIX}/{t}", text),
    text,
)
values = st.one_of(
    json_like,
    st.integers(-(2**40), 2**40),
    st.lists(st.integers(0, 2**31), max_size=30),
    st.lists(st.sampled_from(["pve1", "dns", "a;b", "", "-x", "host.lab"]), max_size=30),
    st.sampled_from([True, False, None, "daily", "weekly", 100, 99, 0, -1, "x" * 300]),
)
payloads = st.dictionaries(st.one_of(st.sampled_from([*NAMES, ID_KEY]), text), values, max_size=6)


def check(topic: str, raw: bytes, rules: Mapping[Any, TriggerRule]) -> None:
    try:
        request = parse_run_request(PREFIX, topic, raw, rules)
    except Refused as exc:
        line = str(exc)
        assert line and "\n" not in line and "\r" not in line, line
        assert line.isascii() and len(line) <= 300, line
        return
    assert isinstance(request, RunRequest)
    rule = rules[request.flow]
    assert rule.enabled
    check_parameters(request.flow, request.parameters)  # inside the flow's bounds
    for key, value in request.parameters.items():
        assert key != "config"
        if key in rule.fixed:
            assert value == rule.fixed[key]
        else:
            assert key in rule.parameters, key
    if request.request_id is None:
        assert not may_change_lab(request.flow, request.parameters)


@FUZZ
@given(topics, st.binary(max_size=300))
@example(f"{PREFIX}/backups", b'{"dry_run": false}')
@example(f"{PREFIX}/housekeeping", b'{"retention_days": -1}')
@example(f"{PREFIX}/certificates", b'{"renew": true}')
@example(f"{PREFIX}/housekeeping", b"[" * 5000)
@example(f"{PREFIX}/housekeeping", b"9" * 5000)
def test_any_bytes_on_any_topic(topic: str, raw: bytes) -> None:
    check(topic, raw, DEFAULT)
    check(topic, raw, OPEN)


@FUZZ
@given(topics, payloads)
@example(f"{PREFIX}/backups", {"vmids": [101], ID_KEY: "a-1"})
@example(f"{PREFIX}/patch-apply", {"hosts": ["pve1"], "dry_run": False, ID_KEY: "x"})
def test_json_objects_of_parameter_names(topic: str, payload: dict[str, Any]) -> None:
    raw = json.dumps(payload).encode()
    check(topic, raw, DEFAULT)
    check(topic, raw, OPEN)
