"""Pilot tests of a transfer's row on its own (no relay needed): what it says while bytes move, once every byte is
there but the file is not verified yet, and at the end."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Label

from peerchat.widgets import TransferRow

MIB = 1024 * 1024


class RowApp(App[None]):
    def __init__(self, outgoing: bool) -> None:
        super().__init__()
        self.outgoing = outgoing

    def compose(self) -> ComposeResult:
        yield TransferRow("t1", "movie.mkv", 48 * MIB, outgoing=self.outgoing)


def stats(app: RowApp) -> str:
    return str(app.query_one(TransferRow).query_one(".transfer-stats", Label).render())


async def test_a_row_says_when_every_byte_is_there_and_the_file_is_being_checked() -> None:
    for outgoing, waiting in ((False, "48.0 MiB here · checking it"),
                              (True, "48.0 MiB sent · the other device is checking it")):
        app = RowApp(outgoing)
        async with app.run_test(size=(100, 6)) as pilot:
            row = app.query_one(TransferRow)
            row.progress(12 * MIB, 6 * MIB, 6.0)
            await pilot.pause()
            assert stats(app) == "12.0 MiB of 48.0 MiB · 6.0 MiB/s · 6 s left"
            row.progress(48 * MIB, 6 * MIB, 0.0)  # all there: no "0 s left" while the SHA-256 is checked
            await pilot.pause()
            assert stats(app) == waiting
            row.finish("saved as movie.mkv", ok=True)
            row.progress(48 * MIB, 6 * MIB, 0.0)  # a late progress event changes nothing once it ended
            await pilot.pause()
            assert stats(app) == "saved as movie.mkv"
