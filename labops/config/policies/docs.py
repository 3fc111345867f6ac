"""Policy of the doc reconciliation operation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from labops.config.systems import Strict


class PinnedClaim(Strict):
    """Pins a sentence the extractor cannot read to a live fact ("39 HTTPS services")."""

    match: str = Field(..., description="Regular expression matched against each doc line.")
    fact: Literal[
        "nodes",
        "lxc",
        "qemu",
        "guests",
        "https_services",
        "beszel_agents",
        "scrape_targets",
        "wazuh_agents",
    ] = Field(..., description="The live count it states.")


class DocsGit(Strict):
    """A git repository holding the docs (pulled read-only; drift fixes go on a new branch)."""

    url: str = Field(..., description="Clone URL or local path of the docs repository.")
    branch: str = Field("main", description="The default branch (never committed to).")
    subdir: str = Field("", description="Folder of the docs inside the repository.")
    push: bool = Field(False, description="Push the drift branch (off: commit locally only).")
    branch_prefix: str = Field("labops/doc-drift-", description="Name prefix of drift branches.")


class DocsPolicy(Strict):
    """What the doc reconciliation reads and what it may write."""

    paths: list[Path] = Field(
        default_factory=list, description="Markdown files or folders to check (*.md inside)."
    )
    git: DocsGit | None = Field(None, description="Read the docs from a git repository instead.")
    claims: list[PinnedClaim] = Field(
        default_factory=list, description="Sentences pinned to live facts."
    )
    write: bool = Field(
        False, description="Commit the proposed patch on a new branch (dry run when off)."
    )
    llm_pass: bool = Field(
        False, description="Ask the LLM for claims the extractor missed (shown, never applied)."
    )
    ignore_guests: list[int] = Field(
        default_factory=list, description="vmids never reported as undocumented."
    )
