"""A file picker (a directory tree in a modal) for choosing a file to send."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Label


class FilePickerDialog(ModalScreen[Path | None]):
    """Browse from ``start`` and pick a file with Enter; dismisses with its path, or None on Escape."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=True),
        Binding("backspace", "parent", "Parent folder", show=True),
    ]

    def __init__(self, start: Path, *, title: str = "Send a file") -> None:
        super().__init__(classes="dialog")
        self.start = start
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box picker-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(str(self.start), classes="picker-path")
            yield DirectoryTree(self.start, classes="picker-tree")
            yield Label("Enter: send the file · Backspace: parent folder · Esc: cancel", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(DirectoryTree).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(Path(event.path))

    def action_parent(self) -> None:
        tree = self.query_one(DirectoryTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent
        self.query_one(".picker-path", Label).update(str(parent))

    def action_cancel(self) -> None:
        self.dismiss(None)
