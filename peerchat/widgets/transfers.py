"""File transfers of a session: one row per file with a progress bar, speed, time left and its outcome."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from ..models import format_bytes, format_duration, format_rate, shown


class TransferRow(Vertical):
    """One transfer going one way: ``↑ photo.jpg        1.2 MiB of 3.0 MiB · 1.2 MiB/s · 2 s left`` over its bar."""

    def __init__(self, key: str, name: str, total: int, *, outgoing: bool, preparing: bool = False) -> None:
        super().__init__(classes="transfer")
        self.key = key
        self.file_name = name
        self.total = total
        self.outgoing = outgoing
        self.preparing = preparing  # still looking at the files before the offer: the bar is indeterminate
        self.finished = False
        self.worker: Any = None  # the task preparing the offer (cancelling it cancels the transfer)
        self.source: str | None = None  # the paths this device sent

    def compose(self) -> ComposeResult:
        arrow = "↑" if self.outgoing else "↓"
        with Horizontal(classes="transfer-head"):
            yield Label(Text.assemble((arrow, "bold"), " ", shown(self.file_name)), classes="transfer-name")
            stats = "preparing the offer… Ctrl+X cancels" if self.preparing else \
                f"{format_bytes(self.total)} · waiting"
            yield Label(stats, classes="transfer-stats")
        yield ProgressBar(total=None if self.preparing else max(self.total, 1), show_eta=False,
                          classes="transfer-bar")

    def preparing_progress(self, done: int, total: int) -> None:
        """How much of the files is looked at before the offer (each file's size, time and first and last 64 KiB:
        quick, but thousands of files take a moment). Nothing is hashed first: that happens while they are sent."""
        if self.finished or not self.preparing:
            return
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)
        percent = 100 * done / total if total else 100.0
        self.query_one(".transfer-stats", Label).update(
            f"preparing the offer: {percent:.0f}% of {format_bytes(total)} · Ctrl+X cancels")

    def ready(self, key: str, name: str, total: int) -> None:
        """The files are offered: this row is now transfer ``key`` of ``total`` bytes."""
        self.key, self.file_name, self.total, self.preparing, self.worker = key, name, total, False, None
        arrow = "↑" if self.outgoing else "↓"
        self.query_one(".transfer-name", Label).update(Text.assemble((arrow, "bold"), " ", shown(name)))
        self.query_one(".transfer-stats", Label).update(f"{format_bytes(total)} · waiting for the other device")
        self.query_one(ProgressBar).update(total=max(total, 1), progress=0)

    def progress(self, done: int, rate: float | None, eta: float | None) -> None:
        if self.finished:
            return
        self.query_one(ProgressBar).update(progress=done if self.total else 1)
        if self.total and done >= self.total:
            # Every byte is there; the receiver checks the SHA-256 (after a resume it may still be hashing the part
            # it had, which takes a moment for a large one).
            stats = (f"{format_bytes(self.total)} sent · the other device is checking it" if self.outgoing else
                     f"{format_bytes(self.total)} here · checking it")
        else:
            stats = (f"{format_bytes(done)} of {format_bytes(self.total)} · {format_rate(rate)} · "
                     f"{format_duration(eta)} left")
        self.query_one(".transfer-stats", Label).update(stats)

    def finish(self, text: str, *, ok: bool) -> None:
        self.finished = True
        if ok:
            self.query_one(ProgressBar).update(total=max(self.total, 1), progress=max(self.total, 1))
        elif self.preparing:
            self.query_one(ProgressBar).update(total=1, progress=0)
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

    def add(self, key: str, name: str, size: int, *, outgoing: bool, preparing: bool = False) -> TransferRow:
        row = TransferRow(key, name, size, outgoing=outgoing, preparing=preparing)
        self.mount(row)
        self.add_class("has-transfers")
        return row

    def active(self) -> list[TransferRow]:
        return [row for row in self.query(TransferRow) if not row.finished]

    async def drop(self, row: TransferRow) -> None:
        """Take ``row`` out of the list (hidden again once empty)."""
        if row.parent is self:
            await row.remove()
        self.set_class(bool(self.query(TransferRow)), "has-transfers")
