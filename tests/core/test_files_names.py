"""Received names are made safe: a table of hostile names, the no-overwrite suffix, the directory walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import DiskError, ProtocolError
from core.files import safe_relative_path, unique_target, walk_paths


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
