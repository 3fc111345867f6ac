"""Tasks of doc reconciliation: read the docs (files or a git repository), write the fix branch."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath

from prefect import task
from pydantic import BaseModel, Field

from labops.config.policies.docs import DocsGit, DocsPolicy
from labops.docs.sources import (
    NotRead,
    collect_files,
    decode_doc,
    parse_ls_tree,
    read_regular,
    select_tree,
    write_inside,
)
from labops.errors import ApiError, ConfigError


class DocSet(BaseModel):
    """The documents read, keyed by their path relative to ``root``."""

    root: Path
    texts: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    skipped: list[str] = Field(
        default_factory=list, description="Files not read (symlinks, submodules, ...), with why."
    )
    changed: dict[str, date] = Field(
        default_factory=dict, description="Day of the last commit touching each doc (git only)."
    )


# A credential prompt would hang the run until the timeout: fail at once instead.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


def _run_git(args: list[str], stdin: bytes | None = None, timeout: float = 120) -> bytes:
    done = subprocess.run(
        ["git", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **_GIT_ENV},
    )
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:300]
        raise ApiError("git", f"git {' '.join(args[:3])} failed: {err}")
    return done.stdout


def _git(repo: Path, *args: str) -> str:
    return _run_git(["-C", str(repo), *args]).decode().strip()


@task(name="read-docs", retries=1)
def read_docs(policy: DocsPolicy, checkout_dir: Path) -> DocSet:
    """Read the Markdown docs. Changes nothing: a git repository is cloned or fetched into
    labops' own clone and read from the commit (never checked out, never written to); links and
    submodules are listed as skipped, never followed."""
    if policy.git is None:
        root = Path.cwd()
        files, skipped = collect_files(root, policy.paths)
        texts: dict[str, str] = {}
        for name, path in files.items():
            try:
                texts[name] = read_regular(path, name)
            except NotRead as exc:
                skipped.append(str(exc))
        return DocSet(root=root, texts=texts, skipped=skipped)
    commit = _fetch(policy.git, checkout_dir)
    tree = parse_ls_tree(_run_git(["-C", str(checkout_dir), "ls-tree", "-r", "-z", commit]))
    files_git, skipped = select_tree(tree, policy.git.subdir)
    texts, unread = _blobs(checkout_dir, files_git)
    root = checkout_dir / policy.git.subdir if policy.git.subdir else checkout_dir
    changed = last_changed(
        _run_git(["-C", str(checkout_dir), "log", "--format=@%ct", "--name-only", commit]),
        policy.git.subdir,
    )
    return DocSet(
        root=root,
        texts=texts,
        commit=commit,
        skipped=skipped + unread,
        changed={name: day for name, day in changed.items() if name in texts},
    )


def last_changed(log: bytes, subdir: str) -> dict[str, date]:
    """Day of the newest commit touching each file, from ``git log --format=@%ct --name-only``
    (newest first), keyed by path relative to ``subdir``."""
    prefix = subdir.strip("/") + "/" if subdir.strip("/") else ""
    out: dict[str, date] = {}
    day: date | None = None
    for raw in log.decode("utf-8", errors="surrogateescape").splitlines():
        if raw.startswith("@") and raw[1:].isdigit():
            day = datetime.fromtimestamp(int(raw[1:]), UTC).date()
        elif raw and day is not None and raw.startswith(prefix):
            out.setdefault(raw[len(prefix) :], day)
    return out


def _fetch(git: DocsGit, checkout_dir: Path) -> str:
    """The commit at the tip of ``git.branch``, fetched into labops' clone (made on first use,
    without a work tree). ``--`` ends the options: a URL or branch is never taken for one."""
    if not (checkout_dir / ".git").exists():
        checkout_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            options = ["--quiet", "--no-checkout", "--branch", git.branch]
            _run_git(["clone", *options, "--", git.url, str(checkout_dir)], timeout=300)
        except ApiError as exc:
            raise ApiError("git", f"cannot clone {git.url}: {exc}") from None
    else:
        _git(checkout_dir, "fetch", "--quiet", "origin", "--", git.branch)
    tip = f"refs/remotes/origin/{git.branch}^{{commit}}"
    return _git(checkout_dir, "rev-parse", "--verify", "--end-of-options", tip)


def _blobs(repo: Path, files: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The text of each blob (name -> object id) in one ``git cat-file --batch``."""
    names = sorted(files)
    out = _run_git(
        ["-C", str(repo), "cat-file", "--batch"],
        stdin="".join(files[n] + "\n" for n in names).encode(),
    )
    texts: dict[str, str] = {}
    unread: list[str] = []
    pos = 0
    for name in names:
        end = out.index(b"\n", pos)
        _oid, _kind, size = out[pos:end].decode().split(" ")
        data = out[end + 1 : end + 1 + int(size)]
        pos = end + 1 + int(size) + 1
        try:
            texts[name] = decode_doc(data, name)
        except NotRead as exc:
            unread.append(str(exc))
    return texts, unread


@task(name="commit-doc-fix")
def commit_fix(
    git: DocsGit, checkout_dir: Path, commit: str, patched: dict[str, str], branch: str
) -> str:
    """CHANGES the docs repository: commit the patched files on a new branch (push if set).

    Never on the default branch; an existing branch of the same name is reused (the re-run of a
    killed run), so nothing is committed twice. The branch starts at ``commit``, the one the
    patch was computed from; only regular files inside the repository are written.
    """
    if branch == git.branch:
        raise ConfigError("docs.git.branch_prefix: the fix branch would be the default branch")
    _git(checkout_dir, "checkout", "--quiet", "--force", "-B", branch, commit, "--")
    paths = [str(PurePosixPath(git.subdir, rel)) if git.subdir else rel for rel in sorted(patched)]
    for rel, path in zip(sorted(patched), paths, strict=True):
        write_inside(checkout_dir, path, patched[rel])
    _git(checkout_dir, "add", "--", *paths)
    if _git(checkout_dir, "status", "--porcelain", "--", *paths):
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
        _git(checkout_dir, "push", "--quiet", "--force-with-lease", "origin", "--", branch)
    return branch
