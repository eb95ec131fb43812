"""Snapshot tests (pytest-textual-snapshot) of the main screens, from the real app on a real emulator.

The app runs exactly as ``peerchat --emulator HOST:PORT`` does (its own backend and manager); the other devices
are real managers on a background event loop. Everything shown is fixed: the labels, ids and user, the clock
(``show_latency=False`` hides round-trip figures), the relay's name in the relay line (the emulator takes any free
port), and WebRTC is off so the link is always the relay. Update the pictures with ``pytest tests/app/test_snapshots.py --snapshot-update`` and look at them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import pytest
from google.auth.credentials import AnonymousCredentials
from textual.widgets import Input

from app_helpers import wait_until
from core import FirebasePeerConnectionManager, ManagerOptions, MemoryKeyStore, PeerInfo
from core.protocol.identity import DeviceKey
from emulator import Emulator
from peerchat.app import create_app
from peerchat.backend import open_session
from peerchat.config import Settings
from peerchat.dialogs import IncomingConnectionDialog
from peerchat.widgets import DeviceList, TransferRow

RELAY_NAME = "the test emulator"  # the relay line shows this instead of the emulator's (free, varying) port
USER = "snap"
SIZE = (110, 30)
FIXED_TIME = 1_768_469_400.0  # 2026-01-15 09:30 UTC
OPTIONS = ManagerOptions(webrtc=False, direct=False)


class OtherDevices:
    """Real managers for the user's other devices, on an event loop in a background thread."""

    def __init__(self, relay: Emulator) -> None:
        self.relay = relay
        self.database_url = relay.database_url("peerchat")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="other-devices", daemon=True)
        self.thread.start()
        self.managers: dict[str, FirebasePeerConnectionManager] = {}
        self.apps: list[firebase_admin.App] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def wait(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` on the devices' loop from another loop (the app's)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def start(self, label: str) -> FirebasePeerConnectionManager:
        app = firebase_admin.initialize_app(
            AnonymousCredentials(),
            {"databaseURL": self.database_url, "databaseAuthVariableOverride": {"uid": USER}},
            name=f"snap-{label}-{uuid.uuid4().hex}",
        )
        self.apps.append(app)

        async def make() -> FirebasePeerConnectionManager:
            manager = FirebasePeerConnectionManager(USER, PeerInfo(f"{label}-1", label), app=app, options=OPTIONS,
                                                    keys=MemoryKeyStore(fixed_key(label)))
            await manager.start()
            return manager

        self.managers[label] = self.run(make())
        return self.managers[label]

    def begin(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Start ``coro`` on the devices' loop without waiting for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, label: str) -> None:
        self.run(self.managers.pop(label).stop())

    def close(self) -> None:
        for label in list(self.managers):
            self.stop(label)
        for app in self.apps:
            firebase_admin.delete_app(app)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def snapshot_relay() -> Iterator[Emulator]:
    with Emulator.in_thread(port=0) as emulator:
        yield emulator


@pytest.fixture
def devices(snapshot_relay: Emulator) -> Iterator[OtherDevices]:
    others = OtherDevices(snapshot_relay)
    yield others
    others.close()


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC for the test (chat times), and whatever it was afterwards."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def fixed_key(label: str) -> DeviceKey:
    """The same identity key for ``label`` in every run (fingerprints and codes are in the pictures)."""
    return DeviceKey.from_private_bytes(hashlib.sha256(f"snapshot {label}".encode()).digest())


def laptop_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay: Emulator, *, data_dir: Path | None = None,
               picker_start: Path | None = None) -> Any:
    monkeypatch.setenv("HOME", str(tmp_path))
    keys = tmp_path / "keys"
    (keys / "laptop-1").mkdir(parents=True)
    (keys / "laptop-1" / "identity.key").write_text(base64.b64encode(fixed_key("laptop").private_bytes()).decode())
    settings = Settings(user=USER, label="laptop", device_id="laptop-1", emulator=relay.host_port, webrtc=False,
                        direct=False, download_dir=Path("/home/me/Downloads/peerchat"), relay_name=RELAY_NAME,
                        keys_dir=keys,
                        data_dir=data_dir)
    return create_app(settings, clock=lambda: FIXED_TIME, show_latency=False, picker_start=picker_start)


def chat_text(view: Any) -> str:
    """The conversation's text without whitespace (the log wraps lines where it must)."""
    return "".join("".join(line.text for line in view.query_one("RichLog").lines).split())


async def settle(pilot: Any) -> None:
    """Clear toasts (their timing is not part of the picture) and let the screen settle."""
    pilot.app.clear_notifications()
    for cursor in pilot.app.query(Input):
        cursor.cursor_blink = False
    await pilot.pause(0.2)


def online_rows(pilot: Any) -> Callable[[], int]:
    def count() -> int:
        found = pilot.app.screen_stack[0].query(DeviceList) if pilot.app.screen_stack else []
        return sum(1 for row in found[0]._rows.values() if row.online) if found else 0

    return count


def test_devices_screen(snap_compare, devices, utc, tmp_path, monkeypatch):
    devices.start("desktop")
    devices.start("phone")
    devices.start("tablet")

    async def run_before(pilot: Any) -> None:
        await wait_until(lambda: online_rows(pilot)() == 3, pilot, what="three devices online")
        await devices.wait(devices.managers.pop("tablet").stop())
        await wait_until(lambda: online_rows(pilot)() == 2, pilot, what="the tablet offline")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay), terminal_size=SIZE, run_before=run_before)


def test_incoming_connection_dialog(snap_compare, devices, utc, tmp_path, monkeypatch):
    desktop = devices.start("desktop")

    async def run_before(pilot: Any) -> None:
        await wait_until(lambda: online_rows(pilot)() == 1, pilot, what="the desktop online")
        devices.begin(desktop.connect_to_peer("laptop-1"))  # returns once accepted: never, here
        await wait_until(lambda: isinstance(pilot.app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay), terminal_size=SIZE, run_before=run_before)


def test_chat_session(snap_compare, devices, utc, tmp_path, monkeypatch):
    desktop = devices.start("desktop")
    devices.start("phone")

    async def run_before(pilot: Any) -> None:
        await wait_until(lambda: online_rows(pilot)() == 2, pilot, what="two devices online")
        connecting = devices.begin(desktop.connect_to_peer("laptop-1"))
        await wait_until(lambda: isinstance(pilot.app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        await pilot.press("a")
        connection = await asyncio.wrap_future(connecting)
        view = await wait_until(lambda: pilot.app.main.active_session, pilot, what="the session")
        await devices.wait(connection.send("Hi! Are the holiday photos on the laptop?"))
        await wait_until(lambda: len(view.query_one("RichLog").lines) >= 2, pilot, what="the first message")
        await pilot.press(*"Yes, sending them in a minute.", "enter")
        await wait_until(lambda: "minute.✓✓delivered" in chat_text(view), pilot, what="the reply delivered")
        await pilot.press(*"/help", "enter")
        await wait_until(lambda: "/helpshowsthis" in chat_text(view), pilot, what="the help")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay), terminal_size=SIZE, run_before=run_before)


def test_finished_transfer(snap_compare, devices, utc, tmp_path, monkeypatch):
    desktop = devices.start("desktop")
    downloads = tmp_path / "desktop-downloads"

    def incoming(event: Any) -> None:
        link = open_session(event.connection, downloads)
        link.transfers.events.on("incoming_transfer", lambda e: e.offer.accept(downloads))

    desktop.events.on("incoming_connection", incoming)
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(bytes(range(256)) * 20)

    async def run_before(pilot: Any) -> None:
        await wait_until(lambda: online_rows(pilot)() == 1, pilot, what="the desktop online")
        await pilot.press("enter")
        view = await wait_until(lambda: pilot.app.main.active_session, pilot, what="the session")
        await wait_until(lambda: pilot.app.focused is view.query_one(Input), pilot, what="the focus in the input")
        view.query_one(Input).value = f"/send {photo}"
        await pilot.press("enter")
        await wait_until(lambda: [row for row in view.query(TransferRow) if row.finished], pilot,
                         what="the transfer to finish")
        await wait_until(lambda: "✓sentandverified" in chat_text(view), pilot, what="the result in the chat")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay), terminal_size=SIZE, run_before=run_before)


def test_history_and_queued_messages_of_an_offline_device(snap_compare, devices, utc, tmp_path, monkeypatch):
    """The conversation with a device that is offline: yesterday's history, and what was written since, queued."""
    from peerchat.history import History, history_file

    data = tmp_path / "data"
    history = History(history_file(data, "laptop-1"))
    day = 86400
    for at, direction, kind, body, status, path, size in (
        (FIXED_TIME - day - 600, "in", "text", "Can you send me the slides for tomorrow?", "received", None, None),
        (FIXED_TIME - day - 540, "out", "text", "Sure, here they are.", "delivered", None, None),
        (FIXED_TIME - day - 530, "out", "file", "slides.pdf", "delivered", "/home/me/talks/slides.pdf", 2_411_520),
        (FIXED_TIME - day - 300, "in", "file", "notes.md", "received", "/home/me/Downloads/peerchat/notes.md", 5_120),
        (FIXED_TIME - day - 120, "in", "text", "Thanks! Got them.", "received", None, None),
        (FIXED_TIME - 900, "out", "text", "Did the talk go well?", "failed", None, None),
    ):
        history.add("desktop-1", "desktop", direction, kind, body, status, path=path, size=size, at=at)
    history.close()
    devices.start("desktop")
    devices.start("phone")

    async def run_before(pilot: Any) -> None:
        await wait_until(lambda: online_rows(pilot)() == 2, pilot, what="two devices online")
        await devices.wait(devices.managers.pop("desktop").stop())
        await wait_until(lambda: online_rows(pilot)() == 1, pilot, what="the desktop offline")
        await pilot.press("down", "enter")  # the desktop, second in the list (offline)
        view = await wait_until(lambda: pilot.app.main.active_session, pilot, what="the conversation")
        await wait_until(lambda: view.loaded, pilot, what="the history")
        view.query_one(Input).focus()
        await pilot.press(*"Call me when you are back online.", "enter")
        await wait_until(lambda: "online.◷queued" in chat_text(view), pilot, what="the queued message")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay, data_dir=data), terminal_size=SIZE,
                        run_before=run_before)


PICKER_FOLDER = Path("/tmp/peerchat-snapshot-picker")


def test_file_picker_with_a_typed_filter(snap_compare, devices, utc, tmp_path, monkeypatch):
    import shutil

    shutil.rmtree(PICKER_FOLDER, ignore_errors=True)
    (PICKER_FOLDER / "photos").mkdir(parents=True)
    for name in ("holiday.jpg", "holiday-2.jpg", "notes.txt", "report.pdf"):
        (PICKER_FOLDER / name).write_text(name)
    devices.start("desktop")

    async def run_before(pilot: Any) -> None:
        from peerchat.dialogs import FilePickerDialog
        from peerchat.dialogs.file_picker import PickerTree

        await wait_until(lambda: online_rows(pilot)() == 1, pilot, what="the desktop online")
        await pilot.press("enter")
        view = await wait_until(lambda: pilot.app.main.active_session, pilot, what="the session")
        await wait_until(lambda: not view.closed, pilot, what="the connection")
        await pilot.press("ctrl+f")
        dialog = await wait_until(lambda: isinstance(pilot.app.screen, FilePickerDialog) and pilot.app.screen,
                                  pilot, what="the picker")
        await pilot.press(*"holi")
        tree = dialog.query_one(PickerTree)
        await wait_until(lambda: len(tree.root.children) == 2, pilot, what="the filtered entries")
        await settle(pilot)

    try:
        assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay, picker_start=PICKER_FOLDER),
                            terminal_size=SIZE, run_before=run_before)
    finally:
        shutil.rmtree(PICKER_FOLDER, ignore_errors=True)


def test_closing_with_a_transfer_running_asks_first(snap_compare, devices, utc, tmp_path, monkeypatch):
    devices.start("desktop")  # it never answers the offer: the transfer stays running
    big = tmp_path / "video.mp4"
    big.write_bytes(bytes(range(256)) * 4096)

    async def run_before(pilot: Any) -> None:
        from peerchat.dialogs import ConfirmDialog

        await wait_until(lambda: online_rows(pilot)() == 1, pilot, what="the desktop online")
        await pilot.press("enter")
        view = await wait_until(lambda: pilot.app.main.active_session, pilot, what="the session")
        await wait_until(lambda: not view.closed and pilot.app.focused is view.query_one(Input), pilot,
                         what="the connection")
        view.query_one(Input).value = f"/send {big}"
        await pilot.press("enter")
        await wait_until(lambda: [row for row in view.query(TransferRow) if not row.preparing], pilot,
                         what="the offer")
        await settle(pilot)  # the "Connecting…" notification must not stay frozen behind the dialog
        await pilot.press("ctrl+w")
        await wait_until(lambda: isinstance(pilot.app.screen, ConfirmDialog), pilot, what="the question")
        await settle(pilot)

    assert snap_compare(laptop_app(tmp_path, monkeypatch, devices.relay), terminal_size=SIZE, run_before=run_before)
