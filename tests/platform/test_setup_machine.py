"""What the setup (scripts/test.sh, scripts/demo.sh) leaves on the machine."""

from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian machine")
def test_no_package_is_left_half_installed() -> None:
    audit = subprocess.run(["dpkg", "--audit"], capture_output=True, text=True, timeout=60)
    assert audit.stdout.strip() == "", audit.stdout
