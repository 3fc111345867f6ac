"""The deterministic digest: markdown from a Jinja2 template the operator can replace.

The template runs in Jinja's sandbox (a config-supplied file must not reach Python internals) with
undefined names as errors, so a typo in a custom template fails loudly rather than printing blanks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from labops.digest.findings import Finding, group_by_source
from labops.errors import ConfigError
from labops.markdown import Inert, md_text

DEFAULT_TEMPLATE = Path(__file__).with_name("templates") / "digest.md.j2"
SOURCE_TITLES = {
    "wazuh": "Wazuh",
    "crowdsec": "CrowdSec",
    "loki": "Logs (Loki)",
    "metrics": "Metrics (VictoriaMetrics)",
    "proxmox": "Proxmox",
    "labops": "labops flows",
}


def _hhmm(value: datetime) -> str:
    return value.strftime("%m-%d %H:%M")


def _since(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _inert(value: Any) -> Any:
    """Every ``{{ }}`` output of a template: text made inert markdown (findings carry alert
    titles, scenario names and hosts from outside); numbers as they are."""
    return md_text(value) if isinstance(value, str) else value


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_inert,
    )
    env.filters["hhmm"] = _hhmm
    env.filters["since"] = _since
    return env


def load_template(path: Path | None) -> str:
    """The template text: the operator's file, or the built-in one."""
    target = path or DEFAULT_TEMPLATE
    try:
        return target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"digest.template: cannot read {target}: {exc.strerror}") from None


def render_markdown(
    template: str,
    *,
    lab: str,
    period: str,
    window_start: datetime,
    window_end: datetime,
    findings: list[Finding],
    resolved: list[Finding],
    problems: list[str],
    sources_ok: list[str],
    new_bans: list[str],
    suppressed_count: int,
    summary: str | None,
    summary_note: str | None,
    max_shown: int,
    sources: list[str] | None = None,
) -> str:
    """Render the digest; the same inputs always give the same text.

    ``sources``: one line per source (checked and fine, found N, could not check why since when,
    skipped). Findings with status ``unknown`` carry ``f.unknown`` (why, since).
    """
    groups = group_by_source(findings)
    shown: list[tuple[str, list[Finding]]] = []
    budget = max_shown
    for source, items in groups.items():
        if budget <= 0:
            break
        shown.append((SOURCE_TITLES.get(source, source), items[:budget]))
        budget -= len(items[:budget])
    counts: dict[str, int] = {s: 0 for s in ("critical", "warning", "info", "ok")}
    for f in findings:
        counts[f.severity.value] += 1
    counts["new"] = sum(1 for f in findings if f.status == "new")
    counts["unknown"] = sum(1 for f in findings if f.status == "unknown")
    headline = f"{len(findings)} finding(s), {counts['new']} new" if findings else "all quiet"
    if counts["unknown"]:
        headline += f", {counts['unknown']} unknown"
    if problems:
        headline += f", {len(problems)} source(s) failed"
    context: dict[str, Any] = {
        "lab": lab,
        "period": period,
        "period_word": "day" if period == "daily" else "week",
        "window_start": window_start.strftime("%Y-%m-%d %H:%M"),
        "window_end": window_end.strftime("%Y-%m-%d %H:%M"),
        "headline": headline,
        "findings": findings,
        "groups": shown,
        "counts": counts,
        "hidden_count": len(findings) - max_shown if len(findings) > max_shown else 0,
        "resolved": sorted(resolved, key=lambda f: (f.source, f.title, f.entity)),
        "problems": problems,
        "sources_ok": sources_ok,
        "sources": sources or [],
        "new_bans": new_bans,
        "suppressed_count": suppressed_count,
        "summary": Inert(summary) if summary else summary,  # made inert by as_text
        "summary_note": summary_note,
    }
    try:
        text = _environment().from_string(template).render(context)
    except TemplateError as exc:
        raise ConfigError(f"digest.template: cannot render: {exc}") from None
    # Blank runs left by skipped blocks collapse to one empty line.
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"


def as_text(answer: str, max_chars: int = 3000) -> str:
    """A model's answer made inert: no links, images, HTML or code, quoted line by line.

    Characters are swapped for look-alikes rather than backslash-escaped so that the same text
    reads cleanly in the markdown artifact and in a plain-text message.
    """
    cleaned = answer.replace("\r", "").strip()[:max_chars]
    quoted = (md_text(line) if line.strip() else "" for line in cleaned.splitlines())
    return Inert("\n".join("> " + line if line else ">" for line in quoted))
