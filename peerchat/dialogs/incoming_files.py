"""The accept/decline dialog shown when the other device offers files."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Label

from ..models import format_bytes, shown
from .answer import AnswerDialog

MAX_LISTED = 6


class IncomingFilesDialog(AnswerDialog):
    """Lists the offered files (``(path, size)`` pairs) and where they will go; dismisses True to accept."""

    HEADING = "Incoming files"

    def __init__(self, label: str, files: list[tuple[str, int]], download_dir: Path) -> None:
        super().__init__()
        self.label = label
        self.files = files
        self.download_dir = download_dir

    def body(self) -> ComposeResult:
        total = sum(size for _, size in self.files)
        yield Label(Text.assemble((shown(self.label), "bold"), f" offers {len(self.files)} file(s), {format_bytes(total)}:"))
        for path, size in self.files[:MAX_LISTED]:
            yield Label(Text.assemble("  ", shown(path), (f"  {format_bytes(size)}", "dim")), classes="offered-file")
        if len(self.files) > MAX_LISTED:
            yield Label(f"  … and {len(self.files) - MAX_LISTED} more", classes="dialog-hint")
        yield Label(f"Saved to {self.download_dir}", classes="dialog-hint")
