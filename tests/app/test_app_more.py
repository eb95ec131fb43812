"""Pilot tests of the remaining flows: the command palette, the file picker, cancelling a transfer, and connecting to a
device that went offline."""

from __future__ import annotations

import dataclasses
import os
import time

from textual.widgets import DirectoryTree, Input, RichLog, TabbedContent

from app_helpers import FAST, in_log, settings_for, wait_until
from core.errors import TransferCancelledError
from core.events import INCOMING_CONNECTION
from peerchat.app import create_app
from peerchat.backend import open_session
from peerchat.dialogs import FilePickerDialog
from peerchat.widgets import DeviceList, TransferRow


def rows(app) -> list:
    return app.main.query_one(DeviceList)._rows


async def test_connect_from_the_command_palette(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: rows(app), pilot, what="the desktop in the list")
        await pilot.press("ctrl+p")
        await pilot.press(*"connect to desktop")
        await pilot.pause(0.5)
        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the session")
        await wait_until(lambda: view.connection is not None, pilot, what="the connection in the tab")
        assert view.connection.peer.label == "desktop"
        # Again: the open session is shown, not a second one opened.
        await pilot.press("ctrl+d", "ctrl+p")
        await pilot.press(*"connect to desktop")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(lambda: app.focused is view.query_one(Input), pilot, what="the session's input focused")
        await pilot.pause(0.5)
        assert app.main.sessions() == [view]
        assert len(laptop.connections) == 1


async def test_an_offline_device_shows_its_conversation_and_says_messages_are_queued(make_manager, tmp_path):
    laptop = await make_manager("laptop", options=dataclasses.replace(FAST, heartbeat_interval=1.0))
    desktop = await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: rows(app), pilot, what="the desktop in the list")
        await desktop.stop()
        await wait_until(lambda: not rows(app)["desktop-id"].online, pilot, what="the desktop offline")
        await pilot.press("enter")
        await pilot.pause()
        view = await wait_until(lambda: app.main.active_session, pilot, what="the conversation tab")
        assert view.closed and view.peer.id == "desktop-id"
        assert len(laptop.connections) == 0
        assert any("desktop is offline: what you write is queued" in n.message for n in app._notifications)


async def test_send_from_the_file_picker_and_cancel(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    remote = []
    desktop.events.on(INCOMING_CONNECTION, lambda e: remote.append(open_session(e.connection, tmp_path / "dl")))
    folder = tmp_path / "pick"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop, picker_start=folder)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: rows(app), pilot, what="the desktop in the list")
        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the session")
        await wait_until(lambda: app.focused is view.query_one(Input), pilot, what="the focus in the input")
        link = (await wait_until(lambda: remote, what="the desktop's session"))[0]
        failed = []
        link.transfers.events.on("transfer_failed", failed.append)

        await pilot.press("ctrl+f")
        dialog = await wait_until(lambda: isinstance(app.screen, FilePickerDialog) and app.screen, pilot,
                                  what="the file picker")
        tree = dialog.query_one(DirectoryTree)
        await wait_until(lambda: tree.root.children, pilot, what="the folder's files")
        await pilot.press("tab", "down", "enter")
        row = await wait_until(lambda: next(iter(view.query(TransferRow)), None), pilot, what="the transfer row")
        assert row.file_name == "big.bin"
        await wait_until(lambda: not row.preparing, pilot, what="the offer to be made")

        # The desktop never answers the offer; Ctrl+X cancels it on both sides.
        await pilot.press("ctrl+x")
        await wait_until(lambda: row.finished, pilot, what="the row to end")
        assert row.has_class("failed")
        await wait_until(lambda: failed, what="the desktop to see the cancel")
        assert isinstance(failed[0].error, TransferCancelledError)
        await pilot.press("ctrl+x")
        assert any("No transfer is running" in n.message for n in app._notifications)
        await link.close()


