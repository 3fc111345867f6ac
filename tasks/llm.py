"""The LLM summary task: redact, check the budget, ask the failover chain, map names back."""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, Field

from blocks.llm import LlmProviders
from labops.digest.findings import Finding
from labops.digest.redaction import (
    Redactor,
    foreign_values,
    llm_payload,
    payload_text,
    redactor_for,
)
from labops.digest.render import as_text
from labops.digest.report import LlmOutcome
from labops.docs.llm_claims import build_messages as doc_messages
from labops.docs.llm_claims import candidates as doc_candidates
from labops.docs.llm_claims import parse_proposals
from labops.docs.models import Claim


@task(name="llm-summary")
def llm_summary(
    providers: LlmProviders, findings: list[Finding], period: str, hosts: list[str]
) -> LlmOutcome:
    """Summarise the findings with the configured models; never raises.

    Sends only allow-listed fields with IPs, host names, user names and e-mails replaced by
    placeholders; the answer is mapped back and returned as inert text, or dropped when it names
    an address, e-mail or placeholder the findings do not hold. Changes nothing.
    """
    try:
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:  # called as .fn outside a run
        log = logging.getLogger("labops.digest")
    try:
        from labops import llm
    except ImportError as exc:  # litellm missing from this install
        return LlmOutcome(note=f"litellm is not available ({exc})")
    redactor = redactor_for(findings, hosts)
    payload = llm_payload(findings, redactor)
    messages = llm.build_messages(payload, period)
    leaked = redactor.leaked(payload_text(payload))
    if leaked:  # a placeholder pass missed a value it knows: do not send
        log.warning("redaction left %d value(s) in the prompt; not sent", len(leaked))
        return LlmOutcome(note=f"redaction incomplete ({len(leaked)} value(s)); not sent")
    budget = providers.budget()
    try:
        answer = llm.complete(providers.router_config(), providers.primary, messages, budget)
    except llm.NoSummary as exc:
        log.warning("no LLM summary: %s", exc)
        return LlmOutcome(note=str(exc))
    log.info(
        "LLM summary by %s: %d+%d tokens, $%.4f, %.1fs",
        answer.model,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.cost_usd,
        answer.seconds,
    )
    restored = redactor.restore(answer.text)
    foreign = foreign_values(restored, findings)
    if foreign:  # it names what the digest does not hold: it followed something, not the data
        log.warning("LLM summary dropped: it names %d value(s) not in the digest", len(foreign))
        return LlmOutcome(
            note=f"the summary named {len(foreign)} value(s) the digest does not hold; dropped",
            model=answer.model,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=answer.cost_usd,
        )
    return LlmOutcome(
        summary=as_text(restored),
        model=answer.model,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        cost_usd=answer.cost_usd,
    )


class DocClaimsOutcome(BaseModel):
    """Claims the LLM proposed from doc prose, or why there are none."""

    claims: list[Claim] = Field(default_factory=list)
    note: str = ""
    refused: bool = Field(False, description="Not sent: the input held a registered secret.")


@task(name="llm-doc-claims")
def llm_doc_claims(
    providers: LlmProviders, texts: dict[str, str], found: list[Claim], hosts: list[str]
) -> DocClaimsOutcome:
    """Ask the models for claims the extractor missed; never raises, changes nothing.

    Same rules as the digest summary: only candidate lines leave, with identifying values
    replaced by placeholders; proposals are listed as unverifiable, never applied.
    """
    try:
        from labops import llm
    except ImportError as exc:
        return DocClaimsOutcome(note=f"litellm is not available ({exc})")
    lines = doc_candidates(texts, found)
    if not lines:
        return DocClaimsOutcome(note="no prose left for the LLM pass")
    redactor = Redactor(hosts=hosts)
    messages = doc_messages(lines, redactor)
    if redactor.leaked(messages[1]["content"].split("\n", 1)[1]):  # the lines, not the frame
        return DocClaimsOutcome(note="redaction incomplete; not sent")
    budget = providers.budget()
    try:
        answer = llm.complete(providers.router_config(), providers.primary, messages, budget)
    except llm.SecretInPrompt as exc:
        return DocClaimsOutcome(note=f"LLM pass {exc}", refused=True)
    except llm.NoSummary as exc:
        return DocClaimsOutcome(note=f"LLM pass skipped: {exc}")
    proposals = parse_proposals(answer.text, lines, redactor)
    return DocClaimsOutcome(
        claims=proposals, note=f"{len(proposals)} claim(s) proposed by {answer.model}"
    )
