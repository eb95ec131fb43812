"""File transfers of a session: one row per file with a progress bar, speed, time left and its outcome."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from ..models import format_bytes, format_duration, format_rate, shown


class TransferRow(Vertical):
    """One transfer going one way: ``↑ photo.jpg        1.2 MiB of 3.0 MiB · 1.2 MiB/s · 2 s left`` over its bar."""

    def __init__(self, key: str, name: str, total: int, *, outgoing: bool) -> None:
        super().__init__(classes="transfer")
        self.key = key
        self.file_name = name
        self.total = total
        self.outgoing = outgoing
        self.finished = False

    def compose(self) -> ComposeResult:
        arrow = "↑" if self.outgoing else "↓"
        with Horizontal(classes="transfer-head"):
            yield Label(Text.assemble((arrow, "bold"), " ", shown(self.file_name)), classes="transfer-name")
            yield Label(f"{format_bytes(self.total)} · waiting", classes="transfer-stats")
        yield ProgressBar(total=max(self.total, 1), show_eta=False, classes="transfer-bar")

    def progress(self, done: int, rate: float | None, eta: float | None) -> None:
        if self.finished:
            return
        self.query_one(ProgressBar).update(progress=done if self.total else 1)
        stats = f"{format_bytes(done)} of {format_bytes(self.total)} · {format_rate(rate)} · {format_duration(eta)} left"
        self.query_one(".transfer-stats", Label).update(stats)

    def finish(self, text: str, *, ok: bool) -> None:
        self.finished = True
        if ok:
            self.query_one(ProgressBar).update(progress=max(self.total, 1))
        self.set_class(ok, "done")
        self.set_class(not ok, "failed")
        self.query_one(".transfer-stats", Label).update(Text(shown(text), style="green" if ok else "red"))


class TransferList(Vertical):
    """The session's transfers, newest last; hidden while there are none."""

    def row(self, key: str) -> TransferRow | None:
        for row in self.query(TransferRow):
            if row.key == key:
                return row
        return None

    def add(self, key: str, name: str, size: int, *, outgoing: bool) -> TransferRow:
        row = TransferRow(key, name, size, outgoing=outgoing)
        self.mount(row)
        self.add_class("has-transfers")
        return row

    def active(self) -> list[TransferRow]:
        return [row for row in self.query(TransferRow) if not row.finished]
