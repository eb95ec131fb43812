"""Pilot tests of what the app shows about the link: WebRTC, a warning with its reason, and a file transfer."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid

import firebase_admin
from google.auth.credentials import AnonymousCredentials
from textual.widgets import Input, ProgressBar, RichLog, Static

from app_helpers import FAST, USER, in_log, log_text, settings_for, wait_until
from core import FirebasePeerConnectionManager, ManagerOptions, PeerInfo, webrtc_upgrader
from emulator import Emulator
from core.events import INCOMING_CONNECTION
from peerchat.app import create_app
from peerchat.backend import open_session
from peerchat.dialogs import IncomingFilesDialog
from peerchat.widgets import DeviceList, TransferRow



def status_text(view) -> str:
    return str(view.query_one(".status", Static).render())


async def open_from_list(app, pilot):
    devices = app.main.query_one(DeviceList)
    await wait_until(lambda: devices.row_count >= 1, pilot, what="a device in the list")
    await pilot.press("enter")
    view = await wait_until(lambda: app.main.active_session, pilot, what="the session tab")
    await wait_until(lambda: app.focused is view.query_one(Input), pilot, what="the focus in the message input")
    return view


async def test_webrtc_link_is_shown(make_manager, tmp_path):
    webrtc = dataclasses.replace(FAST, webrtc=True, upgrade_timeout=10.0)
    laptop = await make_manager("laptop", options=webrtc)
    await make_manager("desktop", options=webrtc)
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_from_list(app, pilot)
        await wait_until(lambda: "WEBRTC" in status_text(view), pilot, what="the WebRTC link in the status line")
        assert view.has_class("webrtc")
        # How it got through: both devices on this machine, so between host addresses.
        assert "WEBRTC via host" in status_text(view)


async def test_a_broken_webrtc_link_falls_back_to_the_relay_with_its_reason_then_upgrades_again(make_manager,
                                                                                                  tmp_path):
    options = dataclasses.replace(FAST, webrtc=True, upgrade_timeout=10.0, reupgrade_interval=1.0)
    link_options = {"host_addresses": ("127.0.0.1",), "keepalive_interval": 0.2, "idle_timeout": 1.5}
    laptop = await make_manager("laptop", options=options, upgrader=webrtc_upgrader(options, **link_options))
    desktop = await make_manager("desktop", options=options, upgrader=webrtc_upgrader(options, **link_options))
    received: list[str] = []
    desktop.events.on(INCOMING_CONNECTION,
                      lambda e: e.connection.events.on("data", lambda data: received.append(data.data)))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_from_list(app, pilot)
        await wait_until(lambda: "WEBRTC" in status_text(view), pilot, what="the WebRTC link in the status line")
        # Every status line the session shows, in order (the relay spell may be short: none may be missed).
        shown: list[str] = []
        refresh = view.refresh_status

        def recording_refresh() -> None:
            refresh()
            shown.append(status_text(view))

        view.refresh_status = recording_refresh  # type: ignore[method-assign]
        # Tear down this side's aiortc transport, as a network failure would (reaching into core: tests only).
        await view.connection._link.link.peer_connection.sctp.transport.transport.stop()
        fallback = await wait_until(lambda: next((t for t in shown if "RELAY" in t), None), pilot,
                                    what="the relay in the status line")
        assert "fell back to the relay: " in fallback
        reason = fallback.split("fell back to the relay: ", 1)[1].strip()
        assert reason, fallback
        assert in_log(f"Fell back to the relay ({reason})", view.query_one(RichLog))
        await wait_until(lambda: "WEBRTC" in status_text(view), pilot, what="WebRTC again after the re-upgrade")
        assert "fell back" not in status_text(view)
        assert "WEBRTC via host" in status_text(view)  # the new link's route, from its link_changed event
        assert view.has_class("webrtc")
        # Messages still flow over the new link.
        await pilot.press(*"still there?", "enter")
        await wait_until(lambda: received == ["still there?"], pilot, what="the message at the desktop")


async def test_upgrade_declined_by_the_other_device_is_explained(make_manager, tmp_path):
    laptop = await make_manager("laptop", options=dataclasses.replace(FAST, webrtc=True))
    await make_manager("desktop", options=FAST)  # WebRTC off there
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_from_list(app, pilot)
        await wait_until(lambda: "turned off on the other device" in status_text(view), pilot,
                         what="the reason in the status line")
        assert "RELAY" in status_text(view)


async def test_relay_outage_shows_a_warning_with_its_reason_then_clears(tmp_path):
    options = dataclasses.replace(FAST, ping_interval=0.2, slow_after=0.6, peer_timeout=60.0, ack_timeout=60.0,
                                  listener_silence_timeout=60.0)
    namespace = f"app-{uuid.uuid4().hex[:12]}"
    apps: list[firebase_admin.App] = []
    managers: list[FirebasePeerConnectionManager] = []
    async with Emulator() as emulator:
        try:
            for label in ("laptop", "desktop"):
                fb = firebase_admin.initialize_app(
                    AnonymousCredentials(),
                    {"databaseURL": emulator.database_url(namespace), "databaseAuthVariableOverride": {"uid": USER}},
                    name=f"outage-{label}-{uuid.uuid4().hex}",
                )
                apps.append(fb)
                manager = FirebasePeerConnectionManager(USER, PeerInfo(f"{label}-id", label), app=fb,
                                                        options=options)
                await manager.start()
                managers.append(manager)
            app = create_app(settings_for("laptop", tmp_path), manager=managers[0])
            async with app.run_test(size=(120, 36)) as pilot:
                view = await open_from_list(app, pilot)
                await emulator.stop()
                await wait_until(lambda: "⚠ slow:" in status_text(view), pilot, what="a slowness warning")
                assert view.has_class("warning")
                await emulator.start()
                await wait_until(lambda: "⚠" not in status_text(view), pilot, timeout=60,
                                 what="the warning to clear after the relay came back")
        finally:
            for manager in reversed(managers):
                await manager.stop()
            for fb in apps:
                firebase_admin.delete_app(fb)


async def test_send_a_file_with_progress_and_receive_one_after_accepting(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    sessions = []
    desktop_downloads = tmp_path / "desktop-downloads"
    desktop_downloads.mkdir()
    desktop.events.on(INCOMING_CONNECTION, lambda e: sessions.append(open_session(e.connection, desktop_downloads)))
    outgoing = tmp_path / "report.bin"
    outgoing.write_bytes(os.urandom(300_000))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_from_list(app, pilot)
        link = (await wait_until(lambda: sessions, what="the desktop's session"))[0]
        offers = []

        async def accept(event):
            offers.append(event.offer)
            await event.offer.accept(desktop_downloads)

        link.transfers.events.on("incoming_transfer", accept)

        # Send by typed path.
        view.query_one(Input).value = f"/send {outgoing}"
        await pilot.press("enter")
        row = await wait_until(lambda: view.query(TransferRow).first() if view.query(TransferRow) else None,
                               pilot, what="the transfer row")
        await wait_until(lambda: row.finished, pilot, what="the transfer to finish")
        assert row.has_class("done")
        assert row.query_one(ProgressBar).percentage == 1.0
        assert (desktop_downloads / "report.bin").read_bytes() == outgoing.read_bytes()
        await wait_until(lambda: in_log("✓ sent and verified: report.bin (293.0 KiB)", view.query_one(RichLog)),
                         pilot, what="the delivery line")

        # Receive: the dialog asks first, then the file is saved where the chat says.
        incoming = tmp_path / "photo.jpg"
        incoming.write_bytes(os.urandom(5000))
        await link.transfers.send_files([incoming])
        dialog = await wait_until(lambda: isinstance(app.screen, IncomingFilesDialog) and app.screen, pilot,
                                  what="the incoming files dialog")
        assert dialog.files == [("photo.jpg", 5000)]
        await pilot.press("a")
        saved = app.settings.download_dir / "photo.jpg"
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log(f"✓ received: photo.jpg (4.9 KiB), saved to {saved}", chat), pilot, what="the saved line")
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(incoming.read_bytes()).digest()

        # Declined: each side says so once, in words for its person.
        failed = []
        link.transfers.events.on("transfer_failed", failed.append)
        other = tmp_path / "other.jpg"
        other.write_bytes(b"x" * 100)
        app.clear_notifications()
        await link.transfers.send_files([other])
        await wait_until(lambda: isinstance(app.screen, IncomingFilesDialog), pilot, what="the dialog again")
        await pilot.press("d")
        await wait_until(lambda: failed, what="the desktop to see the decline")
        assert str(failed[0].error) == "The other device declined the files."
        from peerchat.backend import describe_error
        assert describe_error("Sending", failed[0].error) == "Sending failed: The other device declined the files."
        await wait_until(lambda: in_log("Declined 1 file(s) from desktop.", chat), pilot, what="the declined line")
        await pilot.pause(0.2)
        assert "declined the files" not in log_text(chat)
        assert not [n for n in app._notifications if n.severity == "error"]
        await link.close()
