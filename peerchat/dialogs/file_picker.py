"""A file picker (a directory tree in a modal) for choosing a file to send."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Label

HINT = "Enter: send the file · Backspace: parent folder · .: {hidden} hidden files · Esc: cancel"


class PickerTree(DirectoryTree):
    """A directory tree that leaves out hidden files and folders (names starting with a dot) unless asked."""

    show_hidden: reactive[bool] = reactive(False, init=False)

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return paths if self.show_hidden else [path for path in paths if not path.name.startswith(".")]

    def watch_show_hidden(self) -> None:
        self.reload()


class FilePickerDialog(ModalScreen[Path | None]):
    """Browse from ``start`` and pick a file with Enter; dismisses with its path, or None on Escape."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=True),
        Binding("backspace", "parent", "Parent folder", show=True),
        Binding(".", "toggle_hidden", "Hidden files", show=True),
    ]

    def __init__(self, start: Path, *, title: str = "Send a file") -> None:
        super().__init__(classes="dialog")
        self.start = start
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box picker-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(str(self.start), classes="picker-path")
            yield PickerTree(self.start, classes="picker-tree")
            yield Label(HINT.format(hidden="show"), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(PickerTree).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(Path(event.path))

    def action_parent(self) -> None:
        tree = self.query_one(DirectoryTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one(".picker-path", Label).update(str(parent))

    def action_toggle_hidden(self) -> None:
        tree = self.query_one(PickerTree)
        tree.show_hidden = not tree.show_hidden
        self.query_one(".dialog-hint", Label).update(HINT.format(hidden="hide" if tree.show_hidden else "show"))

    def action_cancel(self) -> None:
        self.dismiss(None)
