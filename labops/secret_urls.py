"""URLs that carry secrets as references: ``ntfys://{env:NTFY_TOKEN}@ntfy.example/labops``.

Apprise URLs and ping URLs hold their secret inside the URL (a token in the path, a password in
the user part). The config keeps a *template* instead: each secret is a placeholder holding a
secret reference (``{env:NAME}``, ``{file:/path}``, ``{block:name}``, the references of
``labops.config.secrets``), resolved only when the URL is used and registered for redaction then,
so the URL never sits in the config in clear and never shows in a log, artifact or error.

Free of the config package (the notifier settings import this, and the config imports them).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import SecretStr

PLACEHOLDER = re.compile(r"\{((?:env|file|block):[^{}\x00-\x1f\x7f]+)\}")
"""``{env:NAME}``: a secret reference standing in for a part of a URL."""


def check_url_template(value: str) -> str:
    """Validate a URL template: a scheme, every ``{...}`` a secret reference, and no password
    in clear in its user part (``user:{env:PASS}@host`` is the way to give one)."""
    value = value.strip()
    if "://" not in value:
        raise ValueError("not a URL (scheme://...)")
    rest = PLACEHOLDER.sub("", value)
    if "{" in rest or "}" in rest:
        raise ValueError(
            "braces in a URL hold a secret reference only: {env:NAME}, {file:/path}, {block:name}"
        )
    shown = PLACEHOLDER.sub("x", value)
    netloc = urlsplit(shown).netloc
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        password = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        if not PLACEHOLDER.fullmatch(password):
            raise ValueError(
                "a password in a URL must be a reference, e.g. user:{env:NTFY_PASSWORD}@host"
            )
    return value


def references(template: str) -> list[str]:
    """The secret references of a template, in order."""
    return PLACEHOLDER.findall(template)


def resolve_url(template: str, where: str) -> SecretStr:
    """The URL with each placeholder replaced by its secret, resolved now (and so registered
    for redaction). Raises ``SecretError`` naming ``where`` when one cannot resolve."""
    from labops.config.secrets import resolve_secret

    def secret(match: re.Match[str]) -> str:
        return resolve_secret(match.group(1), where).get_secret_value()

    return SecretStr(PLACEHOLDER.sub(secret, template))


def shown_url(template: str) -> str:
    """The template as it may be shown: placeholders kept, query string dropped (a token may
    sit there)."""
    return template.split("?", 1)[0]
