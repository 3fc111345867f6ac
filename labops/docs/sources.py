"""Which doc files doc reconciliation may read or write: regular files inside the docs folder or
repository, never reached through a symlink.

Doc files come from outside (a repository anyone with push access shapes), so a symlink in it
(``notes.md -> /etc/labops/secrets.md``, ``ops -> /root``) would make labops read a file outside
the repository, send its lines to the LLM pass and, with ``docs.write``, rewrite it. Links and
submodules are therefore never followed: they are listed as skipped.

- From a git repository the files come from the commit's tree (``git ls-tree``), not from a work
  tree: :func:`select_tree` picks the Markdown blobs and lists every link and submodule met.
- From folders on disk (``docs.paths`` without ``docs.git``): :func:`collect_files` walks each
  configured folder without following links; :func:`read_regular` opens with ``O_NOFOLLOW``.
  A configured path itself may be a link (the operator chose it); nothing inside it may.
- :func:`write_inside` writes a fix only to a regular file whose every path component inside the
  repository is a real directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from labops.errors import ConfigError

REGULAR_MODES = ("100644", "100755")
SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"
MAX_DOC_BYTES = 2_000_000  # a doc larger than this is not prose anyone maintains by hand


class NotRead(Exception):
    """One doc file refused (not a regular file, too large, not UTF-8): listed as skipped."""


def decode_doc(data: bytes, name: str) -> str:
    """The text of a doc file, refused when too large for a hand-kept doc or not UTF-8."""
    if len(data) > MAX_DOC_BYTES:
        raise NotRead(f"{name}: larger than {MAX_DOC_BYTES} bytes, not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotRead(f"{name}: not UTF-8 text, not read") from None


class TreeEntry(NamedTuple):
    """One line of ``git ls-tree -r``: mode, object id and path from the repository root."""

    mode: str
    oid: str
    path: str


def parse_ls_tree(output: bytes) -> list[TreeEntry]:
    """Entries of ``git ls-tree -r -z`` (``<mode> <type> <oid>\\t<path>`` NUL-terminated)."""
    entries = []
    for record in output.split(b"\0"):
        if not record:
            continue
        head, _, path = record.partition(b"\t")
        mode, _kind, oid = head.decode().split(" ")
        entries.append(TreeEntry(mode, oid, path.decode("utf-8", errors="surrogateescape")))
    return entries


def repo_path(value: str | Path, key: str) -> PurePosixPath:
    """A path inside the repository (``docs.git.subdir``, a file to fix): relative and without
    ``..``; anything else is refused, it would leave the repository."""
    path = PurePosixPath(str(value).replace(os.sep, "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{key}: {value} is outside the docs repository")
    return path


def select_tree(entries: Iterable[TreeEntry], subdir: str) -> tuple[dict[str, str], list[str]]:
    """The Markdown blobs under ``subdir`` to read (path relative to it -> object id) and what
    was skipped, each with why: every link and submodule met, never followed."""
    entries = list(entries)
    links = {e.path: e.mode for e in entries if e.mode in (SYMLINK_MODE, SUBMODULE_MODE)}
    base = str(repo_path(subdir, "docs.git.subdir"))
    base = "" if base == "." else base

    def skip_note(path: str) -> str:
        what = "symlink, not followed" if links[path] == SYMLINK_MODE else "submodule, not read"
        return f"{path}: {what}"

    parts = PurePosixPath(base).parts if base else ()
    for i in range(1, len(parts) + 1):
        if (prefix := "/".join(parts[:i])) in links:
            raise ConfigError(f"docs.git.subdir: {skip_note(prefix)}")
    files: dict[str, str] = {}
    skipped: list[str] = []
    found = not base
    for e in entries:
        if base and not e.path.startswith(base + "/"):
            continue
        found = True
        name = e.path[len(base) + 1 :] if base else e.path
        if e.path in links:
            skipped.append(skip_note(e.path))
        elif e.mode in REGULAR_MODES and name.endswith(".md"):
            files[name] = e.oid
    if not found:
        raise ConfigError(f"docs.git.subdir: {subdir} is not a folder of the docs repository")
    return files, sorted(skipped)


def collect_files(root: Path, paths: list[Path]) -> tuple[dict[str, Path], list[str]]:
    """Regular Markdown files under the configured ``paths`` (keyed by their path relative to
    ``root`` when inside it), and every link met inside a configured folder, skipped."""
    files: dict[str, Path] = {}
    skipped: list[str] = []

    def key(path: Path) -> str:
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    for configured in paths:
        full = configured if configured.is_absolute() else root / configured
        if not full.exists():
            raise ConfigError(f"docs.paths: {configured} does not exist")
        if not full.is_dir():
            files[key(full)] = full.resolve()
            continue
        top = full.resolve()
        for folder, dirs, names in os.walk(top, followlinks=False):
            here = Path(folder)
            shown = full / here.relative_to(top)
            for name in sorted(dirs):
                if name == ".git" or (here / name).is_symlink():
                    dirs.remove(name)
                    if name != ".git":
                        skipped.append(f"{key(shown / name)}: symlink, not followed")
            for name in sorted(names):
                path = here / name
                if path.is_symlink():
                    skipped.append(f"{key(shown / name)}: symlink, not followed")
                elif name.endswith(".md") and path.is_file() and path.resolve().is_relative_to(top):
                    files[key(shown / name)] = path
    return files, sorted(set(skipped))


def read_regular(path: Path, name: str) -> str:
    """The text of ``path`` (shown as ``name``), refused unless it is a regular file: the last
    component is opened without following a link, so it cannot be swapped for one after the
    walk."""
    try:  # O_NONBLOCK: a FIFO put in place of a doc must not hang the run
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise NotRead(f"{name}: {exc.strerror or exc}, not read") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRead(f"{name}: not a regular file, not read")
    with os.fdopen(fd, "rb") as handle:
        return decode_doc(handle.read(MAX_DOC_BYTES + 1), name)


def write_inside(repo: Path, rel: str, text: str) -> None:
    """Replace the regular file ``rel`` of the work tree ``repo``; refused when any component on
    the way is a link or not what it should be (the fix never leaves the repository)."""
    path = repo_path(rel, "docs fix")
    current = repo
    for part in path.parts[:-1]:
        current = current / part
        if current.is_symlink() or not current.is_dir():
            raise ConfigError(f"docs: not writing {rel}: {part} is not a folder of the repository")
    target = current / path.name
    if target.is_symlink() or not target.is_file():
        raise ConfigError(f"docs: not writing {rel}: not a regular file of the repository")
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))
