"""What every package-manager parser returns: one pending update per package."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from pydantic import BaseModel, Field


class PendingUpdate(BaseModel):
    """A package with a newer version available."""

    name: str
    from_version: str | None = Field(None, description="Installed version (None: new package).")
    to_version: str
    suites: list[str] = Field(
        default_factory=list, description="Archives offering the new version (apt: the suite)."
    )
    arch: str | None = None
    security: bool | None = Field(
        None, description="True/False where the source tells (apt suites); None: unknown (apk)."
    )


# Package names reach shell commands (``apt-get install --only-upgrade NAME``, ``apt-mark hold``,
# ``apk upgrade NAME``): a name read from a host's output is used only when it fits its package
# manager's grammar. Debian policy 5.6.1: lowercase letters, digits, ``+ - .``, at least two
# characters, starting with a letter or digit. apk (Alpine's abuild): letters, digits, ``+ - . _``,
# starting with a letter or digit (a few legacy names carry capitals). Neither grammar has a
# character a shell treats specially, nor a leading ``-`` that a tool would read as an option.
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_APK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]*")
# Debian versions ([epoch:]upstream[-revision]) and apk versions (1.36.1-r29, 2024a-r0, 1.2_rc1)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:_-]*")


def valid_package_name(manager: str | None, name: str) -> bool:
    """Whether ``name`` fits the package-name grammar of ``manager`` (apt by default)."""
    grammar = _APK_NAME if manager == "apk" else _DEB_NAME
    return len(name) <= 200 and grammar.fullmatch(name) is not None


def valid_version(version: str) -> bool:
    """Whether ``version`` looks like a Debian or apk version (used in ``name=version``)."""
    return len(version) <= 200 and _VERSION.fullmatch(version) is not None


def shown(value: str, limit: int = 60) -> str:
    """A refused value as reports show it: quoted, control characters escaped, cut short."""
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")


def shell_words(names: Iterable[str]) -> str:
    """Values joined for a command line, each quoted for the shell."""
    return " ".join(shlex.quote(n) for n in names)


def shell_line(command: str, *args: str) -> str:
    """``command`` (fixed text, a verb) followed by values, each quoted for the shell."""
    return " ".join([command, *(shlex.quote(a) for a in args)])
