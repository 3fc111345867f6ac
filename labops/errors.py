"""The errors labops raises: each names the system or host and what to fix.

They are expected (a token refused, a host unreachable): logs and the CLI show them as one line,
never a traceback (:func:`quiet_record`). Their messages are redacted when they are made, since
a server's answer quoted in one may carry a secret and the message travels far (run states,
reports, notifications).
"""

from __future__ import annotations

import logging
from typing import Any

from labops.redact import redact


class LabopsError(Exception):
    """Base of every error labops raises on purpose (shown as one line, never a traceback)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(LabopsError):
    """The config is invalid; ``problems`` holds one line per problem, each naming a key path."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [redact(p) for p in ([problems] if isinstance(problems, str) else problems)]
        super().__init__("\n".join(self.problems))


class SecretError(ConfigError):
    """A secret reference cannot be resolved (variable unset, file missing, block unknown)."""


class SystemError_(LabopsError):
    """A remote system failed; ``system`` names it (``proxmox``, ``ssh:pve1``, ...)."""

    def __init__(self, system: str, message: str) -> None:
        self.system = system
        self.message = redact(message)
        super().__init__(f"{system}: {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles a task's exception into its state (and a process worker's flow run
        # hands it over): rebuild from the constructor's arguments, not from ``args``.
        return (type(self), (self.system, self.message))


class AuthFailed(SystemError_):
    """Credentials were refused (401/403): never retried; the message says what to fix."""


class Unreachable(SystemError_):
    """Connection refused, reset, DNS failure or timeout after every retry."""


class TlsRejected(SystemError_):
    """The server's certificate failed verification: retrying cannot help; fix the CA or name."""


class ApiError(SystemError_):
    """The system answered with an error that retrying does not fix (4xx, or 5xx after retries)."""

    def __init__(self, system: str, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(system, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.system, self.message, self.status))


class MaybeApplied(ApiError):
    """A change whose request was sent but whose answer was lost: it may have happened. Callers
    look for its task before sending it again (never blindly twice)."""


class HostKeyRejected(SystemError_):
    """An SSH host key is unknown or changed; never overwritten."""


class CommandTimeout(SystemError_):
    """A remote command ran past its timeout."""


def one_line(what: BaseException | str) -> str:
    """An error (or text) on one line: its lines joined with "; ", blanks squeezed."""
    text = str(what)
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def expected_error(exc_info: object) -> LabopsError | None:
    """The labops error a log record's ``exc_info`` carries, if it is one (shown as one line,
    without a traceback); None for anything else, which keeps its traceback."""
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else exc_info
    return exc if isinstance(exc, LabopsError) else None


def quiet_record(record: logging.LogRecord) -> None:
    """A log record about one of labops' expected errors becomes one line without traceback.

    Prefect logs a failed task or flow run as ``... exception: <repr of the error>`` with the
    traceback; the repr becomes the error's type and message on one line.
    """
    exc = expected_error(record.exc_info)
    if exc is None:
        return
    message = record.getMessage().replace(repr(exc), f"{type(exc).__name__}: {one_line(exc)}")
    record.msg, record.args = one_line(message), None
    record.exc_info, record.exc_text = None, None
