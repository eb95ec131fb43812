"""Pilot tests of the app's flows with two real managers on the emulator: the app drives one device, the test the
other."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from textual.widgets import Input, RichLog, Static

from core.errors import ConnectionDeclinedError
from core.events import CLOSED, DATA, INCOMING_CONNECTION
from peerchat.app import create_app
from peerchat.dialogs import IncomingConnectionDialog, VerifyDeviceDialog
from peerchat.widgets import DeviceList, SessionView

from app_helpers import log_text, settings_for, wait_until


def collect(emitter, name: str) -> list:
    items: list = []
    emitter.on(name, items.append)
    return items


async def test_connect_from_the_device_list_and_chat_both_ways(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    incoming = collect(desktop.events, INCOMING_CONNECTION)
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count == 1, pilot, what="desktop in the device list")
        assert devices.selected_peer.label == "desktop"
        assert "● online via" in str(app.main.query_one("#relay", Static).render())

        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the session tab")
        await wait_until(lambda: view.connection is not None, pilot, what="the connection in the tab")
        assert view.connection.peer.label == "desktop"
        assert "RELAY" in str(view.query_one(".status", Static).render())
        assert app.focused is view.query_one(Input)
        remote = (await wait_until(lambda: incoming, what="the desktop's incoming connection"))[0].connection
        received = collect(remote.events, DATA)

        await pilot.press(*"hello desktop", "enter")
        await wait_until(lambda: received, what="the message at the desktop")
        assert received[0].data == "hello desktop"
        chat = view.query_one(RichLog)
        assert "you  hello desktop" in log_text(chat)

        await remote.send("hi laptop")
        await wait_until(lambda: "desktop  hi laptop" in log_text(chat), pilot, what="the reply in the chat")

        # A second Enter on the same device returns to the open session instead of connecting again.
        await pilot.press("ctrl+d", "enter")
        assert len(app.main.sessions()) == 1

        # The desktop closes: the status line says so, and what is typed now is queued for the next session.
        await remote.disconnect()
        await wait_until(lambda: view.closed, pilot, what="the session to show closed")
        assert "the other device closed it" in str(view.query_one(".status", Static).render())
        assert "queued until it is connected" in view.query_one(Input).placeholder


async def test_incoming_connection_accepted(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: app.manager is not None, pilot, what="the app's manager")
        # connect_to_peer returns only once the person accepted: nothing can be sent before.
        connecting = asyncio.ensure_future(desktop.connect_to_peer("laptop-id"))
        dialog = await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog) and app.screen, pilot,
                                  what="the incoming connection dialog")
        assert dialog.peer.label == "desktop" and dialog.trust == "new"
        assert dialog.fingerprint == desktop.fingerprint
        assert dialog.code == desktop.comparison_code(laptop.public_key)
        assert not connecting.done() and laptop.connections == ()
        await pilot.press("a")
        connection = await asyncio.wait_for(connecting, 10)
        view = await wait_until(lambda: app.main.active_session, pilot, what="the accepted session")
        await connection.send("are you there?")
        chat = view.query_one(RichLog)
        await wait_until(lambda: "desktop  are you there?" in log_text(chat), pilot, what="the message")
        received = collect(connection.events, DATA)
        await pilot.press(*"yes", "enter")
        await wait_until(lambda: received, what="the answer at the desktop")
        assert received[0].data == "yes"
        assert laptop.trust_of("desktop-id") == "trusted"

        # Ctrl+W closes the session on both sides.
        closed = collect(connection.events, CLOSED)
        await pilot.press("ctrl+w")
        await wait_until(lambda: closed, what="the desktop to see the close")
        assert closed[0].reason == "peer-requested-closed"
        assert app.main.sessions() == []

        # A known device is not asked about again (the default asks about new devices only).
        again = await asyncio.wait_for(desktop.connect_to_peer("laptop-id"), 10)
        await wait_until(lambda: app.main.active_session, pilot, what="the second session, unasked")
        await again.disconnect()


async def test_verifying_from_the_dialog_marks_the_device_verified(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: app.manager is not None, pilot, what="the app's manager")
        connecting = asyncio.ensure_future(desktop.connect_to_peer("laptop-id"))
        await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        await pilot.press("v")
        connection = await asyncio.wait_for(connecting, 10)
        assert laptop.trust_of("desktop-id") == "verified"
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices._rows["desktop-id"].trust == "verified", pilot,
                         what="the trust in the device list")
        await connection.disconnect()


async def test_a_request_its_sender_abandons_disappears(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: app.manager is not None, pilot, what="the app's manager")
        connecting = asyncio.ensure_future(desktop.connect_to_peer("laptop-id"))
        await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await wait_until(lambda: not isinstance(app.screen, IncomingConnectionDialog), pilot,
                         what="the dialog to go away")
        await wait_until(lambda: any("stopped waiting" in n.message for n in app._notifications), pilot,
                         what="the notification")
        assert app.main.sessions() == [] and laptop.connections == ()


async def test_incoming_connection_declined(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: app.manager is not None, pilot, what="the app's manager")
        connecting = asyncio.ensure_future(desktop.connect_to_peer("laptop-id"))
        await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        await pilot.press("d")
        with pytest.raises(ConnectionDeclinedError) as info:
            await asyncio.wait_for(connecting, 10)
        assert str(info.value) == "laptop declined the connection."
        assert app.main.sessions() == []
        assert not isinstance(app.screen, IncomingConnectionDialog)
        assert laptop.trust_of("desktop-id") == "new"


async def test_the_initiators_tab_says_the_other_device_declined(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    desktop.events.on(INCOMING_CONNECTION, lambda event: asyncio.ensure_future(event.connection.decline()))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count == 1, pilot, what="desktop in the device list")
        await pilot.press("enter")
        view: SessionView = await wait_until(lambda: app.main.active_session, pilot, what="the session tab")
        await wait_until(lambda: "desktop declined the session" in str(view.query_one(".status", Static).render()),
                         pilot, what="the session to show declined")
        assert view.closed
        assert any("desktop declined the session" in n.message for n in app._notifications)
        assert "queued until it is connected" in view.query_one(Input).placeholder


async def test_typed_command_errors_are_explained(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count == 1, pilot, what="desktop in the device list")
        await pilot.press("enter")
        view: SessionView = await wait_until(lambda: app.main.active_session, pilot, what="the session")
        message = view.query_one(Input)
        await pilot.press(*"/frobnicate", "enter")
        assert message.value == "/frobnicate"  # kept, to be corrected
        message.value = f"/send {tmp_path / 'nope.txt'}"  # pilot.press reads "_" as a pause
        await pilot.press("enter")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("unknown command /frobnicate" in m for m in messages)
        assert any("nope.txt does not exist. Check the path." in m for m in messages)
        assert message.value == f"/send {tmp_path / 'nope.txt'}"

        # A path with a space: unquoted it is two paths, and the error says to quote it; quoted it is sent.
        spaced = tmp_path / "my notes.txt"
        spaced.write_text("hello")
        message.value = f"/send {spaced}"
        await pilot.press("enter")
        await pilot.pause()
        assert any('Quote a path with spaces: /send "my file.txt"' in n.message for n in app._notifications)
        assert message.value == f"/send {spaced}"
        message.value = f'/send "{spaced}"'
        await pilot.press("enter")
        await wait_until(lambda: message.value == "", pilot, what="the input cleared once sent")
        from peerchat.widgets import TransferRow
        row = await wait_until(lambda: next(iter(view.query(TransferRow)), None), pilot, what="the transfer row")
        assert row.file_name == "my notes.txt"


async def test_verify_and_forget_a_device_from_the_command_palette(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count == 1 and devices._rows["desktop-id"].trust == "new", pilot,
                         what="desktop, new, in the device list")
        app.verify_device(devices.selected_peer)
        dialog = await wait_until(lambda: isinstance(app.screen, VerifyDeviceDialog) and app.screen, pilot,
                                  what="the verify dialog")
        assert dialog.code == desktop.comparison_code(laptop.public_key)  # what the desktop shows
        assert dialog.fingerprint == desktop.fingerprint and dialog.own_fingerprint == laptop.fingerprint
        await pilot.press("a")
        await wait_until(lambda: devices._rows["desktop-id"].trust == "verified", pilot, what="verified in the list")
        assert laptop.trust_of("desktop-id") == "verified"
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Forget the key of desktop" in commands and "Verify desktop" not in commands
        app.forget_device(devices.selected_peer)
        await wait_until(lambda: devices._rows["desktop-id"].trust == "new", pilot, what="new again")


async def test_a_changed_key_is_said_and_shown(make_manager, tmp_path):
    from core import MemoryKeyStore

    laptop = await make_manager("laptop")
    laptop.keys.remember("desktop-id", MemoryKeyStore().identity().public_text, "desktop")
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count == 1 and devices._rows["desktop-id"].trust == "key-changed",
                         pilot, what="desktop shown with a changed key")
        assert devices.get_cell("desktop-id", "trust").plain == "CHANGED"
        with pytest.raises(ConnectionDeclinedError, match="remembers another key"):
            await desktop.connect_to_peer("laptop-id")
        await wait_until(lambda: any("showed another key" in n.message for n in app._notifications), pilot,
                         what="the key-changed notification")


async def test_a_restarted_device_gets_the_same_tab_and_the_list_marks_open_sessions(make_manager, tmp_path):
    from core import MemoryKeyStore

    keys = MemoryKeyStore()  # the desktop keeps its identity across the restart, as on disk
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop", keys=keys)
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: app.manager is not None, pilot, what="the app's manager")
        connecting = asyncio.ensure_future(desktop.connect_to_peer("laptop-id"))
        await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog), pilot, what="the dialog")
        await pilot.press("a")
        first = await asyncio.wait_for(connecting, 10)
        view = await wait_until(lambda: app.main.active_session, pilot, what="the tab")
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: "desktop-id" in devices.connected, pilot, what="the desktop marked in the list")
        await first.send("before the restart")
        chat = view.query_one(RichLog)
        await wait_until(lambda: "desktop  before the restart" in log_text(chat), pilot, what="the first message")

        # The desktop restarts and connects again (known now: not asked about again).
        await desktop.stop()
        desktop = await make_manager("desktop", keys=keys)
        second = await asyncio.wait_for(desktop.connect_to_peer("laptop-id"), 10)
        await wait_until(lambda: view.connection is not None and view.connection.session_id == second.session_id,
                         pilot, what="the new connection in the same tab")
        assert app.main.sessions() == [view]
        await second.send("after the restart")
        await wait_until(lambda: "desktop  after the restart" in log_text(chat), pilot, what="the second message")
        assert "desktop  before the restart" in log_text(chat)

        await pilot.press("ctrl+w")
        await wait_until(lambda: "desktop-id" not in devices.connected, pilot, what="the mark gone")


async def test_every_footer_binding_is_in_the_command_palette(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        titles = [command.title for command in app.get_system_commands(app.main)]
        for binding in app.main.BINDINGS:
            key = binding.key.replace("ctrl+", "Ctrl+").upper().replace("CTRL+", "Ctrl+")
            assert any(f"({key})" in title for title in titles), (binding, titles)
