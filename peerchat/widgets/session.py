"""A chat session with one device: its status line, the conversation, its transfers and the message input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, RichLog, Static

from core.events import CLOSED, DATA
from core.peer import PeerConnection

from ..backend import EventTap
from ..messages import ActionFailed
from ..models import CHAT_HELP, CloseSession, LinkStatus, SendFiles, SendText, ShowHelp, parse_chat_input
from .transfers import TransferList


class SessionView(Vertical):
    """Everything about one connection. Core's events arrive through an :class:`EventTap` as messages."""

    class CoreEvent(Message):
        def __init__(self, name: str, payload: Any) -> None:
            super().__init__()
            self.name = name
            self.payload = payload

    class CloseRequested(Message):
        """The person asked to end this session (``/close``)."""

        def __init__(self, view: SessionView) -> None:
            super().__init__()
            self.view = view

    class FilesRequested(Message):
        """The person asked to send files (``/send PATH ...``)."""

        def __init__(self, view: SessionView, paths: tuple[Any, ...]) -> None:
            super().__init__()
            self.view = view
            self.paths = paths

    def __init__(
        self,
        connection: PeerConnection,
        tap: EventTap,
        *,
        clock: Callable[[], float] = time.time,
        show_latency: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(classes="session", **kwargs)
        self.connection = connection
        self.tap = tap
        self.status = LinkStatus(transport=connection.transport, rtt=connection.rtt)
        self._clock = clock
        self._show_latency = show_latency
        self._outbox: asyncio.Queue[str] = asyncio.Queue()

    @property
    def peer_label(self) -> str:
        return self.connection.peer.label

    @property
    def closed(self) -> bool:
        return self.status.closed is not None

    def compose(self) -> ComposeResult:
        yield Static(self.status.render(latency=self._show_latency), classes="status")
        yield RichLog(wrap=True, markup=False, auto_scroll=True, classes="chat")
        yield TransferList(classes="transfers")
        yield Input(placeholder=f"Message {self.peer_label}   (/send PATH, /help)", classes="message")

    def on_mount(self) -> None:
        self.system(f"Session with {self.peer_label} ({self.connection.peer.id}) open.")
        self._run_outbox()
        self.tap.attach(lambda name, payload: self.post_message(self.CoreEvent(name, payload)))

    def focus_input(self) -> None:
        self.query_one(Input).focus()

    # --- the conversation ------------------------------------------------------------------------------------

    def _line(self, who: str, style: str, text: str) -> None:
        stamp = time.strftime("%H:%M", time.localtime(self._clock()))
        self.query_one(RichLog).write(Text.assemble((stamp, "dim"), "  ", (who, style), "  ", text))

    def system(self, text: str, style: str = "dim italic") -> None:
        self.query_one(RichLog).write(Text(text, style=style))

    def refresh_status(self) -> None:
        self.query_one(".status", Static).update(self.status.render(latency=self._show_latency))
        self.set_class(self.status.transport == "webrtc", "webrtc")
        self.set_class(bool(self.status.warnings), "warning")

    def on_session_view_core_event(self, event: CoreEvent) -> None:
        event.stop()
        if event.name == DATA:
            self._line(self.peer_label, "bold cyan", event.payload.data)
            return
        notice = self.status.apply(event.payload)
        self.refresh_status()
        if notice is not None:
            self.system(notice.text, "italic yellow" if notice.severity != "information" else "dim italic")
            self.notify(notice.text, title=self.peer_label, severity=notice.severity)
        if event.name == CLOSED:
            self.add_class("closed")
            message = self.query_one(Input)
            message.disabled = True
            message.placeholder = "Session closed. Ctrl+W closes this tab; Enter on the device reconnects."

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            command = parse_chat_input(event.value)
        except ValueError as exc:
            self.notify(str(exc), severity="warning")
            return
        event.input.clear()
        match command:
            case SendText(text=text):
                self._line("you", "bold green", text)
                self._outbox.put_nowait(text)
            case SendFiles(paths=paths):
                self.post_message(self.FilesRequested(self, paths))
            case CloseSession():
                self.post_message(self.CloseRequested(self))
            case ShowHelp():
                self.system(CHAT_HELP)

    @work(group="outbox", exclusive=True, exit_on_error=False)
    async def _run_outbox(self) -> None:
        """Send typed messages one at a time, in order, so a slow send never reorders or drops the next."""
        while True:
            text = await self._outbox.get()
            try:
                await self.connection.send(text)
            except Exception as exc:  # every failure is shown; the session stays usable
                preview = text if len(text) <= 40 else text[:39] + "…"
                self.system(f"✗ not delivered: {preview}", "italic red")
                self.post_message(ActionFailed(f"Sending to {self.peer_label}", exc))
