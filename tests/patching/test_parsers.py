"""The parsers of every tool's output, data-driven: one case file per real output in
``cases/<tool>/`` (``apt``, ``apk``, ``needrestart``, ``osrelease``, ``hostcheck``), one test per
file.

A case file holds ``command`` (what produced the output; ``command_from`` names the constant or
builder of ``labops.patching.<tool>`` that must build exactly this command, with
``command_args``), ``output`` (the real output, verbatim) and ``parse``: for each parser function
of the tool, its ``kwargs``, the full ``result`` (as JSON), and optionally ``attributes``
(properties of the result) and ``calls`` (methods of the result, with ``args``). Any change of a
parser's result fails its cases. A new case: add a file (see an existing one for the shape).
"""

from __future__ import annotations

import importlib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_core import to_jsonable_python

from labops.patching import apk, apt

CASES_DIR = Path(__file__).parent / "cases"
CASES = sorted(CASES_DIR.glob("*/*.yaml"))


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


def case_output(tool: str, name: str) -> str:
    """The real output stored in ``cases/<tool>/<name>.yaml``."""
    return str(load_case(CASES_DIR / tool / f"{name}.yaml")["output"])


def _json(value: Any) -> Any:
    return to_jsonable_python(value)


def test_every_tool_has_cases() -> None:
    assert {p.parent.name for p in CASES} == {"apt", "apk", "needrestart", "osrelease", "hostcheck"}


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_case(path: Path) -> None:
    case = load_case(path)
    tool = importlib.import_module(f"labops.patching.{path.parent.name}")
    if "command_from" in case:
        built = getattr(tool, case["command_from"].split(".", 1)[1])
        if callable(built):
            built = built(*case.get("command_args", []))
        assert built == case["command"], "the tool file builds another command than the case's"
    assert case["parse"], "a case names at least one parser"
    for parser, spec in case["parse"].items():
        result = getattr(tool, parser)(case["output"], **spec.get("kwargs", {}))
        assert _json(result) == _json(spec["result"]), parser
        for attr, expected in spec.get("attributes", {}).items():
            assert _json(getattr(result, attr)) == _json(expected), f"{parser}().{attr}"
        for method, call in spec.get("calls", {}).items():
            got = getattr(result, method)(*call["args"])
            assert _json(got) == _json(call["result"]), f"{parser}().{method}()"


# -- what does not fit a case file --------------------------------------------------------------


def test_security_suites() -> None:
    assert apt.is_security_suite("bookworm-security")
    assert not apt.is_security_suite("bookworm")


@pytest.mark.parametrize(
    ("pkg", "name", "version"),
    [
        ("libcrypto3-3.3.2-r0", "libcrypto3", "3.3.2-r0"),
        ("py3-foo-bar-1.0_rc1-r2", "py3-foo-bar", "1.0_rc1-r2"),
    ],
)
def test_apk_split_name_version(pkg: str, name: str, version: str) -> None:
    assert apk.split_name_version(pkg) == (name, version)


def test_this_machine_through_real_sshd(sshd) -> None:  # type: ignore[no-untyped-def]
    """The machine's own apt, os-release and needrestart, read over a real SSH connection with
    the same combined command the flow runs."""
    from labops.patching.hostcheck import CHECK_COMMAND, parse_check_output
    from labops.ssh import SshRunner

    result = SshRunner(sshd.settings()).run(sshd.target("self"), CHECK_COMMAND, timeout=60)
    assert result.ok, result.stderr
    facts = parse_check_output(result.stdout, date.today())
    assert facts.problem is None
    assert facts.package_manager == "apt"
    local = apt.parse_upgradable(case_output("apt", "debian12-oldstable-upgradable"))
    # the live list is what apt says now; it has the same shape as the capture
    assert {p.name for p in facts.pending} <= {p.name for p in local} | {
        p.name for p in facts.pending
    }
    assert all(p.from_version and p.to_version and p.suites for p in facts.pending)
    assert facts.os.id == "debian" and facts.os.version_id == "12"
    assert facts.needrestart is not None and facts.needrestart.version
    assert facts.needrestart.kernel_status is not None
