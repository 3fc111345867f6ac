"""Which doc files are read or written: regular files inside the docs folder or repository only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labops.config.policies.docs import DocsGit, DocsPolicy
from labops.docs.sources import (
    MAX_DOC_BYTES,
    NotRead,
    TreeEntry,
    collect_files,
    decode_doc,
    parse_ls_tree,
    read_regular,
    select_tree,
    write_inside,
)
from labops.errors import ConfigError
from labops.redact import contains_secret, register_secret

TREE = [
    TreeEntry("100644", "a1", "README.md"),
    TreeEntry("100644", "a2", "docs/lab.md"),
    TreeEntry("100755", "a3", "docs/deep/net.md"),
    TreeEntry("100644", "a4", "docs/logo.png"),
    TreeEntry("120000", "a5", "docs/notes.md"),  # -> /etc/labops/notes.md
    TreeEntry("120000", "a6", "docs/ops"),  # -> /root
    TreeEntry("160000", "a7", "docs/vendor"),
    TreeEntry("120000", "a8", "linked"),  # -> docs
]


def test_links_and_submodules_in_the_tree_are_listed_never_read() -> None:
    files, skipped = select_tree(TREE, "docs")
    assert files == {"lab.md": "a2", "deep/net.md": "a3"}
    assert skipped == [
        "docs/notes.md: symlink, not followed",
        "docs/ops: symlink, not followed",
        "docs/vendor: submodule, not read",
    ]
    everything, _ = select_tree(TREE, "")
    assert set(everything) == {"README.md", "docs/lab.md", "docs/deep/net.md"}


@pytest.mark.parametrize(
    ("subdir", "message"),
    [
        ("linked", "linked: symlink, not followed"),
        ("linked/x", "linked: symlink, not followed"),
        ("docs/vendor", "docs/vendor: submodule, not read"),
        ("../outside", "outside the docs repository"),
        ("/etc", "outside the docs repository"),
        ("missing", "not a folder of the docs repository"),
    ],
)
def test_a_subdir_through_a_link_or_outside_is_refused(subdir: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select_tree(TREE, subdir)


def test_ls_tree_output_is_parsed_with_odd_names() -> None:
    raw = b"100644 blob 0a1b\tdocs/a b.md\x00120000 blob 2c3d\tdocs/\xc3\xa9t\xc3\xa9.md\x00"
    assert parse_ls_tree(raw) == [
        TreeEntry("100644", "0a1b", "docs/a b.md"),
        TreeEntry("120000", "2c3d", "docs/été.md"),
    ]


def test_folders_on_disk_are_walked_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("7 Proxmox nodes")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".git").mkdir()
    (docs / ".git" / "x.md").write_text("not a doc")
    (docs / "lab.md").write_text("4 Proxmox nodes")
    (docs / "sub" / "net.md").write_text("pve1 <-> pve2")
    (docs / "notes.md").symlink_to(outside / "secret.md")
    (docs / "sub" / "ops").symlink_to(outside)
    files, skipped = collect_files(tmp_path, [Path("docs")])
    assert sorted(files) == ["docs/lab.md", "docs/sub/net.md"]
    assert skipped == [
        "docs/notes.md: symlink, not followed",
        "docs/sub/ops: symlink, not followed",
    ]
    with pytest.raises(ConfigError, match="does not exist"):
        collect_files(tmp_path, [Path("nowhere")])


def test_a_link_swapped_in_after_the_walk_is_not_read(tmp_path: Path) -> None:
    target = tmp_path / "secret.md"
    target.write_text("private")
    link = tmp_path / "doc.md"
    link.symlink_to(target)
    with pytest.raises(NotRead, match=r"doc\.md: "):
        read_regular(link, "doc.md")
    with pytest.raises(NotRead, match="not a regular file"):
        read_regular(tmp_path, "folder")


def test_oversized_and_binary_docs_are_not_read() -> None:
    assert decode_doc("één".encode(), "a.md") == "één"
    with pytest.raises(NotRead, match="not UTF-8"):
        decode_doc(b"\xff\xfe", "a.md")
    with pytest.raises(NotRead, match="larger than"):
        decode_doc(b"x" * (MAX_DOC_BYTES + 1), "a.md")


def test_a_fix_is_written_only_to_a_regular_file_inside_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "lab.md").write_text("old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "lab.md").write_text("theirs")
    (repo / "docs" / "notes.md").symlink_to(outside / "lab.md")
    (repo / "linked").symlink_to(outside)

    write_inside(repo, "docs/lab.md", "new")
    assert (repo / "docs" / "lab.md").read_text() == "new"
    for rel in ("docs/notes.md", "linked/lab.md", "../outside/lab.md", "docs/missing.md"):
        with pytest.raises(ConfigError):
            write_inside(repo, rel, "pwned")
    assert (outside / "lab.md").read_text() == "theirs"
    assert os.listdir(outside) == ["lab.md"]


@pytest.mark.parametrize("branch", ["-x", "--upload-pack=sh", "a..b", "a b", "a:b", "a~1", ""])
def test_branch_names_that_git_or_a_command_line_would_misread_are_refused(branch: str) -> None:
    with pytest.raises(ValueError, match="not a usable git branch name"):
        DocsGit(url="https://git.lab.internal/docs.git", branch=branch)
    with pytest.raises(ValueError, match="not a usable git branch name"):
        DocsGit(url="https://git.lab.internal/docs.git", branch_prefix=branch)


def test_paths_on_disk_and_a_git_repository_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        DocsPolicy.model_validate({"paths": ["docs"], "git": {"url": "/srv/docs.git"}})


def test_registered_secrets_are_found_in_text() -> None:
    register_secret("s3cr3t-token-for-docs-test")
    assert contains_secret("the token is s3cr3t-token-for-docs-test.")
    assert not contains_secret("the token is s3cr3t-token-for-")
