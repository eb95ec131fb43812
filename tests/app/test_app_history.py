"""Pilot tests of the history, the delivery marks and the offline queue, with real managers on the emulator and
a real history file; "a restart" is a second app on the same data directory."""

from __future__ import annotations

import dataclasses
import os

from textual.widgets import Input, RichLog

from app_helpers import FAST, in_log, log_text, settings_for, wait_until
from core.events import DATA, INCOMING_CONNECTION
from peerchat.app import create_app
from peerchat.backend import open_session
from peerchat.dialogs import ConfirmDialog
from peerchat.history import History
from peerchat.widgets import DeviceList, SessionView, TransferRow


def collect_data(manager) -> list[str]:
    """Every text that reaches ``manager``'s device, in order, over any of its connections."""
    texts: list[str] = []
    manager.events.on(INCOMING_CONNECTION,
                      lambda event: event.connection.events.on(DATA, lambda data: texts.append(data.data)))
    return texts


async def open_desktop(app, pilot) -> SessionView:
    devices = app.main.query_one(DeviceList)
    await wait_until(lambda: devices.row_count >= 1, pilot, what="the desktop in the list")
    await pilot.press("enter")
    view = await wait_until(lambda: app.main.active_session, pilot, what="the conversation tab")
    await wait_until(lambda: app.focused is view.query_one(Input), pilot, what="the focus in the input")
    return view


