"""The conversation with one device: its status line, the history, its transfers and the message input.

A view lives as long as its tab, across connections: it shows the history at once (also while the device is
offline), keeps what is typed as *queued* until a connection is attached, and sends the queue in order once one is.
Each attached connection is a :class:`~peerchat.backend.SessionLink`; a later one (a reconnect, or the other device
restarted and connected again) replaces it in the same tab.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from core import ConnectionClosedError, PeerInfo, TransferDeclinedError
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
from ..history import AsyncHistory, Entry
from ..messages import ActionFailed
from ..models import (
    CHAT_HELP,
    CloseSession,
    LinkStatus,
    Notice,
    RetryFailed,
    SendFiles,
    SendText,
    ShowHelp,
    format_bytes,
    missing_paths_error,
    parse_chat_input,
    shown,
)
from .chat import ChatLog, Note
from .transfers import TransferList

PAGE = 50
FINISHED_ROW_LINGERS = 5.0  # seconds a finished transfer stays in the panel (its result stays in the chat)


class SessionView(Vertical):
    """Everything about the conversation with one device. Core's events arrive through the link's tap."""

    BINDINGS = [Binding("ctrl+r", "retry", "Retry failed", show=False)]

    class CoreEvent(Message):
        def __init__(self, link: SessionLink, name: str, payload: Any) -> None:
            super().__init__()
            self.link = link
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

    class ConnectionChanged(Message):
        """A connection was attached to this tab, or closed (the device list marks devices with a session)."""

        def __init__(self, view: SessionView) -> None:
            super().__init__()
            self.view = view

    class WantsConnection(Message):
        """Messages are queued for this device and no connection is open: the app connects once it is online."""

        def __init__(self, view: SessionView) -> None:
            super().__init__()
            self.view = view

    def __init__(
        self,
        peer: PeerInfo,
        history: AsyncHistory,
        link: SessionLink | None = None,
        *,
        clock: Callable[[], float] = time.time,
        show_latency: bool = True,
        webrtc: bool = True,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(classes="session", **kwargs)
        self.peer = peer
        self._label = label
        self.history = history
        self.link: SessionLink | None = None
        self._first_link = link
        self.status = LinkStatus(webrtc_off=not webrtc)
        self._clock = clock
        self._show_latency = show_latency
        self._webrtc = webrtc
        self._queue: deque[Entry] = deque()
        self._kick = asyncio.Event()
        self._steps: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._transfers: dict[str, Any] = {}
        self._loading_older = False
        self._all_loaded = False
        self.loaded = False  # the history is shown

    @property
    def connection(self) -> Any:
        return self.link.connection if self.link is not None else None

    @property
    def peer_label(self) -> str:
        """The other device's label, safe to show (:func:`~peerchat.models.shown`; never read it as markup)."""
        return shown(self._label or self.peer.label)

    @property
    def closed(self) -> bool:
        """True while no connection is open in this tab (never connected, or closed)."""
        return self.link is None or self.status.closed is not None

    @property
    def queued(self) -> list[Entry]:
        return list(self._queue)

    def compose(self) -> ComposeResult:
        yield Static(self._status_markup(), classes="status")
        yield ChatLog(me="you", clock=self._clock, classes="chat")
        yield TransferList(classes="transfers")
        yield Input(placeholder=self._placeholder(), classes="message")

    def on_mount(self) -> None:
        self._run_recorder()
        self._run_outbox()
        self._load_history()

    def focus_input(self) -> None:
        self.query_one(Input).focus()

    # --- the connection --------------------------------------------------------------------------------------

    def attach(self, link: SessionLink) -> None:
        """Carry this conversation over ``link`` from now on (a previous link's events are no longer shown)."""
        old = self.link
        if old is not None:
            old.tap.close()
            if not old.connection.is_closed:
                self._close_old(old)
        self.link = link
        connection = link.connection
        self.status = LinkStatus(transport=connection.transport, route=connection.route,
                                 peer_label=self._label or connection.peer.label, rtt=connection.rtt,
                                 webrtc_off=not self._webrtc)
        self.remove_class("closed")
        self.note(f"Session with {self.peer_label} ({shown(connection.peer.id)}) open.")
        self._refresh_input()
        self.refresh_status()
        link.tap.attach(lambda name, payload: self.post_message(self.CoreEvent(link, name, payload)))
        self.post_message(self.ConnectionChanged(self))
        self._kick.set()

    @work(group="close-old", exit_on_error=False)
    async def _close_old(self, link: SessionLink) -> None:
        try:
            await link.close()
        except Exception:  # the connection it replaces is gone anyway
            pass

    def _status_markup(self) -> str:
        if self.link is None:
            return "[b]○ NOT CONNECTED[/]  [dim]what you write is queued[/]"
        return self.status.render(latency=self._show_latency)

    def _placeholder(self) -> str:
        if self.closed:
            return f"Message {self.peer_label}: queued until it is connected   (/help)"
        return f"Message {self.peer_label}   (/send PATH, /help)"

    def _refresh_input(self) -> None:
        self.query_one(Input).placeholder = self._placeholder()

    def refresh_status(self) -> None:
        self.query_one(".status", Static).update(self._status_markup())
        self.set_class(self.link is not None and self.status.transport == "webrtc", "webrtc")
        self.set_class(self.link is not None and self.status.transport == "direct", "direct")
        self.set_class(bool(self.status.warnings), "warning")

    # --- the conversation ------------------------------------------------------------------------------------

    @work(group="history", exit_on_error=False)
    async def _load_history(self) -> None:
        entries = await self.history.page(self.peer.id, limit=PAGE)
        self._all_loaded = len(entries) < PAGE
        log = self.query_one(ChatLog)
        earlier = log.items
        log.items = []
        log.clear()
        if entries:
            log.add(Note(f"History with {self.peer_label}", "dim"))
        for entry in entries:
            log.add(entry)
        for item in earlier:  # anything noted while the history loaded comes after it
            log.add(item)
        self._queue.extend(entry for entry in entries if entry.status == "queued")
        older = [e for e in await self.history.queued(self.peer.id) if e.id not in {q.id for q in self._queue}]
        self._queue.extendleft(reversed(older))  # queued before the shown page: still first in line
        self.loaded = True
        if self._first_link is not None:
            self.attach(self._first_link)
            self._first_link = None
        elif self._queue:
            self.post_message(self.WantsConnection(self))
        self._kick.set()

    def on_chat_log_reached_top(self, event: ChatLog.ReachedTop) -> None:
        event.stop()
        if not self._all_loaded and not self._loading_older:
            self._loading_older = True
            self._load_older()

    @work(group="history-older", exit_on_error=False)
    async def _load_older(self) -> None:
        try:
            log = self.query_one(ChatLog)
            first = log.first_entry_id
            if first is None:
                self._all_loaded = True
                return
            entries = await self.history.page(self.peer.id, before=first, limit=PAGE)
            self._all_loaded = len(entries) < PAGE
            log.prepend(entries)
        finally:
            self._loading_older = False

    def forget_history(self) -> None:
        """The history was cleared: show an empty conversation, drop the queue."""
        self._queue.clear()
        log = self.query_one(ChatLog)
        log.items = []
        log.clear()
        self._all_loaded = True
        self.note("History cleared.")

    def note(self, text: str, style: str = "dim italic") -> None:
        self.query_one(ChatLog).add(Note(text, style))

    system = note  # what the app and older callers call it

    async def _record(self, direction: str, kind: str, body: str, status: str, **kwargs: Any) -> Entry:
        entry = await self.history.add(self.peer.id, self.peer_label, direction, kind, body, status,  # type: ignore[arg-type]
                                       **kwargs)
        self.query_one(ChatLog).add(entry)
        return entry

    async def _mark(self, entry: Entry, status: str, *, path: str | None = None) -> Entry:
        await self.history.set_status(entry.id, status, path=path)  # type: ignore[arg-type]
        changed = dataclasses.replace(entry, status=status, path=path or entry.path)
        self.query_one(ChatLog).replace(changed)
        return changed

    def _tell(self, notice: Notice) -> None:
        self.note(notice.text, "italic yellow" if notice.severity != "information" else "dim italic")
        self.notify(notice.text, title=self.peer_label, severity=notice.severity)

    def on_session_view_core_event(self, event: CoreEvent) -> None:
        event.stop()
        if event.link is not self.link:
            return  # from a connection this tab no longer shows
        name, payload = event.name, event.payload
        if name == DATA:
            self._received(payload.data)
            self.post_message(self.Activity(self))
        elif name == INCOMING_TRANSFER:
            self._on_offer(payload.offer)
        elif name == TRANSFER_PROGRESS:
            self._on_progress(payload)
        elif name == TRANSFER_FILE_DONE:
            if payload.direction == "receive":
                self._file_received(payload)
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
                self._refresh_input()
                self.post_message(self.ConnectionChanged(self))

    def _later(self, step: Callable[[], Awaitable[Any]]) -> None:
        """Run ``step`` (a history write and what shows it) after the ones before it, in order."""
        self._steps.put_nowait(step)

    @work(group="recorder", exclusive=True, exit_on_error=False)
    async def _run_recorder(self) -> None:
        while True:
            step = await self._steps.get()
            try:
                await step()
            except Exception as exc:
                self.post_message(ActionFailed("Keeping the conversation history", exc))

    def _received(self, text: str) -> None:
        self._later(lambda: self._record("in", "text", text, "received"))

    def _file_received(self, done: Any) -> None:
        self._later(lambda: self._record("in", "file", str(done.path), "received", path=str(done.saved_to),
                                         size=next((f.size for f in done.transfer.files if f.path == done.path),
                                                   None)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            command = parse_chat_input(event.value)
        except ValueError as exc:
            self.notify(str(exc), severity="warning")
            return  # what was typed stays, to be corrected
        match command:
            case SendText(text=text):
                event.input.clear()
                self.queue_text(text)
            case SendFiles(paths=paths):
                if self.send_files(paths, typed=event.value):
                    event.input.clear()
            case CloseSession():
                event.input.clear()
                self.post_message(self.CloseRequested(self))
            case ShowHelp():
                event.input.clear()
                self.note(CHAT_HELP)
            case RetryFailed():
                event.input.clear()
                self.action_retry()

    def queue_text(self, text: str) -> None:
        """Keep ``text`` as queued and send it, after what is queued before it, once connected."""

        async def step() -> None:
            entry = await self._record("out", "text", text, "queued")
            self._queue.append(entry)
            if self.closed:
                self.post_message(self.WantsConnection(self))
            self._kick.set()

        self._later(step)

    def action_retry(self) -> None:
        """Queue every failed message of this conversation again, in their order."""
        self._later(self._retry)

    async def _retry(self) -> None:
        failed = [item for item in self.query_one(ChatLog).items
                  if isinstance(item, Entry) and item.direction == "out" and item.kind == "text"
                  and item.status == "failed"]
        if not failed:
            self.notify("No failed message to retry in this conversation.", severity="warning")
            return
        for entry in failed:
            self._queue.append(await self._mark(entry, "queued"))
        if self.closed:
            self.post_message(self.WantsConnection(self))
        self._kick.set()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(ActionFailed(f"{event.worker.name.strip('_').replace('_', ' ').capitalize()}",
                                           event.worker.error))

    @work(group="outbox", exclusive=True, exit_on_error=False)
    async def _run_outbox(self) -> None:
        """Send queued texts one at a time, in order, whenever a connection is open.

        A text is marked ``sent`` when it is handed to the connection and ``delivered`` when the other device's
        application confirmed it. When the connection closes under it, it stays queued (and goes first over the
        next connection: the other device may then see it twice); any other failure marks it ``failed``.
        """
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self._queue and self.loaded and not self.closed:
                entry = self._queue.popleft()  # out of the queue first: a clear or a retry meanwhile is safe
                try:
                    if not await self._send_one(entry):
                        break
                except Exception as exc:  # the history failed: say so, and keep the outbox running
                    self.post_message(ActionFailed("Keeping the conversation history", exc))

    async def _send_one(self, entry: Entry) -> bool:
        """Send one queued text and mark it; False when the connection closed under it (it is queued again)."""
        connection = self.connection
        entry = await self._mark(entry, "sent")
        try:
            await connection.send(entry.body)
        except Exception as exc:  # every failure is shown; the session stays usable
            if connection.is_closed or isinstance(exc, ConnectionClosedError):
                self._queue.appendleft(await self._mark(entry, "queued"))
                return False
            await self._mark(entry, "failed")
            self.post_message(ActionFailed(f"Sending to {self.peer_label}", exc))
            return True
        if getattr(connection, "confirm_data_receival", False):
            await self._mark(entry, "delivered")
        return True

    # --- files -----------------------------------------------------------------------------------------------

    def send_files(self, paths: tuple[Path, ...] | list[Path], *, typed: str = "") -> bool:
        """Offer ``paths`` (files or folders) to the other device; progress shows in the transfer list. False (and
        a notification saying why) when they cannot be sent."""
        problem = missing_paths_error(paths, typed)
        if problem is not None:
            self.notify(problem, severity="error")
            return False
        if self.closed:
            self.notify(f"Not connected to {self.peer_label}: files are sent in a session (press Enter on the "
                        "device to connect).", severity="warning")
            return False
        names = ", ".join(p.name or str(p) for p in paths)
        row = self.query_one(TransferList).add(f"preparing-{id(paths)}-{self._clock()}", names, 0, outgoing=True,
                                               preparing=True)
        self._send_files(list(paths), row)
        return True

    @work(group="send-files", exit_on_error=False)
    async def _send_files(self, paths: list[Path], row: Any) -> None:
        assert self.link is not None
        row.worker = asyncio.current_task()
        try:
            transfer = await self.link.transfers.send_files(paths, on_prepare=row.preparing_progress)
        except asyncio.CancelledError:
            row.finish("✗ cancelled while preparing", ok=False)
            self._linger(row)
            self.note(f"Cancelled sending {row.file_name}.", "italic yellow")
            return
        except Exception as exc:
            row.finish("✗ not sent (the reason is in the notification)", ok=False)
            self._linger(row)
            self.post_message(ActionFailed(f"Sending files to {self.peer_label}", exc))
            return
        self._add_row(transfer, outgoing=True, source=paths, row=row)
        self.note(f"↑ offered {self._describe(transfer)} to {self.peer_label}")

    def _on_offer(self, offer: Any) -> None:
        running = offer.transfer
        if running is not None:
            self._add_row(running, outgoing=False)
            self.note(f"↓ resuming {len(offer.files)} file(s) from {self.peer_label}")
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
        self.note(f"↓ receiving {self._describe(transfer)} into {download_dir}")

    def decline_files(self, offer: Any) -> None:
        self._decline_files(offer)

    @work(group="accept-files", exit_on_error=False)
    async def _decline_files(self, offer: Any) -> None:
        try:
            await offer.decline()
        except Exception as exc:
            self.post_message(ActionFailed(f"Declining files from {self.peer_label}", exc))
            return
        self.note(f"Declined {len(offer.files)} file(s) from {self.peer_label}.")

    @property
    def transfer_running(self) -> bool:
        return bool(self.query_one(TransferList).active())

    def cancel_newest_transfer(self) -> bool:
        """Cancel the newest running transfer of this session (also one still being prepared); False when none
        is running."""
        rows = self.query_one(TransferList).active()
        if not rows:
            return False
        row = rows[-1]
        if row.worker is not None:
            row.worker.cancel()
            return True
        transfer = self._transfers.get(row.key)
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

    def _add_row(self, transfer: Any, *, outgoing: bool, source: list[Path] | None = None,
                 row: Any = None) -> None:
        if transfer.id in self._transfers:
            return
        self._transfers[transfer.id] = transfer
        files = transfer.files
        name = files[0].path if len(files) == 1 else f"{len(files)} files"
        if row is not None:  # the row that showed the preparation
            row.ready(transfer.id, name, transfer.bytes_total)
        else:
            row = self.query_one(TransferList).add(transfer.id, name, transfer.bytes_total, outgoing=outgoing)
        row.source = ", ".join(str(p) for p in source) if source else None
        if transfer.bytes_done:
            row.progress(transfer.bytes_done, None, None)

    def _on_progress(self, event: Any) -> None:
        row = self.query_one(TransferList).row(event.transfer.id)
        if row is None:
            self._add_row(event.transfer, outgoing=event.direction == "send")
            row = self.query_one(TransferList).row(event.transfer.id)
        if row is not None:
            row.progress(event.bytes_done, event.rate, event.eta)

    def _linger(self, row: Any) -> None:
        """Take a finished row out of the panel after a moment; its result stays in the conversation."""
        transfers = self.query_one(TransferList)
        self.set_timer(FINISHED_ROW_LINGERS, lambda: transfers.drop(row))

    def _on_finished(self, event: Any) -> None:
        row = self.query_one(TransferList).row(event.transfer.id)
        verb = "delivered and verified" if event.direction == "send" else "received and verified"
        if row is not None:
            row.finish(f"✓ {verb} · {format_bytes(event.bytes_total)}", ok=True)
            self._linger(row)
        if event.direction == "send":
            self._file_sent(event.transfer, "delivered", row.source if row is not None else None)

    def _file_sent(self, transfer: Any, status: str, source: str | None) -> None:
        name = self._describe(transfer).rsplit(" (", 1)[0]
        self._later(lambda: self._record("out", "file", name, status, path=source, size=transfer.bytes_total))

    def _on_failed(self, event: Any) -> None:
        if event.direction == "receive" and isinstance(event.error, TransferDeclinedError) and \
                self.query_one(TransferList).row(event.transfer.id) is None:
            return  # this device declined the offer: "Declined N file(s)" says it once
        row = self.query_one(TransferList).row(event.transfer.id)
        text = describe_error("The transfer", event.error)
        if row is not None:
            row.finish("✗ failed (the reason is in the conversation)", ok=False)
            self._linger(row)
        if event.direction == "send":
            self._file_sent(event.transfer, "failed", row.source if row is not None else None)
        self.note(f"✗ {self._describe(event.transfer)}: {event.error}", "italic red")
        self.notify(text, title=self.peer_label, severity="error", timeout=12)
