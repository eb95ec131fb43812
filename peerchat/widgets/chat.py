"""The conversation of one session: history entries with their delivery marks, and the session's own notes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import RichLog

from ..history import Entry
from ..models import entry_parts, shown


@dataclass(frozen=True)
class Note:
    """A line of the session itself ("Session with desktop open."), not kept in the history."""

    text: str
    style: str = "dim italic"


class ChatLog(RichLog):
    """A RichLog of entries and notes that can be redrawn: a delivery mark changes in place, and older entries go
    in at the top. Scrolling to the top asks for older entries (:class:`ChatLog.ReachedTop`)."""

    class ReachedTop(Message):
        """The person scrolled to the top: the session loads the page of entries before the first one."""

    def __init__(self, *, me: str, clock: Callable[[], float] = time.time, **kwargs: object) -> None:
        super().__init__(wrap=True, markup=False, auto_scroll=True, min_width=20, max_lines=5000,
                         **kwargs)  # type: ignore[arg-type]
        self._me = me
        self._clock = clock
        self.items: list[Entry | Note] = []

    @property
    def first_entry_id(self) -> int | None:
        for item in self.items:
            if isinstance(item, Entry):
                return item.id
        return None

    def render_item(self, item: Entry | Note) -> Text:
        if isinstance(item, Note):
            return Text(shown(item.text, keep_newlines=True), style=item.style)
        return Text.assemble(*entry_parts(item, self._me, self._clock()))

    def add(self, item: Entry | Note) -> None:
        self.items.append(item)
        self.write(self.render_item(item))

    def replace(self, entry: Entry) -> None:
        """Show ``entry`` (same id, a new status) where it was; redraws the log."""
        for index, item in enumerate(self.items):
            if isinstance(item, Entry) and item.id == entry.id:
                self.items[index] = entry
                self.redraw()
                return

    def prepend(self, entries: list[Entry]) -> None:
        """Put older ``entries`` above everything shown, keeping the view on what was at the top."""
        if not entries:
            return
        self.items[:0] = entries
        self.redraw(keep_end=False)
        lines = sum(len(self.render_item(e).wrap(self.app.console, max(self.scrollable_content_region.width, 20)))
                    for e in entries)
        self.scroll_to(y=lines, animate=False)

    def redraw(self, *, keep_end: bool | None = None) -> None:
        at_end = self.is_vertical_scroll_end if keep_end is None else keep_end
        y = self.scroll_y
        self.clear()
        self.auto_scroll = at_end
        for item in self.items:
            self.write(self.render_item(item))
        self.auto_scroll = True
        if not at_end:
            self.scroll_to(y=y, animate=False)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value == 0 and old_value > 0:
            self.post_message(self.ReachedTop())
