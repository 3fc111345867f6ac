"""Keeps resolved secrets out of logs and messages, and labops' expected errors out of tracebacks.

A registry of secret values, :func:`redact` for text, and one hook on every log record the
process creates (:func:`install_log_filter`): the record's message and its formatted traceback
are masked, and a record carrying one of labops' own errors (``LabopsError``: auth refused,
unreachable, host key rejected ...) loses its traceback and reads as one line. The hook sits in
the log-record factory rather than on chosen loggers or handlers: a filter on a logger never sees
its children's records, and Prefect replaces its handlers when it sets logging up again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact` and the log filter mask it from now on."""
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def contains_secret(text: str) -> bool:
    """Whether ``text`` holds a registered secret: checked before text leaves the process whole
    (an LLM prompt, a diff artifact), where masking would corrupt it and refusing is safer."""
    with _lock:
        values = list(_secrets)
    return any(value in text for value in values)


_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord) -> None:
    """Mask registered secrets in the record's message, traceback and stack, in place.

    The traceback is formatted here, masked, and kept as ``exc_text`` (which formatters print
    instead of formatting ``exc_info`` again); ``exc_info`` is dropped when it held a secret, so
    a formatter that reads the exception object itself (Prefect's JSON one) finds nothing.
    """
    if not _secrets:
        return
    message = record.getMessage()
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        masked = redact(record.exc_text)
        if masked != record.exc_text:
            record.exc_text, record.exc_info = masked, None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_installed = False
_install_lock = threading.Lock()


def install_log_filter() -> None:
    """Clean every log record of this process from now on (once per process): expected errors
    as one line, registered secrets masked. Called when a flow loads its context and by the
    CLI."""
    from labops.errors import quiet_record  # errors redact their own messages: import here

    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                quiet_record(record)
                redact_record(record)
            except Exception:  # a record that cannot be formatted is logging's to report
                pass
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
