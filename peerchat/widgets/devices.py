"""The device list: this user's devices, online ones first, offline ones with when they were last seen; ⇄ marks
a device with an open session."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from core import PeerInfo

from ..models import DeviceRow, format_ago, shown


TRUST_LABELS = {"verified": "verified", "trusted": "trusted", "new": "new", "key-changed": "CHANGED"}
TRUST_STYLES = {"verified": "green", "trusted": "", "new": "yellow", "key-changed": "bold red"}


class DeviceList(DataTable[Text]):
    """A table of devices; Enter on a row asks to open a session with it (:class:`DeviceList.OpenSession`)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open session", show=True)]

    compact: reactive[bool] = reactive(False, init=False)
    """Leave out the ID column (narrow terminals); the id is still in the command palette and the session."""

    class OpenSession(Message):
        def __init__(self, peer: PeerInfo, online: bool) -> None:
            super().__init__()
            self.peer = peer
            self.online = online

    def __init__(self, *, clock: Callable[[], float], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._clock = clock
        self._rows: dict[str, DeviceRow] = {}
        self.connected: set[str] = set()  # devices with an open session: marked ⇄

    @property
    def device_rows(self) -> list[DeviceRow]:
        return list(self._rows.values())

    def on_mount(self) -> None:
        self._add_columns()
        self.show_rows([])

    def _add_columns(self) -> None:
        # Fixed widths: the table looks the same however rows arrive (also under a dialog, which freezes the
        # screen behind it before an auto width is recomputed).
        self.add_column(" ", key="dot", width=1)
        self.add_column("Device", key="device", width=12)
        if not self.compact:
            self.add_column("ID", key="id", width=13)
        self.add_column("Seen", key="seen", width=10)
        self.add_column("Trust", key="trust", width=8)

    def watch_compact(self) -> None:
        rows = list(self._rows.values())
        self.clear(columns=True)
        self._add_columns()
        self.show_rows(rows)

    def show_rows(self, rows: list[DeviceRow]) -> None:
        """Replace the rows, keeping the cursor on the same device."""
        selected = self.selected_peer
        self.clear()
        self._rows = {row.peer.id: row for row in rows}
        now = self._clock()
        for row in rows:
            if row.peer.id in self.connected:
                dot = Text("⇄", style="bold green")
            else:
                dot = Text("●", style="bold green") if row.online else Text("○", style="dim")
            name = Text(shown(row.peer.label), style="bold" if row.online else "dim")
            ident = Text(shown(row.peer.id), style="dim")
            if row.online:
                seen = Text("online", style="green")
            elif row.last_seen is not None:
                seen = Text(format_ago(now - row.last_seen), style="dim")
            else:
                seen = Text("offline", style="dim")
            trust = Text(TRUST_LABELS.get(row.trust or "", ""), style=TRUST_STYLES.get(row.trust or "", "dim"))
            cells = (dot, name, seen, trust) if self.compact else (dot, name, ident, seen, trust)
            self.add_row(*cells, key=row.peer.id)
        if selected is not None and selected.id in self._rows:
            self.move_cursor(row=self.get_row_index(selected.id))

    @property
    def selected_peer(self) -> PeerInfo | None:
        if not self._rows or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
        row = self._rows.get(key or "")
        return row.peer if row else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self._rows.get(event.row_key.value or "")
        if row is not None:
            self.post_message(self.OpenSession(row.peer, row.online))
