"""Classify one probed endpoint, with the reasons, from its chain facts and the thresholds.

Pure: no I/O, no Prefect; ``now`` is a parameter so tests pin time. Every finding is kept as a
reason; the status is the worst of them. An endpoint without a certificate is "unreachable",
never "ok".
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from labops.certificates.models import CertInfo, ChainCheck, ChainVerdict
from labops.config.policies.certificates import Thresholds
from labops.reports import Severity


class CertStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    RENEWAL_OVERDUE = "renewal overdue"
    CRITICAL = "critical"
    INCOMPLETE_CHAIN = "incomplete chain"
    HOSTNAME_MISMATCH = "hostname mismatch"
    UNTRUSTED = "untrusted"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    UNREACHABLE = "unreachable"

    @property
    def rank(self) -> int:
        """Higher is worse (the order of the members)."""
        return _RANK[self]

    @property
    def severity(self) -> Severity:
        """An unreachable endpoint could not be checked: a warning (as every could-not-check row
        of labops), never "critical", which says what was found."""
        if self is CertStatus.OK:
            return Severity.OK
        if self in (CertStatus.WARNING, CertStatus.RENEWAL_OVERDUE, CertStatus.UNREACHABLE):
            return Severity.WARNING
        return Severity.CRITICAL


_RANK = {status: i for i, status in enumerate(CertStatus)}


class Finding(BaseModel):
    status: CertStatus
    reason: str


class Classification(BaseModel):
    """The verdict on one endpoint: status (worst finding) and every finding's reason."""

    status: CertStatus
    findings: list[Finding] = Field(default_factory=list)
    expires: datetime | None = Field(None, description="Earliest notAfter in the chain.")
    leaf_expires: datetime | None = None
    seconds_left: float | None = Field(None, description="Until the earliest notAfter.")
    limited_by: str | None = Field(None, description="The certificate that expires first.")
    renewal_due: datetime | None = Field(None, description="When ACME should have renewed.")

    @property
    def severity(self) -> Severity:
        return self.status.severity

    @property
    def reason(self) -> str:
        worst = [f.reason for f in self.findings if f.status is self.status]
        others = [f.reason for f in self.findings if f.status is not self.status]
        return "; ".join(worst + others) or "ok"


def human_duration(seconds: float) -> str:
    """``3.0 days``, ``20 h``, ``45 min`` - the unit the operator would say."""
    s = abs(seconds)
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.0f} h"
    return f"{s / 60:.0f} min"


def _role(index: int, cert: CertInfo, is_anchor: bool) -> str:
    if is_anchor or (cert.self_signed and index > 0):
        return f"root {cert.subject!r}"
    if index == 0:
        return f"certificate {cert.subject!r}"
    return f"intermediate {cert.subject!r}"


def _time_findings(
    role: str, cert: CertInfo, t: Thresholds, now: datetime, leaf: CertInfo | None
) -> list[Finding]:
    left = (cert.not_after - now).total_seconds()
    if now < cert.not_before:
        return [
            Finding(
                status=CertStatus.NOT_YET_VALID,
                reason=f"{role} not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC",
            )
        ]
    if left <= 0:
        return [
            Finding(
                status=CertStatus.EXPIRED,
                reason=f"{role} expired {human_duration(left)} ago "
                f"({cert.not_after:%Y-%m-%d %H:%M} UTC)",
            )
        ]
    lifetime = cert.lifetime_s
    frac = left / lifetime
    days = left / 86400
    cap = lifetime / 86400 * t.days_max_lifetime_fraction
    before_leaf = ""
    if leaf is not None and cert.not_after < leaf.not_after:
        leaf_left = human_duration((leaf.not_after - now).total_seconds())
        before_leaf = f", before the leaf ({leaf_left})"
    head = f"{role} expires in {human_duration(left)}{before_leaf}"
    for status, limit_days, limit_frac in (
        (CertStatus.CRITICAL, t.critical_days, t.critical_fraction),
        (CertStatus.WARNING, t.warning_days, t.warning_fraction),
    ):
        if limit_days <= cap and days < limit_days:
            return [Finding(status=status, reason=f"{head}; {status} below {limit_days:g} days")]
        if frac < limit_frac:
            return [
                Finding(
                    status=status,
                    reason=f"{head}: {frac:.0%} of its {human_duration(lifetime)} lifetime left; "
                    f"{status} below {limit_frac:.0%}",
                )
            ]
    return []


