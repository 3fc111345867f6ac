"""Policy of the doc reconciliation operation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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


# What git refuses in a ref name (and "-" first, which a command line would take for an option).
_REF_REFUSED = re.compile(r"^-|\.\.|@\{|//|[\s~^:?*\[\\\x00-\x1f\x7f]")


class DocsGit(Strict):
    """A git repository holding the docs (pulled read-only; drift fixes go on a new branch)."""

    url: str = Field(..., description="Clone URL or local path of the docs repository.")
    branch: str = Field("main", description="The default branch (never committed to).")
    subdir: str = Field(
        "", description="Folder of the docs inside the repository (all of it when empty)."
    )
    push: bool = Field(False, description="Push the drift branch (off: commit locally only).")
    branch_prefix: str = Field("labops/doc-drift-", description="Name prefix of drift branches.")

    @field_validator("branch", "branch_prefix")
    @classmethod
    def _ref_name(cls, value: str) -> str:
        if not value or _REF_REFUSED.search(value):
            raise ValueError(f"{value!r} is not a usable git branch name")
        return value


class DocsPolicy(Strict):
    """What the doc reconciliation reads and what it may write."""

    paths: list[Path] = Field(
        default_factory=list,
        description="Markdown files or folders on disk to check (*.md inside; not with git).",
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
    ignore_undocumented: list[Literal["guest", "router"]] = Field(
        default_factory=list, description="Kinds of live things never reported as undocumented."
    )
    stale_after_days: int | None = Field(
        365,
        ge=1,
        description="A doc whose own 'last reviewed/updated' date is older is stale (None: off).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DocsPolicy:
        # paths are rebased on the config's folder, so with git they would name files on disk,
        # outside the repository: the folder inside it is docs.git.subdir.
        if self.paths and self.git is not None:
            raise ValueError("docs.paths and docs.git exclude each other (use docs.git.subdir)")
        return self
