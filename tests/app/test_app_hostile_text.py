"""Text from another device (its label, the names of the files it offers, its messages) is shown literally in every
widget, notification and dialog: Rich markup is never interpreted, escape sequences and control characters never
reach the terminal. A hostile device of the same user, driven by the test, against the app on the laptop."""

from __future__ import annotations

import asyncio
import dataclasses

from textual.content import Content
from textual.widgets import Label, RichLog, Static, Tab

from app_helpers import FAST, USER, in_log, log_text, settings_for, wait_until
from core import FirebasePeerConnectionManager, PeerInfo
import core.files.transfers as transfers_module
from core.files import FileTransfers
from peerchat.app import create_app
from peerchat.dialogs import IncomingConnectionDialog
from peerchat.dialogs.incoming_files import IncomingFilesDialog
from peerchat.widgets import DeviceList
from peerchat.widgets.transfers import TransferRow

HOSTILE = "[/]ev[link=https://example.invalid]il[/link]\x1b[2J\x07\u202e[$accent]x"
# How it must look: the brackets as they are, each control or bidi character as a visible escape.
SHOWN = "[/]ev[link=https://example.invalid]il[/link]\\x1b[2J\\x07\\u202e[$accent]x"
FILE_NAME = "[red]f[/red]\x1b]8;;https://example.invalid\x07.txt"
FILE_SHOWN = "[red]f[/red]\\x1b]8;;https://example.invalid\\x07.txt"
MESSAGE = "[b]hi[/b] \x1b[31mred"
MESSAGE_SHOWN = "[b]hi[/b] \\x1b[31mred"


def plain(widget) -> str:
    rendered = widget.render()
    return getattr(rendered, "plain", None) or str(rendered)


def assert_clean(text: str) -> None:
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in text), repr(text)


async def test_a_hostile_label_file_name_and_message_are_shown_literally(firebase_app_factory, make_manager,
                                                                        tmp_path, monkeypatch):
    laptop = await make_manager("laptop")
    evil = FirebasePeerConnectionManager(USER, PeerInfo("evil-id", HOSTILE), options=FAST,
                                         app=firebase_app_factory.make({"uid": USER}))
    await evil.start()
    settings = settings_for("laptop", tmp_path)
    app = create_app(settings, manager=laptop)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            devices = app.main.query_one(DeviceList)
            await wait_until(lambda: devices.row_count == 1, pilot, what="the hostile device in the list")
            row = " ".join(getattr(cell, "plain", str(cell)) for cell in devices.get_row_at(0))
            assert SHOWN in row
            assert_clean(row)
            # The command palette lists it literally too (Textual reads its titles and help as markup).
            (command,) = [c for c in app.get_system_commands(app.screen) if "evil-id" in (c.help or "")]
            assert Content.from_markup(command.title).plain == f"Connect to {SHOWN}"
            assert Content.from_markup(command.help).plain == f"Open a session with {SHOWN} (evil-id)"

            # It opens a session (connect_to_peer returns once the person accepted): the dialog names it literally.
            connecting = asyncio.ensure_future(evil.connect_to_peer("laptop-id"))
            dialog = await wait_until(lambda: isinstance(app.screen, IncomingConnectionDialog) and app.screen, pilot,
                                      what="the incoming connection dialog")
            text = " ".join(plain(label) for label in dialog.query(Label))
            assert SHOWN in text
            assert_clean(text)
            await pilot.press("a")
            connection = await asyncio.wait_for(connecting, 20)
            view = await wait_until(lambda: app.main.active_session, pilot, what="the session")
            tab = next(t for t in app.main.query(Tab) if "session" in (t.id or ""))
            assert SHOWN in plain(tab)
            assert_clean(plain(tab))

            # Its messages are shown as sent, markup and escapes included, under its label.
            await connection.send(MESSAGE)
            chat = view.query_one(RichLog)
            await wait_until(lambda: in_log(MESSAGE_SHOWN, chat), pilot, what="the message in the chat")
            assert in_log(f"{SHOWN}  {MESSAGE_SHOWN}", chat)
            assert_clean(log_text(chat))

            # It offers a file with a hostile name: the dialog, the transfer row and the chat show it literally.
            source = tmp_path / "out" / "f.txt"
            source.parent.mkdir()
            source.write_text("hello")
            transfers = FileTransfers(connection)
            offer_id = "0123456789abcdef0123456789abcdef"
            original_walk = transfers_module.walk_tree

            def renamed(paths):  # the hostile device offers the file under a name no file system would give it
                tree = original_walk(paths)
                return dataclasses.replace(tree, files=[(path, FILE_NAME) for path, _ in tree.files])

            monkeypatch.setattr(transfers_module, "walk_tree", renamed)
            outgoing = await transfers.send_files([source], transfer_id=offer_id)
            files_dialog = await wait_until(lambda: isinstance(app.screen, IncomingFilesDialog) and app.screen, pilot,
                                            what="the incoming files dialog")
            text = " ".join(plain(label) for label in files_dialog.query(Label))
            assert SHOWN in text and FILE_SHOWN in text
            assert_clean(text)
            await pilot.press("a")
            await asyncio.wait_for(outgoing.wait(), 20)
            await wait_until(lambda: in_log("✓ received:", chat), pilot, what="the file received")
            assert in_log(FILE_SHOWN, chat)
            assert_clean(log_text(chat))
            names = " ".join(plain(label) for row in view.query(TransferRow) for label in row.query(Label))
            assert FILE_SHOWN in names
            assert_clean(names)

            # Notifications: it goes away, and connecting to it says so with its label, literally.
            await transfers.close()
            await connection.disconnect()
            await evil.stop()
            await wait_until(lambda: view.closed, pilot, what="the session closed")
            status = plain(view.query_one(".status", Static))
            assert_clean(status)
            app.main.action_focus_devices()
            await wait_until(lambda: devices.row_count == 1 and not app._directory.rows()[0].online, pilot,
                             what="the device offline")
            await pilot.pause()
            app.open_session_with(app._directory.rows()[0].peer, online=False)
            offline = await wait_until(lambda: [n for n in app._notifications if "is offline" in n.message], pilot,
                                       what="the offline notification")
            assert offline[0].message.startswith(SHOWN)
            # Every notification is plain text (a Toast reads a markup one with Content.from_markup), its label
            # in the title too, and nothing in it reaches the terminal as a control character.
            notes = list(app._notifications)
            assert any(n.title == SHOWN for n in notes)
            for note in notes:
                assert not note.markup
                assert_clean(note.title + note.message)
    finally:
        await evil.stop()


def test_markup_in_a_label_never_breaks_the_status_line_or_the_palette():
    from peerchat.models import markup_escape, shown

    for text in (HOSTILE, "a\\", "a\\[b]", "[", "]", "\\[/]", "[$accent]x[/]"):
        rendered = Content.from_markup(markup_escape(shown(text))).plain
        assert rendered == shown(text), (text, rendered)
    assert shown(HOSTILE) == SHOWN
    assert shown("line one\nline two", keep_newlines=True) == "line one\nline two"
    assert shown("line one\nline two") == "line one\\nline two"
