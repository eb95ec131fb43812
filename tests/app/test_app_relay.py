"""Pilot test: when the relay itself stops answering, the relay line and a notification say so, and both clear
when it answers again (core's ``relay_unavailable`` / ``relay_restored``, whatever the relay mode)."""

from __future__ import annotations

import dataclasses
import uuid

import firebase_admin
from google.auth.credentials import AnonymousCredentials
from textual.widgets import Static

from app_helpers import FAST, USER, settings_for, wait_until
from core import FirebasePeerConnectionManager, PeerInfo
from emulator import Emulator
from peerchat.app import create_app


def relay_line(app) -> str:
    return str(app.main.query_one("#relay", Static).render())


def notifications(app) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


OUTAGE_REASONS = ("could not be reached", "has not answered this device's heartbeat")


async def test_relay_outage_is_shown_in_the_relay_line_and_notified_then_cleared(tmp_path):
    options = dataclasses.replace(FAST, heartbeat_interval=0.3, listener_silence_timeout=30.0,
                                  peer_timeout=60.0, ack_timeout=60.0)
    namespace = f"app-{uuid.uuid4().hex[:12]}"
    async with Emulator() as emulator:
        fb = firebase_admin.initialize_app(
            AnonymousCredentials(),
            {"databaseURL": emulator.database_url(namespace), "databaseAuthVariableOverride": {"uid": USER}},
            name=f"relay-line-{uuid.uuid4().hex}",
        )
        manager = FirebasePeerConnectionManager(USER, PeerInfo("laptop-id", "laptop"), app=fb, options=options)
        try:
            await manager.start()
            app = create_app(settings_for("laptop", tmp_path), manager=manager)
            async with app.run_test(size=(120, 36)) as pilot:
                await wait_until(lambda: "online via" in relay_line(app), pilot, what="the relay line")
                await emulator.stop()
                line = await wait_until(lambda: "relay unreachable" in relay_line(app) and relay_line(app), pilot,
                                        what="the outage in the relay line")
                # The reason is whichever failure the heartbeat met first: a refused connection, or (on a loaded
                # machine) its own time-out before that.
                assert "— retrying" in line and any(reason in line for reason in OUTAGE_REASONS), line
                assert app.main.query_one("#relay", Static).has_class("error")
                await wait_until(lambda: any(r in n for n in notifications(app) for r in OUTAGE_REASONS), pilot,
                                 what="a notification with the reason")
                await emulator.start()
                await wait_until(lambda: "online via" in relay_line(app), pilot, what="the relay line cleared")
                assert not app.main.query_one("#relay", Static).has_class("error")
                await wait_until(lambda: any("back" in n for n in notifications(app)), pilot,
                                 what="a notification that the relay is back")
        finally:
            await manager.stop()
            firebase_admin.delete_app(fb)


async def test_a_relay_line_for_a_screen_without_one_is_kept_not_raised():
    """A relay event can reach the main screen before it is composed or while the app shuts down (its widgets
    gone): the line is kept and shown once the screen is composed, never an error that ends the app."""
    from textual.app import App
    from textual.widgets import Static

    from peerchat.screens.main import MainScreen

    screen = MainScreen(history=None)  # type: ignore[arg-type]  # the relay line needs no history
    screen.show_relay("✗ relay unreachable", ok=False)  # not composed yet: nothing to query

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    async with Host().run_test() as pilot:
        await pilot.pause()
        line = screen.query_one("#relay", Static)
        assert str(line.render()) == "✗ relay unreachable" and line.has_class("error")
        screen.show_relay("● online", ok=True)
        assert str(line.render()) == "● online" and not line.has_class("error")
        await line.remove()
        screen.show_relay("● online again", ok=True)  # its widget is gone, as during shutdown
