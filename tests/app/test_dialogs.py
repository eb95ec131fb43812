"""Pilot tests of the dialogs on their own (no relay needed): the file picker."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import Input

from app_helpers import wait_until
from peerchat.dialogs import FilePickerDialog
from peerchat.dialogs.file_picker import PickerTree, split_typed


class PickerApp(App[None]):
    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start
        self.picked: list[Path | None] = []

    def on_mount(self) -> None:
        self.push_screen(FilePickerDialog(self.start), self.picked.append)


def names(tree: PickerTree) -> list[str]:
    return [str(node.label) for node in tree.root.children]


async def test_the_file_picker_hides_dot_files_until_asked_and_picks_a_file(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".secret").write_text("x")
    (tmp_path / "notes.txt").write_text("hello")
    app = PickerApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        tree = await wait_until(lambda: isinstance(app.screen, FilePickerDialog) and app.screen.query_one(PickerTree),
                                pilot, what="the picker")
        await wait_until(lambda: tree.root.children, pilot, what="the folder's entries")
        assert names(tree) == ["notes.txt"]
        await pilot.press("tab")  # from the typed path to the tree
        await pilot.press(".")
        await wait_until(lambda: len(tree.root.children) == 3, pilot, what="the hidden entries")
        assert sorted(names(tree)) == [".cache", ".secret", "notes.txt"]
        await pilot.press(".")
        await wait_until(lambda: names(tree) == ["notes.txt"], pilot, what="the hidden entries gone again")
        await pilot.press("down", "enter")
        await wait_until(lambda: app.picked, pilot, what="the picked file")
        assert app.picked == [tmp_path / "notes.txt"]


async def test_a_typed_path_filters_as_you_type_and_picks_the_file(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("report.pdf", "Recipe.txt", "notes.txt"):
        (docs / name).write_text(name)
    (tmp_path / "elsewhere.txt").write_text("x")
    app = PickerApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await wait_until(lambda: isinstance(app.screen, FilePickerDialog) and app.screen, pilot,
                                  what="the picker")
        tree = dialog.query_one(PickerTree)
        await wait_until(lambda: tree.root.children, pilot, what="the folder's entries")
        assert sorted(names(tree)) == ["docs", "elsewhere.txt"]
        # A folder typed with its slash: the tree shows it; a name after it filters, case-insensitively.
        dialog.query_one(Input).value = f"{docs}/"
        await wait_until(lambda: sorted(names(tree)) == ["Recipe.txt", "notes.txt", "report.pdf"], pilot,
                         what="the typed folder's entries")
        await pilot.press("r", "e")
        await wait_until(lambda: sorted(names(tree)) == ["Recipe.txt", "report.pdf"], pilot, what="the filter")
        await pilot.press("p")
        await wait_until(lambda: names(tree) == ["report.pdf"], pilot, what="one match")
        await pilot.press(*"ort.pdf", "enter")
        await wait_until(lambda: app.picked, pilot, what="the picked file")
        assert app.picked == [docs / "report.pdf"]


async def test_a_typed_path_that_does_not_exist_is_said_and_kept(tmp_path):
    app = PickerApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await wait_until(lambda: isinstance(app.screen, FilePickerDialog) and app.screen, pilot,
                                  what="the picker")
        await pilot.press(*"nope.txt", "enter")
        await pilot.pause()
        assert app.picked == [] and app.screen is dialog
        assert dialog.query_one(Input).value == "nope.txt"
        assert any("nope.txt does not exist" in n.message for n in app._notifications)
        await pilot.press("escape")
        await wait_until(lambda: app.picked == [None], pilot, what="the picker to cancel")


def test_split_typed(tmp_path):
    (tmp_path / "a").mkdir()
    assert split_typed("", tmp_path) == (tmp_path, "")
    assert split_typed("no", tmp_path) == (tmp_path, "no")
    assert split_typed("a/", tmp_path) == (tmp_path / "a", "")
    assert split_typed(f"{tmp_path}/a/x", tmp_path / "a") == (tmp_path / "a", "x")
    assert split_typed("/does/not/exist/x", tmp_path) == (tmp_path, "x")
    assert split_typed("missing/", tmp_path) == (tmp_path, "")
