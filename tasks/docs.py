"""Tasks of doc reconciliation: read the docs (files or a git repository), write the fix branch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import task
from pydantic import BaseModel, Field

from labops.config.policies.docs import DocsGit, DocsPolicy
from labops.errors import ApiError, ConfigError


class DocSet(BaseModel):
    """The documents read, keyed by their path relative to ``root``."""

    root: Path
    texts: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ApiError("git", f"git {' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return done.stdout.strip()


def _collect(root: Path, paths: list[Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in paths:
        full = path if path.is_absolute() else root / path
        if full.is_dir():
            files = sorted(full.rglob("*.md"))
        elif full.exists():
            files = [full]
        else:
            raise ConfigError(f"docs.paths: {path} does not exist")
        for file in files:
            texts[str(file.relative_to(root)) if file.is_relative_to(root) else str(file)] = (
                file.read_text(encoding="utf-8")
            )
    return texts


@task(name="read-docs", retries=1)
def read_docs(policy: DocsPolicy, checkout_dir: Path) -> DocSet:
    """Read the Markdown docs; a git repository is cloned or fast-forwarded, never written to."""
    if policy.git is None:
        root = Path.cwd()
        return DocSet(root=root, texts=_collect(root, policy.paths))
    repo = _checkout(policy.git, checkout_dir)
    root = repo / policy.git.subdir if policy.git.subdir else repo
    paths = policy.paths or [Path(".")]
    return DocSet(root=root, texts=_collect(root, paths), commit=_git(repo, "rev-parse", "HEAD"))


def _checkout(git: DocsGit, checkout_dir: Path) -> Path:
    if not (checkout_dir / ".git").exists():
        checkout_dir.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["git", "clone", "--quiet", "--branch", git.branch, git.url, str(checkout_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise ApiError("git", f"cannot clone {git.url}: {done.stderr.strip()[:300]}")
        return checkout_dir
    _git(checkout_dir, "fetch", "--quiet", "origin", git.branch)
    _git(checkout_dir, "checkout", "--quiet", "--force", "--detach", f"origin/{git.branch}")
    return checkout_dir


@task(name="commit-doc-fix")
def commit_fix(
    git: DocsGit, checkout_dir: Path, root: Path, patched: dict[str, str], branch: str
) -> str:
    """CHANGES the docs repository: commit the patched files on a new branch (push if set).

    Never on the default branch; an existing branch of the same name is reused (the re-run of a
    killed run), so nothing is committed twice.
    """
    if branch == git.branch:
        raise ConfigError("docs.git.branch_prefix: the fix branch would be the default branch")
    _git(checkout_dir, "checkout", "--quiet", "-B", branch, f"origin/{git.branch}")
    for rel, text in patched.items():
        (root / rel).write_text(text, encoding="utf-8")
    _git(checkout_dir, "add", "--all")
    if _git(checkout_dir, "status", "--porcelain"):
        _git(
            checkout_dir,
            "-c",
            "user.name=labops",
            "-c",
            "user.email=labops@localhost",
            "commit",
            "--quiet",
            "-m",
            "docs: update values drifted from the live lab",
        )
    if git.push:
        _git(checkout_dir, "push", "--quiet", "--force-with-lease", "origin", branch)
    return branch
