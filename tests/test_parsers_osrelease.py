"""os-release parser and the end-of-life table."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from labops.patching.hostcheck import parse_check_output
from labops.patching.osrelease import parse_os_release

DATA = Path(__file__).parent / "data"
TODAY = date(2026, 11, 27)


@pytest.mark.parametrize(
    ("name", "os_id", "release", "codename", "eol"),
    [
        ("debian10.txt", "debian", "10", "buster", True),
        ("debian12.txt", "debian", "12", "bookworm", False),
        ("debian13.txt", "debian", "13", "trixie", False),
        ("ubuntu2404.txt", "ubuntu", "24.04", "noble", False),
        ("alpine320.txt", "alpine", "3.20", None, True),
    ],
)
def test_releases(name: str, os_id: str, release: str, codename: str | None, eol: bool) -> None:
    os = parse_os_release((DATA / "osrelease" / name).read_text())
    assert (os.id, os.release, os.codename) == (os_id, release, codename)
    assert os.is_eol(TODAY) is eol


def test_unknown_release_is_not_flagged() -> None:
    os = parse_os_release('ID=gentoo\nVERSION_ID="2.17"\n')
    assert os.end_of_life() is None and not os.is_eol(TODAY)


def test_combined_check_output_of_this_machine() -> None:
    facts = parse_check_output((DATA / "apt" / "debian12-check-output.txt").read_text(), TODAY)
    assert facts.problem is None and facts.package_manager == "apt"
    assert len(facts.pending) == 119 and facts.security_count == 65
    assert facts.os.label == "debian 12 (bookworm)"
    assert facts.needrestart is not None and not facts.reboot_required


def test_cut_output_is_a_problem_not_up_to_date() -> None:
    text = (DATA / "apt" / "debian12-check-output.txt").read_text()
    cut = text[: text.index("@@labops:apt-held")]
    facts = parse_check_output(cut, TODAY)
    assert facts.problem and "incomplete" in facts.problem
    assert parse_check_output("", TODAY).problem
