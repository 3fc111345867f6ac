"""The words of the command line: help never cuts an operation name at its hyphen,
``labops sandbox status`` is a short table, the README's stop command is the demo's."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cli.main import build_parser
from cli.run import FLOWS
from cli.sandbox import status_table


@pytest.mark.parametrize("columns", ["60", "80", "100"])
def test_help_never_breaks_operation_names(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    texts = [parser.format_help()]
    texts += [p.format_help() for p in sub.choices.values()]  # type: ignore[union-attr]
    hyphenated = [name for name in FLOWS if "-" in name]
    assert hyphenated
    for text in texts:
        assert not re.search(r"[a-z]-\n", text), text
    run_help = " ".join(sub.choices["run"].format_help().split())  # type: ignore[index]
    for name in FLOWS:
        assert name in run_help


def test_sandbox_status_is_a_short_table() -> None:
    ready = {
        "pid": 42,
        "control_url": "http://127.0.0.1:28100",
        "config": "/x/.labops/sandbox/labops.yaml",
        "ports": {"pve": [28101, 28102, 28103, 28104, 28105], "pbs": [28106]},
        "failed": {"wazuh": "OSError: port taken"},
        "startup_s": 1.2,
        "time_scale": 0.05,
    }
    lines = status_table(ready).splitlines()
    assert lines[0].startswith("sandbox running (pid 42), control http://127.0.0.1:28100")
    assert lines[3].split() == ["SERVICE", "PORTS", "STATE"]
    assert lines[4].split() == ["pbs", "28106", "up"]
    assert lines[5].split() == ["pve", "28101,", "28102,", "28103", "(+2)", "up"]
    assert lines[6].startswith("wazuh") and "FAILED: OSError: port taken" in lines[6]
    assert len(lines) == 7


def test_the_readme_stop_command_is_the_one_the_demo_prints() -> None:
    """The demo's last line, with its variables as the script sets them, is the README's."""
    root = Path(__file__).resolve().parents[2]
    script = (root / "scripts" / "demo.sh").read_text()
    stop = subprocess.run(
        ["bash", "-c", _demo_stop_lines(script) + '\nprintf %s "$stop"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "VM_URL": "http://127.0.0.1:8428"},
    ).stdout
    assert stop == (
        ".venv/bin/labops sandbox stop; .venv/bin/labops server stop; "
        "kill $(cat .labops/victoria-metrics/victoria-metrics.pid)"
    )
    readme = " ".join((root / "README.md").read_text().split())
    assert f"`{stop}`" in readme


def _demo_stop_lines(script: str) -> str:
    wanted = ("LABOPS=", "VM_DIR=", "VM_PID_FILE=", "stop=", '[ -n "$VM_URL" ] && stop+=')
    return "\n".join(line for line in script.splitlines() if line.startswith(wanted))
