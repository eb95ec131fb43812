"""A file picker for choosing a file to send: a path you can type (it filters as you type) over a directory tree."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label

HINT = "Type a path or part of a name · Enter: send · Tab: the tree · .: {hidden} hidden files · Esc: cancel"


class PickerTree(DirectoryTree):
    """A directory tree that leaves out hidden files and folders (names starting with a dot) unless asked, and
    shows only names containing ``name_filter`` (case-insensitive) when one is typed."""

    show_hidden: reactive[bool] = reactive(False, init=False)
    name_filter: reactive[str] = reactive("", init=False)

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        wanted = self.name_filter.casefold()
        return [path for path in paths
                if (self.show_hidden or not path.name.startswith(".") or wanted.startswith("."))
                and wanted in path.name.casefold()]

    def watch_show_hidden(self) -> None:
        self.reload()

    def watch_name_filter(self) -> None:
        self.reload()


def split_typed(text: str, folder: Path) -> tuple[Path, str]:
    """What a typed path means for the tree: ``(folder to show, name filter)``.

    ``~/Documents/rep`` shows ``~/Documents`` filtered by ``rep``; ``notes`` filters the current ``folder``; a path
    ending in ``/`` shows that folder. A folder that does not exist leaves the tree where it is, filtered by the
    whole last part.
    """
    if not text:
        return folder, ""
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = folder / path
    if text.endswith(("/", "\\")):
        return (path, "") if path.is_dir() else (folder, "")
    parent = path.parent
    return (parent, path.name) if parent.is_dir() else (folder, path.name)


class FilePickerDialog(ModalScreen[Path | None]):
    """Pick a file from ``start`` by typing its path or browsing; dismisses with its path, or None on Escape."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", show=True),
        Binding("backspace", "parent", "Parent folder", show=False),
        Binding(".", "toggle_hidden", "Hidden files", show=False),
    ]

    def __init__(self, start: Path, *, title: str = "Send a file") -> None:
        super().__init__(classes="dialog")
        self.start = start
        self.folder = start
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box picker-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(placeholder=f"a path, like ~/notes.txt, or part of a name in {self.start}",
                        classes="picker-input")
            yield Label(str(self.start), classes="picker-path")
            yield PickerTree(self.start, classes="picker-tree")
            yield Label(HINT.format(hidden="show"), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _show_folder(self, folder: Path) -> None:
        if folder != self.folder:
            self.folder = folder
            self.query_one(PickerTree).path = folder
            self.query_one(".picker-path", Label).update(str(folder))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        folder, name = split_typed(event.value, self.folder if event.value else self.start)
        tree = self.query_one(PickerTree)
        self._show_folder(folder)
        tree.name_filter = name

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self.query_one(PickerTree).focus()
            return
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.folder / path
        if path.is_file():
            self.dismiss(path)
        elif path.is_dir():
            event.input.value = str(path).rstrip("/") + "/"
            event.input.cursor_position = len(event.input.value)
        else:
            self.notify(f"{path} does not exist. Type a path to a file, or pick one in the tree (Tab).",
                        severity="warning")

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(Path(event.path))

    def action_parent(self) -> None:
        if isinstance(self.focused, Input):
            return
        parent = Path(self.folder).resolve().parent
        self.query_one(Input).value = ""
        self._show_folder(parent)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Backspace and "." are the input's own keys while it has the focus.
        if action in ("parent", "toggle_hidden") and isinstance(self.focused, Input):
            return False
        return True

    def action_toggle_hidden(self) -> None:
        tree = self.query_one(PickerTree)
        tree.show_hidden = not tree.show_hidden
        self.query_one(".dialog-hint", Label).update(HINT.format(hidden="hide" if tree.show_hidden else "show"))

    def action_cancel(self) -> None:
        self.dismiss(None)