def classify(
    name: str,
    chain: list[CertInfo],
    check: ChainCheck | None,
    thresholds: Thresholds,
    now: datetime,
    error: str | None = None,
    weak_rsa_bits: int = 2048,
) -> Classification:
    """The status of one endpoint and why. ``chain`` is as served, leaf first."""
    if error is not None or not chain:
        return Classification(
            status=CertStatus.UNREACHABLE,
            findings=[Finding(status=CertStatus.UNREACHABLE, reason=error or "no certificate")],
        )
    leaf = chain[0]
    findings: list[Finding] = []
    certs: list[tuple[str, CertInfo]] = [(_role(i, c, False), c) for i, c in enumerate(chain)]
    if check is not None and check.anchor is not None:
        certs.append((_role(len(chain), check.anchor, True), check.anchor))
    for i, (role, cert) in enumerate(certs):
        findings += _time_findings(role, cert, thresholds, now, leaf if i else None)

    # Renewal lag: only for the leaf of an ACME-sized lifetime (a manual 1-year cert has no client
    # that should have renewed it).
    renewal_due = None
    lag = thresholds.renewal_lag_fraction
    if lag is not None and leaf.lifetime_s <= thresholds.renewal_max_lifetime_days * 86400:
        renewal_due = leaf.not_before + (leaf.not_after - leaf.not_before) * lag
        if renewal_due < now < leaf.not_after:
            findings.append(
                Finding(
                    status=CertStatus.RENEWAL_OVERDUE,
                    reason=(
                        f"renewal overdue: past {lag:.0%} of its "
                        f"{human_duration(leaf.lifetime_s)}"
                        f" lifetime since {renewal_due:%Y-%m-%d %H:%M} UTC and not renewed"
                    ),
                )
            )

    if check is not None:
        if check.verdict is ChainVerdict.UNKNOWN_ISSUER:
            findings.append(
                Finding(
                    status=CertStatus.UNTRUSTED,
                    reason=f"untrusted ({check.detail}): not sent by the server, not trusted",
                )
            )
        elif check.verdict in (
            ChainVerdict.SELF_SIGNED,
            ChainVerdict.UNKNOWN_ROOT,
            ChainVerdict.INVALID,
        ):
            label = {
                ChainVerdict.SELF_SIGNED: "untrusted: ",
                ChainVerdict.UNKNOWN_ROOT: "untrusted: ",
                ChainVerdict.INVALID: "untrusted: chain does not validate: ",
            }[check.verdict]
            findings.append(Finding(status=CertStatus.UNTRUSTED, reason=label + check.detail))
        elif check.verdict is ChainVerdict.INCOMPLETE:
            findings.append(
                Finding(
                    status=CertStatus.INCOMPLETE_CHAIN, reason=f"incomplete chain: {check.detail}"
                )
            )
        if not check.hostname_ok:
            names = ", ".join(leaf.dns_names + leaf.ip_addresses) or leaf.subject
            findings.append(
                Finding(
                    status=CertStatus.HOSTNAME_MISMATCH,
                    reason=f"hostname mismatch: certificate for {names} does not cover {name}",
                )
            )

    if leaf.key_type == "RSA" and leaf.key_bits < weak_rsa_bits:
        findings.append(
            Finding(status=CertStatus.WARNING, reason=f"weak key: RSA {leaf.key_bits} bits")
        )
    for role, cert in certs[: len(chain)]:
        if not cert.self_signed and any(h in cert.signature_algorithm for h in ("sha1", "md5")):
            findings.append(
                Finding(
                    status=CertStatus.WARNING,
                    reason=f"{role} signed with {cert.signature_algorithm}",
                )
            )

    status = max((f.status for f in findings), key=lambda s: s.rank, default=CertStatus.OK)
    first = min((c for _, c in certs), key=lambda c: c.not_after)
    return Classification(
        status=status,
        findings=sorted(findings, key=lambda f: -f.status.rank),
        expires=first.not_after,
        leaf_expires=leaf.not_after,
        seconds_left=(first.not_after - now).total_seconds(),
        limited_by=first.subject,
        renewal_due=renewal_due,
    )
