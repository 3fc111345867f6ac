"""Shared fixtures live in tests/fixtures/<name>.py; each module is registered here."""

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.prefect",
    "tests.fixtures.sshd",
    "tests.fixtures.mqtt",
    "tests.fixtures.victoriametrics",
    "tests.fixtures.crowdsec",
    "tests.fixtures.caddy",
    "tests.fixtures.all_systems",
    "tests.fixtures.receivers",
]
