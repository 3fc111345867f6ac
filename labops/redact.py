"""Keeps resolved secrets out of logs: a registry of values and a logging filter that masks them."""

from __future__ import annotations

import logging
import threading

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


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_installed = False


def install_log_filter() -> None:
    """Attach the filter to the root, prefect and library loggers once per process."""
    global _installed
    if _installed:
        return
    flt = RedactingFilter()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "labops", "paramiko"):
        logger = logging.getLogger(name)
        logger.addFilter(flt)
        for handler in logger.handlers:
            handler.addFilter(flt)
    _installed = True
