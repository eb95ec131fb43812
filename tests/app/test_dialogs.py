"""Pilot tests of the dialogs on their own (no relay needed): the file picker."""

from __future__ import annotations

from pathlib import Path

from textual.app import App

from app_helpers import wait_until
from peerchat.dialogs import FilePickerDialog
from peerchat.dialogs.file_picker import PickerTree


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
        await pilot.press(".")
        await wait_until(lambda: len(tree.root.children) == 3, pilot, what="the hidden entries")
        assert sorted(names(tree)) == [".cache", ".secret", "notes.txt"]
        await pilot.press(".")
        await wait_until(lambda: names(tree) == ["notes.txt"], pilot, what="the hidden entries gone again")
        await pilot.press("down", "enter")
        await wait_until(lambda: app.picked, pilot, what="the picked file")
        assert app.picked == [tmp_path / "notes.txt"]