async def test_two_sessions_in_tabs_each_with_its_own_conversation(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    received: dict[str, list[str]] = {"desktop": [], "phone": []}
    remotes: dict[str, list] = {"desktop": [], "phone": []}

    def incoming(event, label: str) -> None:
        remotes[label].append(event.connection)
        event.connection.events.on("data", lambda d: received[label].append(d.data))

    for label in received:
        manager = await make_manager(label)
        manager.events.on(INCOMING_CONNECTION, lambda e, label=label: incoming(e, label))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: len(rows(app)) == 2, pilot, what="both devices in the list")
        devices = app.main.query_one(DeviceList)
        for label in ("desktop", "phone"):
            await pilot.press("ctrl+d")
            while devices.selected_peer.label != label:
                await pilot.press("down")
            await pilot.press("enter")
            view = await wait_until(lambda: app.main.active_session is not None
                                    and app.main.active_session.peer_label == label and app.main.active_session,
                                    pilot, what=f"the {label} tab")
            await wait_until(lambda: app.focused is view.query_one(Input), pilot, what="the focus in the input")
            await pilot.press(*f"hi {label}", "enter")
        assert [v.peer_label for v in app.main.sessions()] == ["desktop", "phone"]
        # A message in the tab that is not shown marks it until it is shown.
        await remotes["desktop"][0].send("ping")
        tabs = app.main.query_one(TabbedContent)
        desktop_tab = tabs.get_tab(app.main.sessions()[0].parent.id)
        await wait_until(lambda: desktop_tab.has_class("unread"), pilot, what="the desktop tab marked")
        assert str(desktop_tab.label) == "desktop ●"
        await pilot.press("ctrl+t")
        assert not desktop_tab.has_class("unread") and str(desktop_tab.label) == "desktop"
        assert app.main.active_session.peer_label == "desktop"
        await pilot.press(*"again", "enter")
        await wait_until(lambda: received["desktop"] == ["hi desktop", "again"] and received["phone"] == ["hi phone"],
                         pilot, what="each message at its device")


async def test_a_device_offline_before_the_app_started_shows_when_it_was_last_seen(make_manager, tmp_path):
    tablet = await make_manager("tablet")
    await tablet.stop()
    laptop = await make_manager("laptop")
    # The app's clock runs ten minutes ahead, so the tablet's last heartbeat was ten minutes ago for it.
    app = create_app(settings_for("laptop", tmp_path), manager=laptop, clock=lambda: time.time() + 600)
    async with app.run_test(size=(120, 36)) as pilot:
        row = await wait_until(lambda: rows(app).get("tablet-id"), pilot, what="the tablet in the list")
        assert not row.online and row.last_seen is not None
        devices = app.main.query_one(DeviceList)
        assert devices.get_cell("tablet-id", "seen").plain == "10 min ago"


async def test_a_narrow_terminal_leaves_the_ids_out_of_the_device_list(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(80, 24)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: rows(app), pilot, what="the desktop in the list")
        assert [str(c.label) for c in devices.ordered_columns] == [" ", "Device", "Seen", "Trust"]
        assert devices.get_row("desktop-id")[2].plain == "online"
        assert devices.get_row("desktop-id")[3].plain == "new"
        await wait_until(lambda: app.main.query_one("#sidebar").outer_size.width == 41, pilot, what="a narrow sidebar")
        await pilot.resize_terminal(120, 30)
        await wait_until(lambda: len(devices.ordered_columns) == 5, pilot, what="the ID column back")
        assert devices.get_cell("desktop-id", "id").plain == "desktop-id"
        assert devices.selected_peer is not None and devices.selected_peer.id == "desktop-id"


async def test_a_huge_file_is_offered_at_once_and_can_be_cancelled(make_manager, tmp_path):
    """Nothing is hashed before the offer: an 8 GiB file is offered as soon as it is chosen (its SHA-256 is taken
    while it is sent), and Ctrl+X cancels the transfer on both devices."""
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    remote = []
    desktop.events.on(INCOMING_CONNECTION, lambda e: remote.append(open_session(e.connection, tmp_path / "dl")))
    big = tmp_path / "huge.img"
    with big.open("wb") as f:
        f.truncate(8 * 1024 * 1024 * 1024)  # sparse: hashing all of it first would take a long while
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: rows(app), pilot, what="the desktop in the list")
        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the session")
        await wait_until(lambda: not view.closed, pilot, what="the connection")
        view.query_one(Input).value = f"/send {big}"
        await pilot.press("enter")
        row = await wait_until(lambda: next(iter(view.query(TransferRow)), None), pilot, what="the row")
        stats = row.query_one(".transfer-stats")
        await wait_until(lambda: remote and remote[0].transfers.transfers, pilot, what="the offer on the desktop")
        await wait_until(lambda: not row.preparing, pilot, what="the row to show the offer")
        assert "8.0 GiB" in str(stats.render()) and "SHA-256" not in str(stats.render())
        (incoming,) = remote[0].transfers.transfers.values()
        await pilot.press("ctrl+x")
        await wait_until(lambda: row.finished, pilot, what="the row to end")
        assert "failed" in str(stats.render())
        assert in_log("huge.img", view.query_one(RichLog))
        await wait_until(lambda: incoming.state.value == "failed", pilot, what="the desktop to hear of the cancel")
        assert isinstance(incoming.error, TransferCancelledError)
