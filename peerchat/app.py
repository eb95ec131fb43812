"""The peerchat Textual app and :func:`create_app`, the one factory used by the command line and the tests."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.command import Hit, Hits, Provider
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from core import IncomingConnection as IncomingConnectionEvent
from core import ConnectionRequest, PeerchatError, PeerConnectionManager, PeerInfo, fingerprint
from core import PeersChanged as PeersChangedEvent
from core import RelayRestored as RelayRestoredEvent
from core import RelayUnavailable as RelayUnavailableEvent
from core.events import INCOMING_CONNECTION, PEER_KEY_CHANGED, PEERS_CHANGED, RELAY_RESTORED, RELAY_UNAVAILABLE

from .backend import Backend, RelayGoneError, SessionLink, describe_error, open_session
from .config import ConfigError, Settings, settings_from_args
from .dialogs import ConfirmDialog, FilePickerDialog, IncomingConnectionDialog, IncomingFilesDialog, VerifyDeviceDialog
from .history import AsyncHistory, History, HistoryError
from .messages import (
    AcceptRequested,
    AcceptWithdrawn,
    ActionFailed,
    BackendFailed,
    BackendReady,
    IncomingConnection,
    KeyChanged,
    PeersChanged,
    RelayHealthChanged,
    RelayStatus,
    SessionOpened,
)
from .models import DeviceDirectory, DeviceRow, format_duration, markup_escape, relay_outage_line, shown
from .screens import MainScreen
from .widgets import DeviceList, SessionView


class HistorySearch(Provider):
    """The command palette's search through every conversation: a hit opens that device's conversation."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, PeerchatApp)
        if len(query.strip()) < 2:
            return
        matcher = self.matcher(query)
        for entry in await app.history.search(query.strip(), limit=20):
            who = "you" if entry.direction == "out" else entry.label
            text = f"{entry.label}: {who}: {entry.body}"
            peer = PeerInfo(entry.peer_id, entry.label)
            yield Hit(matcher.match(text) or 0.5, matcher.highlight(text), partial(app.show_conversation, peer),
                      help=time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.at)) + " · in the history")


