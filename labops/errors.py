"""The errors labops raises: each names the system or host and what to fix."""

from __future__ import annotations


class LabopsError(Exception):
    """Base of every error labops raises on purpose (shown as one line, never a traceback)."""


class ConfigError(LabopsError):
    """The config is invalid; ``problems`` holds one line per problem, each naming a key path."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SecretError(ConfigError):
    """A secret reference cannot be resolved (variable unset, file missing, block unknown)."""


class SystemError_(LabopsError):
    """A remote system failed; ``system`` names it (``proxmox``, ``ssh:pve1``, ...)."""

    def __init__(self, system: str, message: str) -> None:
        self.system = system
        self.message = message
        super().__init__(f"{system}: {message}")


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


class MaybeApplied(ApiError):
    """A change whose request was sent but whose answer was lost: it may have happened. Callers
    look for its task before sending it again (never blindly twice)."""


class HostKeyRejected(SystemError_):
    """An SSH host key is unknown or changed; never overwritten."""


class CommandTimeout(SystemError_):
    """A remote command ran past its timeout."""