async def test_the_conversation_is_there_after_a_restart_with_its_marks(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    received = collect_data(desktop)
    remote = []
    desktop.events.on(INCOMING_CONNECTION, lambda event: remote.append(event.connection))
    settings = settings_for("laptop", tmp_path)
    app = create_app(settings, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        await pilot.press(*"first message", "enter")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("you  first message  ✓✓ delivered", chat), pilot, what="the delivered mark")
        assert received == ["first message"]
        connection = (await wait_until(lambda: remote, what="the desktop's connection"))[0]
        await connection.send("an answer")
        await wait_until(lambda: in_log("desktop  an answer", chat), pilot, what="the answer")

    # The desktop is gone now; a new app on the same data directory shows the conversation at once.
    await desktop.stop()
    app = create_app(settings, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count >= 1, pilot, what="the desktop, offline, in the list")
        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the conversation tab")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("desktop  an answer", chat), pilot, what="the history")
        text = log_text(chat)
        assert text.index("first message  ✓✓ delivered") < text.index("an answer")
        assert view.closed

        # The command palette finds it among every conversation.
        await pilot.press("ctrl+d", "ctrl+p")
        await pilot.press(*"answer")
        from textual.command import CommandPalette
        palette = await wait_until(lambda: isinstance(app.screen, CommandPalette) and app.screen, pilot,
                                   what="the palette")
        from textual.command import CommandList
        options = palette.query_one(CommandList)
        await wait_until(lambda: options.option_count and "an answer" in str(options.get_option_at_index(0).prompt),
                         pilot, what="the history hit")
        await pilot.press("escape")


async def test_scrolling_up_loads_older_messages(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    await make_manager("desktop")
    settings = settings_for("laptop", tmp_path)
    history = History(settings.history_path)
    for n in range(130):
        history.add("desktop-id", "desktop", "in", "text", f"old message {n}", "received", at=1_700_000_000 + n)
    history.close()
    app = create_app(settings, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("old message 129", chat), pilot, what="the newest page")
        assert "old message 79" not in log_text(chat)
        assert in_log("old message 80", chat)
        chat.scroll_home(animate=False)
        await wait_until(lambda: in_log("old message 30", chat), pilot, what="the page before")
        assert "old message 29" not in log_text(chat)
        assert chat.scroll_y > 0  # the view stays on what was at the top
        chat.scroll_home(animate=False)
        await wait_until(lambda: in_log("old message 0", chat), pilot, what="the oldest page")


async def test_messages_to_an_offline_device_wait_across_a_restart_and_go_in_order(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    settings = settings_for("laptop", tmp_path)
    app = create_app(settings, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        devices = app.main.query_one(DeviceList)
        await wait_until(lambda: devices.row_count >= 1, pilot, what="the desktop in the list")
        await desktop.stop()
        await wait_until(lambda: not app._directory.is_online("desktop-id"), pilot, what="the desktop offline")
        await pilot.press("enter")
        view = await wait_until(lambda: app.main.active_session, pilot, what="the conversation tab")
        await wait_until(lambda: view.loaded, pilot, what="the history")
        view.query_one(Input).focus()
        await pilot.press(*"one", "enter", *"two", "enter")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("you  two  ◷ queued", chat), pilot, what="the queued marks")
        assert in_log("you  one  ◷ queued", chat)

    # Start again: the queue is still there, and goes out in order once the desktop is online.
    app = create_app(settings, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await wait_until(lambda: app.main.view_for("desktop-id"), pilot, what="the restored conversation")
        await wait_until(lambda: view.loaded, pilot, what="its history")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("you  two  ◷ queued", chat), pilot, what="the queue after the restart")
        desktop = await make_manager("desktop")
        received = collect_data(desktop)
        await wait_until(lambda: received == ["one", "two"], what="both messages, in order, at the desktop",
                         timeout=30)
        await wait_until(lambda: in_log("you  two  ✓✓ delivered", chat), pilot, what="the delivered marks")
        assert in_log("you  one  ✓✓ delivered", chat)
        assert History(settings.history_path).queued() == []


async def test_a_message_the_link_refuses_is_marked_failed_and_can_be_retried(make_manager, tmp_path):
    laptop = await make_manager("laptop", options=dataclasses.replace(FAST, max_message_bytes=100))
    await make_manager("desktop")
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        await wait_until(lambda: not view.closed, pilot, what="the session")
        view.query_one(Input).value = "x" * 150
        await pilot.press("enter")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("✗ failed, Ctrl+R retries", chat), pilot, what="the failed mark")
        failures = sum("Sending to desktop failed" in n.message for n in app._notifications)
        assert failures == 1
        await pilot.press("ctrl+r")  # still too long: it fails again, and says so again
        await wait_until(lambda: sum("Sending to desktop failed" in n.message for n in app._notifications) == 2,
                         pilot, what="the second attempt")
        await pilot.press(*"/retry", "enter")
        await wait_until(lambda: sum("Sending to desktop failed" in n.message for n in app._notifications) == 3,
                         pilot, what="the third attempt")


async def test_closing_a_tab_with_a_running_transfer_asks_first(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    desktop = await make_manager("desktop")
    remote = []
    desktop.events.on(INCOMING_CONNECTION, lambda e: remote.append(open_session(e.connection, tmp_path / "dl")))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024))
    app = create_app(settings_for("laptop", tmp_path), manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        await wait_until(lambda: not view.closed, pilot, what="the session")
        view.query_one(Input).value = f"/send {big}"
        await pilot.press("enter")
        row = await wait_until(lambda: next(iter(view.query(TransferRow)), None), pilot, what="the transfer row")
        await wait_until(lambda: not row.preparing, pilot, what="the offer")  # the desktop never answers it

        await pilot.press("ctrl+w")
        await wait_until(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="the question")
        await pilot.press("n")
        await wait_until(lambda: not isinstance(app.screen, ConfirmDialog), pilot, what="the dialog to go")
        assert app.main.sessions() == [view] and not view.closed

        await pilot.press("ctrl+w")
        await wait_until(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="the question again")
        await pilot.press("y")
        await wait_until(lambda: app.main.sessions() == [], pilot, what="the tab to close")
        link = remote[0]
        await wait_until(lambda: link.connection.is_closed, what="the desktop to see the close")


async def test_history_off_keeps_nothing_on_disk_and_clear_history_forgets(make_manager, tmp_path):
    laptop = await make_manager("laptop")
    await make_manager("desktop")
    off = settings_for("laptop", tmp_path, history=False)
    app = create_app(off, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        await pilot.press(*"not kept", "enter")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("you  not kept  ✓✓ delivered", chat), pilot, what="the message delivered")
        assert not app.history.persistent
    assert off.history_path is None
    assert not (tmp_path / "laptop-data").exists()

    on = settings_for("laptop", tmp_path)
    app = create_app(on, manager=laptop)
    async with app.run_test(size=(120, 36)) as pilot:
        view = await open_desktop(app, pilot)
        await pilot.press(*"kept for now", "enter")
        chat = view.query_one(RichLog)
        await wait_until(lambda: in_log("you  kept for now  ✓✓ delivered", chat), pilot, what="the message delivered")
        assert [e.body for e in History(on.history_path).page("desktop-id")] == ["kept for now"]
        app.action_clear_history()
        await wait_until(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="the question")
        await pilot.press("y")
        await wait_until(lambda: in_log("History cleared.", chat), pilot, what="the cleared conversation")
        assert "kept for now" not in log_text(chat)
        assert History(on.history_path).page("desktop-id") == []
