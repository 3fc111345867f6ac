"""Scheduled runs must be able to start: every deployment's default parameters (the config's
``platform.schedules`` merged into the spec) are accepted by its flow's signature.

A mismatch is not caught by ``labops deploy`` or ``serve``: the run is created, then crashes in
the engine with ``SignatureMismatchError`` at its scheduled time, every time (found by the kill -9
drill: the patch-apply deployment could not run at all).
"""

from __future__ import annotations

import pytest

from deployments.catalog import FLOWS, load_flow
from deployments.definitions import deployment_specs
from labops.config.loader import parse_config

SPECS = {s.name: s for s in deployment_specs(parse_config({}), "/etc/labops/labops.yaml")}


@pytest.mark.parametrize("name", list(FLOWS))
def test_default_deployment_parameters_fit_the_flow(name: str) -> None:
    flow = load_flow(name)
    flow.validate_parameters(SPECS[name].parameters)
