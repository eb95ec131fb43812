"""The main screen: the device list on the left, one tab per open session on the right."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.content import Content
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Label, Static, TabbedContent, TabPane

from core import PeerInfo

from ..backend import SessionLink
from ..history import AsyncHistory
from ..models import DeviceRow
from ..widgets import DeviceList, SessionView

PLACEHOLDER = (
    "No session open.\n\n"
    "Choose a device on the left and press [b]Enter[/b].\n"
    "Devices that open a session with this one are offered to you here.\n\n"
    "[dim]Ctrl+P: all commands · Ctrl+Q: quit[/dim]"
)


class MainScreen(Screen[None]):
    """Devices and sessions. The app feeds it rows and connections; it owns their layout and key bindings."""

    # Priority bindings: they work while the message input has focus (they replace its ctrl+d/w/x editing keys).
    BINDINGS = [
        Binding("ctrl+d", "focus_devices", "Devices", priority=True),
        Binding("ctrl+t", "next_session", "Next session", priority=True),
        Binding("ctrl+f", "app.send_file", "Send file", priority=True),
        Binding("ctrl+x", "app.cancel_transfer", "Cancel transfer", priority=True),
        Binding("ctrl+w", "app.close_session", "Close session", priority=True),
    ]

    # Below 110 columns the sidebar drops the device ids, so that the chat keeps most of the width.
    NARROW_BELOW = 110
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]

    class Ready(Message):
        """The screen is composed: the app may fill it."""

    def __init__(self, history: AsyncHistory, *, clock: Callable[[], float] = time.time, show_latency: bool = True,
                 webrtc: bool = True) -> None:
        super().__init__()
        self.history = history
        self._clock = clock
        self._show_latency = show_latency
        self._webrtc = webrtc
        self._pane_count = 0
        self._relay_line = ("Connecting to the relay…", True)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Label("Devices", classes="pane-title")
                yield DeviceList(clock=self._clock, id="devices")
                yield Static(self._relay_line[0], id="relay", classes="" if self._relay_line[1] else "error")
            with Vertical(id="main"):
                yield Static(PLACEHOLDER, id="placeholder")
                yield TabbedContent(id="sessions")
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one(DeviceList).compact = event.size.width < self.NARROW_BELOW

    def on_mount(self) -> None:
        self.query_one(DeviceList).focus()
        self._update_placeholder()
        self.post_message(self.Ready())

    # --- what the app calls ----------------------------------------------------------------------------------

    def show_devices(self, rows: list[DeviceRow] | None = None) -> None:
        """Show ``rows`` (None: the same rows again, with the current sessions marked)."""
        devices = self.query_one(DeviceList)
        devices.connected = {view.peer.id for view in self.sessions() if not view.closed}
        devices.show_rows(devices.device_rows if rows is None else rows)

    def show_relay(self, text: str, *, ok: bool) -> None:
        """Show the relay line; kept for when the screen is composed, if it is not (yet, or any more: a relay event
        can arrive while the app shuts down)."""
        self._relay_line = (text, ok)
        try:
            relay = self.query_one("#relay", Static)
        except NoMatches:
            return
        relay.update(text)
        relay.set_class(not ok, "error")

    def sessions(self) -> list[SessionView]:
        return list(self.query(SessionView))

    def open_session_for(self, peer_id: str) -> SessionView | None:
        """The tab with an open connection to ``peer_id``, or None."""
        view = self.view_for(peer_id)
        return view if view is not None and not view.closed else None

    def view_for(self, peer_id: str) -> SessionView | None:
        """The tab of the conversation with ``peer_id`` (connected or not), or None."""
        for view in self.sessions():
            if view.peer.id == peer_id:
                return view
        return None

    @property
    def active_session(self) -> SessionView | None:
        pane = self.query_one(TabbedContent).active_pane
        if pane is None:
            return None
        views = list(pane.query(SessionView))
        return views[0] if views else None

    async def add_session(self, link: SessionLink, *, label: str | None = None) -> SessionView:
        """Show ``link`` in the tab of its device's conversation (opened if needed) and make that tab active."""
        view = self.view_for(link.connection.peer.id)
        if view is None:
            view = await self.open_conversation(link.connection.peer, link=link, label=label)
        elif view.loaded:
            view.attach(link)
        else:
            view._first_link = link
        self.activate(view)
        self.show_devices()
        return view

    async def open_conversation(self, peer: PeerInfo, *, link: SessionLink | None = None, label: str | None = None,
                                activate: bool = True) -> SessionView:
        """The tab of the conversation with ``peer``, opened (showing its history) if it is not open yet."""
        view = self.view_for(peer.id)
        if view is None:
            self._pane_count += 1
            view = SessionView(peer, self.history, link, clock=self._clock, show_latency=self._show_latency,
                               webrtc=self._webrtc, label=label)
            pane = TabPane(Content(view.peer_label), view, id=f"session-{self._pane_count}")  # never markup
            await self.query_one(TabbedContent).add_pane(pane)
            self._update_placeholder()
        if activate:
            self.activate(view)
        return view

    def activate(self, view: SessionView) -> None:
        pane = view.parent
        if isinstance(pane, TabPane) and pane.id:
            self.query_one(TabbedContent).active = pane.id
        view.focus_input()

    async def remove_session(self, view: SessionView) -> None:
        pane = view.parent
        if view.link is not None:
            view.link.tap.close()
        if isinstance(pane, TabPane) and pane.id:
            await self.query_one(TabbedContent).remove_pane(pane.id)
        self._update_placeholder()
        self.show_devices()
        if not self.sessions():
            self.query_one(DeviceList).focus()
        elif (active := self.active_session) is not None:
            active.focus_input()

    def _update_placeholder(self) -> None:
        has_sessions = bool(self.sessions())
        self.query_one("#placeholder").display = not has_sessions
        self.query_one(TabbedContent).display = has_sessions

    # --- actions ---------------------------------------------------------------------------------------------

    def action_focus_devices(self) -> None:
        self.query_one(DeviceList).focus()

    def action_next_session(self) -> None:
        views = self.sessions()
        if not views:
            self.notify("No session is open. Choose a device and press Enter.", severity="warning")
            return
        active = self.active_session
        index = views.index(active) if active in views else -1
        self.activate(views[(index + 1) % len(views)])

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        views = list(event.pane.query(SessionView))
        if views:
            views[0].focus_input()
            self._mark(views[0], unread=False)

    def on_session_view_connection_changed(self, event: SessionView.ConnectionChanged) -> None:
        self.show_devices()

    def on_session_view_activity(self, event: SessionView.Activity) -> None:
        if event.view is not self.active_session:
            self._mark(event.view, unread=True)

    def _mark(self, view: SessionView, *, unread: bool) -> None:
        """Show a dot on the tab of a session with messages not seen yet."""
        pane = view.parent
        if isinstance(pane, TabPane) and pane.id:
            tab = self.query_one(TabbedContent).get_tab(pane.id)
            tab.label = Content(f"{view.peer_label} ●" if unread else view.peer_label)
            tab.set_class(unread, "unread")
