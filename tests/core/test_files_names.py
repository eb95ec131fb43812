"""Received names are made safe: a table of hostile names, the no-overwrite suffix, the directory walk."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from core.errors import DiskError, ProtocolError
from core.files.transfers import folder_target, safe_relative_path, unique_target, walk_paths, walk_tree


@pytest.mark.parametrize(
    "offered, safe",
    [
        ("report.pdf", "report.pdf"),
        ("photos/2024/beach.jpg", "photos/2024/beach.jpg"),
        ("/etc/passwd", "etc/passwd"),
        ("../../.ssh/authorized_keys", ".ssh/authorized_keys"),
        ("a/../../b.txt", "a/b.txt"),
        ("./a/./b", "a/b"),
        ("C:\\Windows\\System32\\evil.dll", "C_/Windows/System32/evil.dll"),
        ("\\\\server\\share\\x", "server/share/x"),
        ("bell\x07\x00name\n.txt", "bellname.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("dir/Com1.tar.gz", "dir/_Com1.tar.gz"),
        ("LPT9", "_LPT9"),
        ("COM\u00b9", "_COM\u00b9"),
        ("console.txt", "console.txt"),
        ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
        ("trailing. . ", "trailing"),
        ("..", "unnamed"),
        ("", "unnamed"),
        ("///", "unnamed"),
        ("\x01\x02", "unnamed"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),
    ],
)
def test_hostile_names_are_made_safe(offered: str, safe: str) -> None:
    assert "/".join(safe_relative_path(offered)) == safe


def test_long_names_are_cut_keeping_the_extension() -> None:
    (name,) = safe_relative_path("x" * 1000 + ".tar.gz")
    assert len(name.encode()) <= 200
    assert name.endswith(".gz") and name.startswith("xxx")
    (name,) = safe_relative_path("\u00e9" * 300)  # two bytes each: never cut inside a character
    assert len(name.encode()) <= 200
    name.encode().decode()


def test_too_deep_paths_are_refused() -> None:
    with pytest.raises(ProtocolError, match="deep"):
        safe_relative_path("/".join(["d"] * 100) + "/f")


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("mine")
    (tmp_path / "a (1).txt.part").write_text("someone else's partial")
    taken: set[Path] = set()
    first = unique_target(tmp_path, ("a.txt",), taken)
    assert first == tmp_path / "a (2).txt"
    assert unique_target(tmp_path, ("a.txt",), taken) == tmp_path / "a (3).txt"  # taken by this offer
    assert unique_target(tmp_path, ("sub", "b"), taken) == tmp_path / "sub" / "b"


def test_targets_cannot_escape_through_a_symlinked_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ProtocolError, match="outside"):
        unique_target(downloads, ("link", "x.txt"), set())


def test_walk_paths_lists_files_and_nested_folders_with_relative_names(tmp_path: Path) -> None:
    root = tmp_path / "album"
    (root / "2024" / "summer").mkdir(parents=True)
    (root / "2024" / "summer" / "a.jpg").write_bytes(b"a")
    (root / "2024" / "b.jpg").write_bytes(b"bb")
    (root / "empty").mkdir()
    single = tmp_path / "notes.txt"
    single.write_text("n")
    found = walk_paths([root, single])
    assert [(rel, path) for path, rel in found] == [
        ("album/2024/b.jpg", root / "2024" / "b.jpg"),
        ("album/2024/summer/a.jpg", root / "2024" / "summer" / "a.jpg"),
        ("notes.txt", single),
    ]


def test_walk_paths_reports_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="missing"):
        walk_paths([tmp_path / "missing"])


def test_walk_tree_lists_every_folder_empty_ones_included(tmp_path: Path) -> None:
    root = tmp_path / "album"
    (root / "2024" / "summer").mkdir(parents=True)
    (root / "2024" / "b.jpg").write_bytes(b"bb")
    (root / "empty" / "deeper" / "deepest").mkdir(parents=True)
    tree = walk_tree([root])
    assert tree.files == [(root / "2024" / "b.jpg", "album/2024/b.jpg")]
    assert tree.folders == ["album", "album/2024", "album/2024/summer", "album/empty", "album/empty/deeper",
                            "album/empty/deeper/deepest"]
    assert tree.skipped == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_walk_tree_skips_symlinks_and_special_files_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "real.txt").write_text("r")
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (root / "link.txt").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(root / "sub" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        tree = walk_tree([root])
    finally:
        sock.close()
    assert tree.files == [(root / "real.txt", "tree/real.txt")]
    assert tree.folders == ["tree", "tree/sub"]
    notes = "\n".join(tree.skipped)
    assert len(tree.skipped) == 4
    for name, kind in (("link.txt", "symbolic link"), ("dirlink", "symbolic link"), ("pipe", "named pipe"),
                       ("sock", "socket")):
        assert any(name in note and kind in note for note in tree.skipped), notes


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_a_named_pipe_given_directly_is_refused_clearly(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DiskError, match="named pipe"):
        walk_tree([tmp_path / "pipe"])


def test_a_file_given_through_a_symlink_is_sent_under_the_link_name(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("r")
    (tmp_path / "chosen.txt").symlink_to(tmp_path / "real.txt")
    assert walk_tree([tmp_path / "chosen.txt"]).files == [(tmp_path / "chosen.txt", "chosen.txt")]


@pytest.mark.parametrize(
    "offered, safe",
    [("album/empty", "album/empty"), ("../../up", "up"), ("/abs/dir", "abs/dir"), ("a\\..\\..\\CON", "a/_CON"),
     ("..", "unnamed")],
)
def test_folder_targets_are_sanitised_like_file_names(tmp_path: Path, offered: str, safe: str) -> None:
    assert folder_target(tmp_path, offered) == tmp_path.resolve() / safe


def test_folder_targets_cannot_escape_through_a_symlinked_folder(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ProtocolError, match="outside"):
        folder_target(downloads, "link/new")
