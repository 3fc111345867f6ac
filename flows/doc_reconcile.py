"""Doc reconciliation: the infrastructure docs checked against the live lab.

Runbook: read the docs -> extract claims (pinned sentences too) -> gather live facts from every
configured source -> compare -> propose a patch (and, when allowed, commit it on a new branch)
-> report, artifact, notification when drift appears or grows, metric of drifted claims.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.context import LabContext
from blocks.llm import LlmProviders
from blocks.ssh import SshCredentials
from labops.docs.models import Claim, HostProbe, LiveFacts, Status
from labops.docs.reconcile import (
    documented_claims,
    fix_branch,
    judge,
    note_stale,
    note_unavailable,
    propose_patch,
    record,
)
from labops.docs.report import DocReport
from labops.docs.runbook import by_host, resolve_hosts
from labops.errors import LabopsError
from labops.flow_params import ConfigPath
from labops.markdown import md_block
from labops.reports import Failure
from labops.scope import artifact_key
from tasks.doc_facts import dns_doc_facts, host_probe_facts, proxmox_doc_facts
from tasks.docs import commit_fix, read_docs
from tasks.live_facts import (
    beszel_facts,
    scrape_target_facts,
    traefik_facts,
    wazuh_agent_facts,
)
from tasks.llm import llm_doc_claims
from tasks.publish import publish_report

_FACTS = {  # source -> its task, in the order they are asked
    "proxmox": proxmox_doc_facts,
    "traefik": traefik_facts,
    "technitium": dns_doc_facts,
    "beszel": beszel_facts,
    "victoriametrics": scrape_target_facts,
    "wazuh_api": wazuh_agent_facts,
}


def gather_live_facts(ctx: LabContext) -> LiveFacts:
    """Ask every configured source at once; a source that fails is named, not dropped."""
    live = LiveFacts()
    futures: dict[str, PrefectFuture[Any]] = {}
    for source, fetch in _FACTS.items():
        if not ctx.configured(source):
            live.unavailable[source] = "not configured"
            continue
        futures[source] = fetch.submit(ctx.block(source))  # type: ignore[attr-defined]
    for source, future in futures.items():
        try:
            record(live, source, future.result())
        except Exception as exc:  # one source down never hides the others
            live.unavailable[source] = f"failed: {exc}"
    return live


def check_runbooks(
    ctx: LabContext, claims: list[Claim], live: LiveFacts, report: DocReport
) -> None:
    """What the docs say about a host (paths, interfaces, units, commands, ports), checked on
    it over SSH (``pct exec`` for a container). Reads only; a host that cannot be asked is a
    failure, its claims stay unverified."""
    hosts = by_host(claims)
    if not hosts:
        return
    if not ctx.configured("ssh"):
        live.unavailable["ssh"] = "not configured"
        return
    if live.guests is None:
        live.unavailable["ssh"] = "hosts cannot be resolved without the Proxmox facts"
        return
    # A node's SSH address: the inventory's, else systems.proxmox.nodes (as patching has it).
    pve = ctx.config.systems.proxmox
    node_ssh = {
        name: (node.ssh_host, node.ssh_port)
        for name, node in (pve.nodes if pve else {}).items()
        if node.ssh_host
    }
    for host in ctx.config.inventory.hosts:
        if host.kind == "node" and host.access == "ssh":
            node_ssh[host.name] = (host.address or host.name, host.port)
    targets, unreachable = resolve_hosts(set(hosts), live, node_ssh)
    live.hosts = {ref: HostProbe(host=ref, error=why) for ref, why in unreachable.items()}
    try:
        live.hosts |= host_probe_facts(cast("SshCredentials", ctx.block("ssh")), targets, hosts)
    except Exception as exc:  # the other claims are still judged
        live.unavailable["ssh"] = f"failed: {exc}"
        return
    for ref, probe in live.hosts.items():
        if probe.error and ref not in unreachable:
            report.failures.append(Failure(entity=f"host {ref}", reason=probe.error, system="ssh"))


def propose_with_llm(
    ctx: LabContext,
    texts: dict[str, str],
    claims: list[Claim],
    live: LiveFacts,
    report: DocReport,
) -> list[Claim]:
    """The optional LLM pass: claims from free prose, listed as proposals, never applied."""
    if not ctx.configured("llm"):
        report.skipped.append("llm pass: systems.llm not configured")
        return []
    names = [g.name for g in live.guests or []] + list(live.nodes or [])
    outcome = llm_doc_claims(cast("LlmProviders", ctx.block("llm")), texts, claims, names)
    report.llm_note = outcome.note
    if outcome.refused:
        report.failures.append(Failure(entity="llm pass", reason=outcome.note))
    return outcome.claims


@flow(
    name="doc-reconcile",
    task_runner=ThreadPoolTaskRunner(max_workers=6),  # type: ignore[arg-type]
    log_prints=False,
)
def doc_reconcile(config: ConfigPath | None = None, dry_run: bool = True) -> DocReport | State:
    """Check the infrastructure docs against the live lab and propose a patch for what drifted.

    Reads only, unless `dry_run` is False and `docs.write` is on: then it CHANGES the docs
    repository (a commit on a new branch). Only regular files inside the docs folder or
    repository are read or written; symlinks are listed as not read.

    Args:
        config: Path of the labops config (default: LABOPS_CONFIG or ./labops.yaml).
        dry_run: Only propose the patch (the default); with False and `docs.write` on, commit it
            on a new branch of the docs repository (never the default branch).
    """
    log = get_run_logger()
    ctx = LabContext.load(config)
    policy = ctx.config.docs
    report = DocReport(lab=ctx.config.lab.name, dry_run=dry_run)
    if not policy.paths and policy.git is None:
        report.skipped.append("docs: no docs.paths or docs.git configured")
        return cast("DocReport | State", publish_report(report, ctx.delivery()))

    # 1. Read the docs (a fresh checkout of their repository, or the folders).
    checkout = Path(ctx.config.lab.state_dir) / "docs-repo"
    try:
        docs = read_docs(policy, checkout)
    except LabopsError as exc:
        report.failures.append(Failure(entity="docs", reason=str(exc)))
        return cast("DocReport | State", publish_report(report, ctx.delivery()))
    report.documents, report.not_read, report.commit = sorted(docs.texts), docs.skipped, docs.commit
    # 2. Extract the claims, pinned sentences too.
    claims = documented_claims(docs.texts, policy.claims)
    log.info("%d claims in %d documents", len(claims), len(docs.texts))
    # 3. Gather the live facts; the optional LLM pass proposes claims from free prose.
    live = gather_live_facts(ctx)
    if policy.llm_pass:
        claims += propose_with_llm(ctx, docs.texts, claims, live, report)
    check_runbooks(ctx, claims, live, report)
    note_unavailable(report, live)
    # 4. Compare, then propose a patch of what drifted.
    judge(report, claims, live, policy.ignore_guests, policy.ignore_undocumented)
    note_stale(report, docs.texts, docs.changed, datetime.now(UTC).date(), policy.stale_after_days)
    patched = propose_patch(report, docs.texts)
    if report.diff:
        create_markdown_artifact(
            md_block(report.diff, "diff"),  # a doc line of backticks cannot close the fence
            key=artifact_key(ctx.config.lab.name, "doc_reconcile", "patch"),
            description="Proposed patch of the drifted values",
        )
    # 5. When allowed, commit the patch on a new branch (never the default one).
    if patched and policy.git is not None and policy.write and not dry_run:
        branch = fix_branch(policy.git.branch_prefix, docs.commit, datetime.now(UTC))
        try:
            report.branch = commit_fix(policy.git, checkout, docs.commit or "", patched, branch)
        except LabopsError as exc:  # e.g. a file became a link: the fix is refused, named
            report.failures.append(Failure(entity="fix branch", reason=str(exc)))

    # 6. Remember the drift (a notification when it appears or grows), then publish.
    previous = ctx.state.load("doc-reconcile", DocReport)
    report.previous_drift = previous.drifted if previous else None
    ctx.state.save("doc-reconcile", report)
    log.info("%d drifted, %d undocumented", report.drifted, len(report.undocumented))
    return cast("DocReport | State", publish_report(report, ctx.delivery()))


__all__ = ["Status", "doc_reconcile"]
