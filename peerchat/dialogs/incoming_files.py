"""The accept/decline dialog shown when the other device offers files."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from ..models import format_bytes

MAX_LISTED = 6


class IncomingFilesDialog(ModalScreen[bool]):
    """Lists the offered files (``(path, size)`` pairs) and where they will go; dismisses True to accept."""

    BINDINGS = [
        Binding("a", "answer(True)", "Accept", show=True),
        Binding("d,escape", "answer(False)", "Decline", show=True),
    ]

    def __init__(self, label: str, files: list[tuple[str, int]], download_dir: Path) -> None:
        super().__init__(classes="dialog")
        self.label = label
        self.files = files
        self.download_dir = download_dir

    def compose(self) -> ComposeResult:
        total = sum(size for _, size in self.files)
        with Vertical(classes="dialog-box"):
            yield Label("Incoming files", classes="dialog-title")
            yield Label(Text.assemble((self.label, "bold"), f" offers {len(self.files)} file(s), {format_bytes(total)}:"))
            for path, size in self.files[:MAX_LISTED]:
                yield Label(Text.assemble("  ", path, (f"  {format_bytes(size)}", "dim")), classes="offered-file")
            if len(self.files) > MAX_LISTED:
                yield Label(f"  … and {len(self.files) - MAX_LISTED} more", classes="dialog-hint")
            yield Label(f"Saved to {self.download_dir}", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Accept (a)", variant="success", id="accept")
                yield Button("Decline (d)", variant="error", id="decline")

    def on_mount(self) -> None:
        self.query_one("#accept", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "accept")

    def action_answer(self, accept: bool) -> None:
        self.dismiss(accept)
