"""Shared fixtures live in tests/fixtures/<name>.py; each module is registered here."""

pytest_plugins = [
    "tests.fixtures.prefect",
    "tests.fixtures.sshd",
]
