"""A chat session with one device: its status line, the conversation, its transfers and the message input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.worker import Worker, WorkerState
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, RichLog, Static

from core.events import (
    CLOSED,
    DATA,
    INCOMING_TRANSFER,
    TRANSFER_FAILED,
    TRANSFER_FILE_DONE,
    TRANSFER_FINISHED,
    TRANSFER_PROGRESS,
)

from ..backend import SessionLink, describe_error
from ..messages import ActionFailed
from ..models import (
    CHAT_HELP,
    CloseSession,
    LinkStatus,
    Notice,
    SendFiles,
    SendText,
    ShowHelp,
    format_bytes,
    parse_chat_input,
    shown,
)
from .transfers import TransferList

class SessionView(Vertical):
    """Everything about one connection. Core's events arrive through the link's tap as messages."""

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

    class Activity(Message):
        """Something arrived in this session (the screen marks its tab when it is not the one shown)."""

        def __init__(self, view: SessionView) -> None:
            super().__init__()
            self.view = view

    class FilesOffered(Message):
        """The other device offers files: the app asks the person, then calls ``accept_files``/``decline_files``."""

        def __init__(self, view: SessionView, offer: Any) -> None:
            super().__init__()
            self.view = view
            self.offer = offer

    def __init__(
        self,
        link: SessionLink,
        *,
        clock: Callable[[], float] = time.time,
        show_latency: bool = True,
        webrtc: bool = True,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(classes="session", **kwargs)
        self._label = label
        self.link = link
        self.connection = link.connection
        self.status = LinkStatus(transport=self.connection.transport, route=self.connection.route,
                                 peer_label=label or self.connection.peer.label, rtt=self.connection.rtt,
                                 webrtc_off=not webrtc)
        self._clock = clock
        self._show_latency = show_latency
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._transfers: dict[str, Any] = {}

    @property
    def peer_label(self) -> str:
        """The other device's label, safe to show (:func:`~peerchat.models.shown`; never read it as markup)."""
        return shown(self._label or self.connection.peer.label)

    @property
    def closed(self) -> bool:
        return self.status.closed is not None

    def compose(self) -> ComposeResult:
        yield Static(self.status.render(latency=self._show_latency), classes="status")
        yield RichLog(wrap=True, markup=False, auto_scroll=True, min_width=20, max_lines=5000, classes="chat")
        yield TransferList(classes="transfers")
        yield Input(placeholder=f"Message {self.peer_label}   (/send PATH, /help)", classes="message")

    def on_mount(self) -> None:
        self.system(f"Session with {self.peer_label} ({self.connection.peer.id}) open.")
        self.refresh_status()
        self._run_outbox()
        self.link.tap.attach(lambda name, payload: self.post_message(self.CoreEvent(name, payload)))

    def focus_input(self) -> None:
        self.query_one(Input).focus()

    # --- the conversation ------------------------------------------------------------------------------------

    def _line(self, who: str, style: str, text: str) -> None:
        stamp = time.strftime("%H:%M", time.localtime(self._clock()))
        self.query_one(RichLog).write(Text.assemble((stamp, "dim"), "  ", (shown(who), style), "  ",
                                                    shown(text, keep_newlines=True)))

    def system(self, text: str, style: str = "dim italic") -> None:
        self.query_one(RichLog).write(Text(shown(text, keep_newlines=True), style=style))

    def refresh_status(self) -> None:
        self.query_one(".status", Static).update(self.status.render(latency=self._show_latency))
        self.set_class(self.status.transport == "webrtc", "webrtc")
        self.set_class(self.status.transport == "direct", "direct")
        self.set_class(bool(self.status.warnings), "warning")

    def _tell(self, notice: Notice) -> None:
        self.system(notice.text, "italic yellow" if notice.severity != "information" else "dim italic")
        self.notify(notice.text, title=self.peer_label, severity=notice.severity)

    def on_session_view_core_event(self, event: CoreEvent) -> None:
        event.stop()
        name, payload = event.name, event.payload
        if name == DATA:
            self._line(self.peer_label, "bold cyan", payload.data)
            self.post_message(self.Activity(self))
        elif name == INCOMING_TRANSFER:
            self._on_offer(payload.offer)
        elif name == TRANSFER_PROGRESS:
            self._on_progress(payload)
        elif name == TRANSFER_FILE_DONE:
            if payload.direction == "receive":
                self.system(f"✓ received {payload.path}, saved to {payload.saved_to}", "green")
        elif name == TRANSFER_FINISHED:
            self._on_finished(payload)
        elif name == TRANSFER_FAILED:
            self._on_failed(payload)
        else:
            notice = self.status.apply(payload)
            self.refresh_status()
            if notice is not None:
                self._tell(notice)
            if name == CLOSED:
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
                self.send_files(paths)
            case CloseSession():
                self.post_message(self.CloseRequested(self))
            case ShowHelp():
                self.system(CHAT_HELP)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(ActionFailed(f"{event.worker.name.strip('_').replace('_', ' ').capitalize()}",
                                           event.worker.error))

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

    # --- files -----------------------------------------------------------------------------------------------

    def send_files(self, paths: tuple[Path, ...] | list[Path]) -> None:
        """Offer ``paths`` (files or folders) to the other device; progress shows in the transfer list."""
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            self.notify(f"Not sent: {', '.join(missing)} does not exist. Check the path.", severity="error")
            return
        if self.closed:
            self.notify("This session is closed; press Enter on the device to connect again.", severity="warning")
            return
        names = ", ".join(p.name or str(p) for p in paths)
        self.system(f"Preparing {names} (computing SHA-256)…")
        self._send_files(list(paths))

    @work(group="send-files", exit_on_error=False)
    async def _send_files(self, paths: list[Path]) -> None:
        try:
            transfer = await self.link.transfers.send_files(paths)
        except Exception as exc:
            self.post_message(ActionFailed(f"Sending files to {self.peer_label}", exc))
            return
        self._add_row(transfer, outgoing=True)
        self.system(f"↑ offered {self._describe(transfer)} to {self.peer_label}")

    def _on_offer(self, offer: Any) -> None:
        running = offer.transfer
        if running is not None:
            self._add_row(running, outgoing=False)
            self.system(f"↓ resuming {len(offer.files)} file(s) from {self.peer_label}")
        else:
            self.post_message(self.FilesOffered(self, offer))

    def accept_files(self, offer: Any, download_dir: Path) -> None:
        self._accept_files(offer, download_dir)

    @work(group="accept-files", exit_on_error=False)
    async def _accept_files(self, offer: Any, download_dir: Path) -> None:
        try:
            transfer = await offer.accept(download_dir)
        except Exception as exc:
            self.post_message(ActionFailed(f"Receiving files from {self.peer_label}", exc))
            return
        self._add_row(transfer, outgoing=False)
        self.system(f"↓ receiving {self._describe(transfer)} into {download_dir}")

    def decline_files(self, offer: Any) -> None:
        self._decline_files(offer)

    @work(group="accept-files", exit_on_error=False)
    async def _decline_files(self, offer: Any) -> None:
        try:
            await offer.decline("declined by the user")
        except Exception as exc:
            self.post_message(ActionFailed(f"Declining files from {self.peer_label}", exc))
            return
        self.system(f"Declined {len(offer.files)} file(s) from {self.peer_label}.")

    def cancel_newest_transfer(self) -> bool:
        """Cancel the newest running transfer of this session; False when none is running."""
        rows = self.query_one(TransferList).active()
        if not rows:
            return False
        transfer = self._transfers.get(rows[-1].key)
        if transfer is not None:
            self._cancel(transfer)
        return True

    @work(group="cancel", exit_on_error=False)
    async def _cancel(self, transfer: Any) -> None:
        try:
            await transfer.cancel()
        except Exception as exc:
            self.post_message(ActionFailed("Cancelling the transfer", exc))

    @staticmethod
    def _describe(transfer: Any) -> str:
        files = transfer.files
        name = files[0].path if len(files) == 1 else f"{len(files)} files"
        return f"{name} ({format_bytes(transfer.bytes_total)})"

    def _add_row(self, transfer: Any, *, outgoing: bool) -> None:
        if transfer.id in self._transfers:
            return
        self._transfers[transfer.id] = transfer
        files = transfer.files
        name = files[0].path if len(files) == 1 else f"{len(files)} files"
        row = self.query_one(TransferList).add(transfer.id, name, transfer.bytes_total, outgoing=outgoing)
        if transfer.bytes_done:
            row.progress(transfer.bytes_done, None, None)

    def _on_progress(self, event: Any) -> None:
        row = self.query_one(TransferList).row(event.transfer.id)
        if row is None:
            self._add_row(event.transfer, outgoing=event.direction == "send")
            row = self.query_one(TransferList).row(event.transfer.id)
        if row is not None:
            row.progress(event.bytes_done, event.rate, event.eta)

    def _on_finished(self, event: Any) -> None:
        row = self.query_one(TransferList).row(event.transfer.id)
        verb = "delivered and verified" if event.direction == "send" else "received and verified"
        if row is not None:
            row.finish(f"✓ {verb} · {format_bytes(event.bytes_total)}", ok=True)
        self.system(f"✓ {self._describe(event.transfer)} {verb}", "green")

    def _on_failed(self, event: Any) -> None:
        row = self.query_one(TransferList).row(event.transfer.id)
        text = describe_error("The transfer", event.error)
        if row is not None:
            row.finish(f"✗ {event.error}", ok=False)
        self.system(f"✗ {self._describe(event.transfer)}: {event.error}", "italic red")
        self.notify(text, title=self.peer_label, severity="error", timeout=12)
