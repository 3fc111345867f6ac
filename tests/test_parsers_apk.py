"""apk parsers, from Alpine 3.20 output formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from labops.patching import apk

DATA = Path(__file__).parent / "data" / "apk"


def test_version_list() -> None:
    pkgs = apk.parse_version((DATA / "alpine320-version.txt").read_text())
    by = {p.name: p for p in pkgs}
    assert len(pkgs) == 6
    assert by["busybox-binsh"].from_version == "1.36.1-r29"
    assert by["busybox-binsh"].to_version == "1.36.1-r31"
    assert by["ssl_client"].to_version == "1.36.1-r31"
    assert all(p.security is None for p in pkgs)  # apk cannot tell: unknown, not "no"


def test_world_pins_are_held() -> None:
    assert apk.parse_world_pins((DATA / "alpine320-world.txt").read_text()) == ["nginx", "redis"]


def test_upgrade_simulation() -> None:
    pkgs = apk.parse_upgrade_simulation((DATA / "alpine320-upgrade-simulate.txt").read_text())
    assert [p.name for p in pkgs][:2] == ["musl", "busybox"]
    assert len(pkgs) == 6


@pytest.mark.parametrize(
    ("pkg", "name", "version"),
    [
        ("libcrypto3-3.3.2-r0", "libcrypto3", "3.3.2-r0"),
        ("py3-foo-bar-1.0_rc1-r2", "py3-foo-bar", "1.0_rc1-r2"),
    ],
)
def test_split_name_version(pkg: str, name: str, version: str) -> None:
    assert apk.split_name_version(pkg) == (name, version)