class PeerchatApp(App[None]):
    """Chat and send files to this user's other devices. Build it with :func:`create_app`."""

    COMMANDS = App.COMMANDS | {HistorySearch}
    CSS_PATH = "peerchat.tcss"
    TITLE = "peerchat"
    NOTIFICATION_TIMEOUT = 6

    def __init__(
        self,
        settings: Settings,
        *,
        manager: PeerConnectionManager | None = None,
        clock: Callable[[], float] = time.time,
        show_latency: bool = True,
        picker_start: Path | None = None,
    ) -> None:
        super().__init__()
        self._picker_start = picker_start or Path.home()
        self.settings = settings
        self.manager: PeerConnectionManager | None = None
        self._given_manager = manager
        self._backend: Backend | None = None
        self._clock = clock
        self._show_latency = show_latency
        self._directory = DeviceDirectory()
        self._accept_dialogs: dict[str, IncomingConnectionDialog] = {}
        self._device_keys: dict[str, str] = {}  # the keys devices publish in presence
        self._subscriptions: list[tuple[str, Callable[..., None]]] = []
        self._relay_description = ""
        self._relay_outage: RelayUnavailableEvent | None = None
        self._relay_timer: Timer | None = None
        self._connecting: set[str] = set()
        self._show_all_devices = False
        self._history_problem: HistoryError | None = None
        try:
            store = History(settings.history_path, clock=clock)
        except HistoryError as exc:  # the app still works; nothing is kept until it is fixed
            self._history_problem = exc
            store = History(None, clock=clock)
        self.history = AsyncHistory(store)
        self.sub_title = f"{settings.label} · {settings.device_id} · user {settings.user}"


    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every notification is plain text: messages carry labels, file names and errors from other devices,
        whose brackets are never markup and whose control characters are shown, not sent to the terminal."""
        super().notify(shown(message, keep_newlines=True), title=shown(title), severity=severity, timeout=timeout,
                       markup=False)

    def get_default_screen(self) -> Screen[None]:
        return MainScreen(self.history, clock=self._clock, show_latency=self._show_latency, webrtc=self.settings.webrtc)

    @property
    def main(self) -> MainScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    # --- the backend -----------------------------------------------------------------------------------------

    def on_main_screen_ready(self, message: MainScreen.Ready) -> None:
        if self._history_problem is not None:
            self.notify(f"{self._history_problem} Nothing is kept until then.", title="History off",
                        severity="error", timeout=30)
        self._restore_queues()
        if self._given_manager is not None:
            self.post_message(BackendReady(self._given_manager, self.settings.describe_relay()))
        else:
            self._start_backend()

    RETRY_RELAY_EVERY = 3.0  # seconds between attempts while the relay does not answer

    @work(group="backend", exclusive=True, exit_on_error=False)
    async def _start_backend(self) -> None:
        """Start the backend; while the relay does not answer (an emulator not started yet), try again every few
        seconds, so the app comes online by itself once it does."""
        failures = 0
        while True:
            backend = Backend(self.settings,
                              on_relay_status=lambda text, ok: self.post_message(RelayStatus(text, ok)))
            try:
                manager = await backend.start()
            except asyncio.CancelledError:  # the app quit while starting: leave nothing running
                await backend.stop()
                raise
            except RelayGoneError as exc:
                await backend.stop()
                self.post_message(BackendFailed(exc, retrying=self.RETRY_RELAY_EVERY, first=failures == 0))
                failures += 1
                await asyncio.sleep(self.RETRY_RELAY_EVERY)
                continue
            except Exception as exc:
                await backend.stop()
                self.post_message(BackendFailed(exc))
                return
            break
        self._backend = backend
        if failures:
            self.post_message(RelayStatus(f"The relay answers now ({self.settings.describe_relay()}).", True))
        self.post_message(BackendReady(manager, backend.relay_description))

    def on_backend_ready(self, message: BackendReady) -> None:
        manager = self.manager = message.manager
        if hasattr(manager, "accept"):
            # Incoming sessions are asked about before they open (core's Firebase manager asks its ``accept``).
            manager.accept = self._ask_to_accept
        self._subscribe(manager, PEERS_CHANGED, self._core_peers_changed)
        self._subscribe(manager, INCOMING_CONNECTION, self._core_incoming_connection)
        self._subscribe(manager, PEER_KEY_CHANGED, lambda event: self.post_message(KeyChanged(event)))
        # Managers that watch their relay (core's Firebase manager does) say when it stops and starts answering.
        self._subscribe(manager, RELAY_UNAVAILABLE, self._core_relay_health)
        self._subscribe(manager, RELAY_RESTORED, self._core_relay_health)
        self._relay_description = message.relay
        self.main.show_relay(f"● online via {message.relay}", ok=True)
        self._load_peers()

    def on_backend_failed(self, message: BackendFailed) -> None:
        text = describe_error("Starting peerchat", message.error)
        if message.retrying is not None:
            self.main.show_relay(f"✗ offline: {text} — retrying every {message.retrying:g} s", ok=False)
            if message.first:  # said once; the relay line keeps saying it
                self.notify(f"{text}. Retrying every {message.retrying:g} s.", title="Not connected",
                            severity="error", timeout=30)
            return
        self.main.show_relay(f"✗ offline: {text}", ok=False)
        self.notify(text, title="Not connected", severity="error", timeout=30)

    def on_relay_status(self, message: RelayStatus) -> None:
        if message.ok and self.manager is not None:
            # Back (or restarted here): the line says where the relay is now; the news is in the notification.
            if self._backend is not None:
                self._relay_description = self._backend.relay_description
            if self._relay_outage is None:
                self.main.show_relay(f"● online via {self._relay_description}", ok=True)
        elif not message.ok:
            self.main.show_relay(f"✗ {message.text}", ok=False)
        self.notify(message.text, title="Relay", severity="information" if message.ok else "error",
                    timeout=6 if message.ok else 30)

    def _core_relay_health(self, event: RelayUnavailableEvent | RelayRestoredEvent) -> None:
        self.post_message(RelayHealthChanged(event))

    def on_relay_health_changed(self, message: RelayHealthChanged) -> None:
        event = message.event
        if isinstance(event, RelayUnavailableEvent):
            self._relay_outage = event
            self._show_relay_outage()
            if self._relay_timer is None:  # the line counts the seconds of the outage
                self._relay_timer = self.set_interval(1.0, self._show_relay_outage)
            self.notify(f"{event.reason.rstrip('.')}. Retrying; sessions carry on once it answers again.",
                        title="Relay unreachable", severity="error", timeout=30)
        elif isinstance(event, RelayRestoredEvent):
            self._relay_outage = None
            if self._backend is not None:  # the emulator may run here now, or in another peerchat
                self._relay_description = self._backend.relay_description
            if self._relay_timer is not None:
                self._relay_timer.stop()
                self._relay_timer = None
            self.main.show_relay(f"● online via {self._relay_description}", ok=True)
            self.notify(f"The relay is back after {format_duration(event.duration)} unreachable.", title="Relay",
                        severity="information", timeout=6)

    def _show_relay_outage(self) -> None:
        outage = self._relay_outage
        if outage is not None:
            self.main.show_relay(relay_outage_line(outage.reason, outage.since, self._clock()), ok=False)

    @work(group="history", exit_on_error=False)
    async def _restore_queues(self) -> None:
        """Open the conversations that still have queued messages (from before a restart): they go out once their
        device is online."""
        peers: dict[str, PeerInfo] = {}
        for entry in await self.history.queued():
            peers.setdefault(entry.peer_id, PeerInfo(entry.peer_id, entry.label))
        for peer in peers.values():
            await self.main.open_conversation(peer, activate=False)

    def _subscribe(self, manager: PeerConnectionManager, name: str, handler: Callable[..., None]) -> None:
        manager.events.on(name, handler)
        self._subscriptions.append((name, handler))

    def _core_peers_changed(self, event: PeersChangedEvent) -> None:
        self.post_message(PeersChanged(tuple(event.peers), tuple(event.devices)))

    def _core_incoming_connection(self, event: IncomingConnectionEvent) -> None:
        # Accepted already (see _ask_to_accept); the tap listens from this very moment.
        self.post_message(IncomingConnection(open_session(event.connection, self.settings.download_dir)))

    async def _ask_to_accept(self, request: ConnectionRequest) -> bool:
        """The manager's ``accept``: ask the person where the ``ask`` setting says (new devices by default).

        Called from core's task, outside the app's context: the dialog is pushed by a message handler. Cancelled
        when the other device gives up: its dialog goes away then."""
        if not should_ask(self.settings.ask, request.trust):
            return True
        comparison = getattr(self.manager, "comparison_code", None)
        code = comparison(request.key) if comparison is not None else ""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.post_message(AcceptRequested(request, code, answer))
        try:
            return await answer
        except asyncio.CancelledError:
            self.post_message(AcceptWithdrawn(request))
            raise

    def on_accept_requested(self, message: AcceptRequested) -> None:
        request, answer = message.request, message.answer
        if answer.done():
            return
        dialog = IncomingConnectionDialog(request.peer, trust=request.trust, fingerprint=request.fingerprint,
                                          code=message.code)
        self._accept_dialogs[request.session_id] = dialog

        def answered(accept: bool | None) -> None:
            self._accept_dialogs.pop(request.session_id, None)
            if accept and dialog.verified:
                try:
                    self.manager.verify_device(request.peer.id, request.key, request.peer.label)  # type: ignore[union-attr]
                except (ValueError, PeerchatError) as exc:
                    self.post_message(ActionFailed(f"Verifying {request.peer.label}", exc))
            if not answer.done():
                answer.set_result(bool(accept))

        self.push_screen(dialog, answered)

    def on_accept_withdrawn(self, message: AcceptWithdrawn) -> None:
        dialog = self._accept_dialogs.pop(message.request.session_id, None)
        if dialog is None:
            return
        if self.screen is dialog:
            dialog.dismiss(False)
        self.notify(f"{message.request.peer.label} stopped waiting for an answer.",
                    title="Session request withdrawn", timeout=6)

    @work(group="peers", exclusive=True, exit_on_error=False)
    async def _load_peers(self) -> None:
        assert self.manager is not None
        try:
            devices = await self.manager.get_known_peers()
        except Exception as exc:
            self.post_message(ActionFailed("Listing your devices", exc))
            return
        self.post_message(PeersChanged(tuple(d.info for d in devices if d.online), tuple(devices)))

    def on_key_changed(self, message: KeyChanged) -> None:
        event = message.event
        self.notify(f"{event.peer.label} ({event.peer.id}) showed another key ({event.presented}) than the one this "
                    f"device knows ({event.remembered}), so its session was refused. If it was reinstalled, check "
                    "the fingerprint on it, then forget its key (command palette).", title="Key changed",
                    severity="error", timeout=30)
        self._load_peers()

    def on_peers_changed(self, message: PeersChanged) -> None:
        self._device_keys.update({d.info.id: d.key for d in message.devices if d.key})
        trust_of = getattr(self.manager, "trust_of", None)
        if trust_of is not None:
            self._directory.update_trust({d.info.id: trust_of(d.info.id, d.key) for d in message.devices})
        if message.devices:
            self._directory.update_devices(message.devices, self._clock())
        else:
            self._directory.update(message.peers, self._clock())
        self.main.show_devices(self._device_rows())
        for view in self.main.sessions():
            if view.queued:
                self._connect_when_online(view)

    HIDE_OFFLINE_AFTER = 7 * 86400.0  # devices offline for longer are hidden (the palette shows them again)

    def _device_rows(self) -> list[DeviceRow]:
        keep = {view.peer.id for view in self.main.sessions()} if self.screen_stack else set()
        return self._directory.rows(now=self._clock(),
                                    hide_after=None if self._show_all_devices else self.HIDE_OFFLINE_AFTER,
                                    keep=keep)

    def action_toggle_old_devices(self) -> None:
        self._show_all_devices = not self._show_all_devices
        self.main.show_devices(self._device_rows())

    @work(group="forget", exit_on_error=False)
    async def _remove_device(self, peer: PeerInfo) -> None:
        """Remove an offline device's presence record (core's forget_peer); its key and its history stay."""
        forget = getattr(self.manager, "forget_peer", None)
        if forget is None:
            self.notify("Not connected to the relay yet.", severity="warning")
            return
        try:
            await forget(peer.id)
        except Exception as exc:
            self.post_message(ActionFailed(f"Forgetting {peer.label}", exc))
            return
        self._directory.forget(peer.id)
        self.main.show_devices(self._device_rows())
        self.notify(f"{peer.label} is removed from the list; it shows up again when it comes online. Its history "
                    "stays here.")

    def on_session_view_wants_connection(self, message: SessionView.WantsConnection) -> None:
        self._connect_when_online(message.view)

    def _connect_when_online(self, view: SessionView) -> None:
        """Connect to the device of ``view`` if it is online and no connection is open or being opened."""
        if (self.manager is not None and view.closed and self._directory.is_online(view.peer.id)
                and view.peer.id not in self._connecting):
            self.connect(self._directory.find(view.peer.id)[0], quiet=True)

    async def on_unmount(self) -> None:
        try:
            await self._stop_sessions()
        finally:
            await self.history.close()

    async def _stop_sessions(self) -> None:
        if self.manager is not None:
            for name, handler in self._subscriptions:
                self.manager.events.remove_listener(name, handler)
        self._subscriptions.clear()
        for view in self.main.sessions() if self.screen_stack else []:
            try:
                if view.link is not None:
                    await view.link.close()
            except PeerchatError:
                pass
        if self._backend is not None:
            await self._backend.stop()

    # --- sessions --------------------------------------------------------------------------------------------

    def on_device_list_open_session(self, message: DeviceList.OpenSession) -> None:
        self.open_session_with(message.peer, online=message.online)

    def open_session_with(self, peer: PeerInfo, *, online: bool = True) -> None:
        """Show the conversation with ``peer`` at once (its history) and connect to it when it is online (the
        device list and the command palette)."""
        self._open_session_with(peer, online)

    @work(group="open", exit_on_error=False)
    async def _open_session_with(self, peer: PeerInfo, online: bool) -> None:
        existing = self.main.open_session_for(peer.id)
        if existing is not None:
            self.main.activate(existing)
            return
        await self.main.open_conversation(peer)
        if self.manager is None:
            self.notify("Not connected to the relay yet: what you write is queued and sent once it is.",
                        severity="warning")
        elif not online:
            self.notify(f"{peer.label} is offline: what you write is queued and sent when it comes online.",
                        severity="warning")
        elif peer.id not in self._connecting:
            self.connect(peer)

    def show_conversation(self, peer: PeerInfo) -> None:
        """Open the tab of the conversation with ``peer`` (connecting when it is online); the history search."""
        self.open_session_with(peer, online=self._directory.is_online(peer.id))

    def connect(self, peer: PeerInfo, *, quiet: bool = False) -> None:
        """Open a session with ``peer`` (a worker; the result arrives as SessionOpened or ActionFailed)."""
        if not quiet:
            self.notify(f"Connecting to {peer.label}…", timeout=3)
        self._connecting.add(peer.id)
        self._connect(peer)

    @work(group="connect", exit_on_error=False)
    async def _connect(self, peer: PeerInfo) -> None:
        assert self.manager is not None
        try:
            # Confirmed: a message is marked delivered once the other device's application has it.
            connection = await self.manager.connect_to_peer(peer.id, confirm_data_receival=True)
        except Exception as exc:
            self.post_message(ActionFailed(f"Connecting to {peer.label}", exc))
            return
        finally:
            self._connecting.discard(peer.id)
        self.post_message(SessionOpened(open_session(connection, self.settings.download_dir)))

    async def on_session_opened(self, message: SessionOpened) -> None:
        await self.main.add_session(message.link)
        self._load_peers()

    async def on_incoming_connection(self, message: IncomingConnection) -> None:
        # Also when the other device left meanwhile (``peerchat send`` disconnects once its text is confirmed): the
        # tab replays what arrived, then shows the session closed.
        link = message.link
        link = message.link
        connection = link.connection
        # This side's messages are confirmed too, so that they can be marked delivered. The attribute is core's
        # connection setting (RelayConnection.confirm_data_receival), read at every send.
        if hasattr(connection, "confirm_data_receival"):
            connection.confirm_data_receival = True
        await self.main.add_session(link, label=connection.peer.label)
        self._load_peers()  # a new device is trusted now: the list says so

    @work(group="disconnect", exit_on_error=False)
    async def _close_link(self, link: SessionLink) -> None:
        try:
            await link.close()
        except Exception as exc:
            self.post_message(ActionFailed(f"Closing the session with {link.connection.peer.label}", exc))

    async def on_session_view_close_requested(self, message: SessionView.CloseRequested) -> None:
        await self._close_session(message.view)

    async def action_close_session(self) -> None:
        view = self.main.active_session
        if view is None:
            self.notify("No session is open.", severity="warning")
            return
        await self._close_session(view)

    async def _close_session(self, view: SessionView) -> None:
        if view.transfer_running:
            async def answered(yes: bool | None) -> None:
                if yes:
                    await self._really_close(view)

            self.push_screen(ConfirmDialog(
                "Close this session?",
                f"A transfer with {view.peer_label} is still running. Closing the session stops it (a file that "
                "was partly received resumes in a later session).", yes="Close"), answered)
            return
        await self._really_close(view)

    async def _really_close(self, view: SessionView) -> None:
        if view.link is not None:
            self._close_link(view.link)
        await self.main.remove_session(view)

    # --- files -----------------------------------------------------------------------------------------------

    def action_send_file(self) -> None:
        view = self.main.active_session
        if view is None or view.closed:
            self.notify("Open a session first: choose a device and press Enter.", severity="warning")
            return

        def picked(path: Path | None) -> None:
            if path is not None:
                self._picker_start = path.parent  # the picker opens where the last file was found
                view.send_files((path,))

        self.push_screen(FilePickerDialog(self._picker_start), picked)

    def on_session_view_files_offered(self, message: SessionView.FilesOffered) -> None:
        view, offer = message.view, message.offer
        download_dir = self.settings.download_dir
        files = [(entry.path, entry.size) for entry in offer.files]

        def answered(accept: bool | None) -> None:
            if accept:
                view.accept_files(offer, download_dir)
            else:
                view.decline_files(offer)

        self.push_screen(IncomingFilesDialog(view.peer_label, files, download_dir), answered)

    def action_retry(self) -> None:
        view = self.main.active_session
        if view is None:
            self.notify("No conversation is open.", severity="warning")
            return
        view.action_retry()

    def action_clear_history(self) -> None:
        async def answered(yes: bool | None) -> None:
            if yes:
                self._clear_history()

        where = "kept on this device" if self.history.persistent else "kept in memory (history is off)"
        self.push_screen(ConfirmDialog("Clear the history?", f"Every conversation {where} is forgotten, and "
                                       "queued messages are not sent. This cannot be undone.", yes="Clear"),
                         answered)

    @work(group="history", exit_on_error=False)
    async def _clear_history(self) -> None:
        count = await self.history.clear()
        for view in self.main.sessions():
            view.forget_history()
        self.notify(f"History cleared ({count} entries).", title="History")

    def action_cancel_transfer(self) -> None:
        view = self.main.active_session
        if view is None or not view.cancel_newest_transfer():
            self.notify("No transfer is running in this session.", severity="warning")

    # --- errors and commands ---------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Workers catch what they expect; anything else still reaches the person instead of vanishing.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.on_action_failed(ActionFailed(event.worker.name.strip("_").replace("_", " ").capitalize(),
                                               event.worker.error))

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(describe_error(message.what, message.error), severity="error", timeout=12)

    def verify_device(self, peer: PeerInfo) -> None:
        """Show the comparison code with ``peer``; mark it verified when the person says both devices show it."""
        manager: Any = self.manager
        key = self._device_keys.get(peer.id)
        if manager is None or key is None:
            self.notify(f"{peer.label} has not published a key yet.", severity="warning")
            return
        if manager.trust_of(peer.id, key) == "key-changed":
            self.notify(f"The key of {peer.label} changed: forget the old one first.", severity="error")
            return
        dialog = VerifyDeviceDialog(peer, own_fingerprint=manager.fingerprint, fingerprint=fingerprint(key),
                                    code=manager.comparison_code(key))

        def answered(same: bool | None) -> None:
            if not same:
                self.notify(f"{peer.label} was not marked verified.", timeout=4)
                return
            try:
                manager.verify_device(peer.id, key, peer.label)
            except (ValueError, PeerchatError) as exc:
                self.post_message(ActionFailed(f"Verifying {peer.label}", exc))
                return
            self.notify(f"{peer.label} is verified.", timeout=4)
            self._load_peers()

        self.push_screen(dialog, answered)

    def forget_device(self, peer: PeerInfo) -> None:
        manager: Any = self.manager
        if manager is not None and manager.forget_device(peer.id):
            self.notify(f"Forgot the key of {peer.label}: its next session counts as a new device.", timeout=6)
        self._load_peers()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for row in self._device_rows():
            peer = row.peer
            label = markup_escape(shown(peer.label))  # the palette reads its titles as markup
            if row.online:
                yield SystemCommand(
                    f"Connect to {label}", f"Open a session with {label} ({markup_escape(peer.id)})",
                    lambda peer=peer: self.open_session_with(peer),
                )
            else:
                yield SystemCommand(
                    f"Conversation with {label}", f"Show the history with {label} ({markup_escape(peer.id)}, offline)",
                    lambda peer=peer: self.open_session_with(peer, online=False),
                )
                yield SystemCommand(
                    f"Remove {label} from the list", f"Remove {label} ({markup_escape(peer.id)}, offline) from every "
                    "device's list until it comes online again", lambda peer=peer: self._remove_device(peer),
                )
        hidden = self._directory.hidden(self._clock(), self.HIDE_OFFLINE_AFTER)
        if self._show_all_devices or hidden:
            days = self.HIDE_OFFLINE_AFTER / 86400
            yield SystemCommand(
                f"{'Hide' if self._show_all_devices else 'Show'} devices offline for more than {days:g} days",
                f"{hidden} device(s) offline for long" + (" are listed" if self._show_all_devices else " are hidden"),
                self.action_toggle_old_devices,
            )
        if hasattr(self.manager, "verify_device"):
            for row in self._directory.rows():
                peer = row.peer
                if row.trust in ("new", "trusted") and peer.id in self._device_keys:
                    yield SystemCommand(f"Verify {peer.label}", f"Compare the code {peer.label} shows and mark it "
                                        "verified", lambda peer=peer: self.verify_device(peer))
                if row.trust in ("trusted", "verified", "key-changed"):
                    yield SystemCommand(f"Forget the key of {peer.label}", f"{peer.label}'s next session counts "
                                        "as a new device", lambda peer=peer: self.forget_device(peer))
        # Every binding of the footer is here too, with its key.
        yield SystemCommand("Devices (Ctrl+D)", "Move to the device list", lambda: self.main.action_focus_devices())
        yield SystemCommand("Next session (Ctrl+T)", "Show the next session's tab", lambda: self.main.action_next_session())
        yield SystemCommand("Send a file (Ctrl+F)", "Pick a file and send it in the current session",
                            self.action_send_file)
        yield SystemCommand("Cancel transfer (Ctrl+X)", "Cancel the newest transfer of this session",
                            self.action_cancel_transfer)
        yield SystemCommand("Close session (Ctrl+W)", "End the current session", self.action_close_session)
        yield SystemCommand("Retry failed messages (Ctrl+R)", "Send this conversation's failed messages again",
                            self.action_retry)
        yield SystemCommand("Clear history", "Forget every conversation kept on this device (and queued messages)",
                            self.action_clear_history)
        yield SystemCommand("Search history", "Type in the palette: matching messages of every conversation show "
                            "up", lambda: self.notify("Type a word in the command palette (Ctrl+P) to search "
                                                      "every conversation."))


def run_app(args: argparse.Namespace) -> int:
    """Start the app with the settings flags in ``args``; returns the exit code (2 for a bad setting)."""
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"peerchat: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    app.run()
    return app.return_code or 0


def should_ask(setting: str, trust: str) -> bool:
    """Whether the ``ask`` setting (see :data:`peerchat.config.ASK_CHOICES`) asks about a device of ``trust``."""
    if setting == "always":
        return True
    if setting == "never":
        return False
    if setting == "unverified":
        return trust != "verified"
    return trust == "new"


def create_app(
    settings: Settings | None = None,
    *,
    manager: PeerConnectionManager | None = None,
    clock: Callable[[], float] = time.time,
    show_latency: bool = True,
    picker_start: Path | None = None,
) -> PeerchatApp:
    """Build the app.

    Args:
        settings: from :func:`peerchat.config.resolve_settings`; with ``manager`` only ``label``, ``device_id``,
            ``user`` and ``download_dir`` are used.
        manager: an already started manager (tests); without it the app starts a :class:`~peerchat.backend.Backend`
            from ``settings`` and stops it on exit.
        clock: the wall clock (``time.time``), fixed in snapshot tests.
        show_latency: False hides latency figures (snapshot tests).
        picker_start: the folder the file picker opens in (default: the home folder).
    """
    if settings is None:
        from .config import resolve_settings

        settings = resolve_settings({})
    return PeerchatApp(settings, manager=manager, clock=clock, show_latency=show_latency, picker_start=picker_start)
