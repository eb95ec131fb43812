"""Tests for core.firebase: the mirror (no I/O), then calls, listeners, their watchdog and error mapping against the
emulator over real HTTP."""

from __future__ import annotations

import asyncio
import uuid

import firebase_admin
import pytest
from google.auth.credentials import AnonymousCredentials

from emulator import Emulator
from core.errors import PermissionDeniedError, RelayUnavailableError
from core.relay.firebase import Database, apply_event, map_error


# ------------------------------------------------------------------------------------------------- mirror (no I/O)
def test_apply_event_put_replaces_at_path():
    tree = {"a": {"x": 1}, "b": 2}
    assert apply_event(tree, "put", "/", {"c": 3}) == {"c": 3}
    assert apply_event(tree, "put", "/a/y", 5) == {"a": {"x": 1, "y": 5}, "b": 2}
    assert apply_event(tree, "put", "/a/x", None) == {"b": 2}
    assert apply_event(tree, "put", "/", None) is None
    assert tree == {"a": {"x": 1}, "b": 2}  # not mutated


def test_apply_event_patch_merges_children():
    tree = {"a": {"x": 1}}
    assert apply_event(tree, "patch", "/a", {"y": 2, "x": None}) == {"a": {"y": 2}}
    assert apply_event(tree, "patch", "/", {"b/c": 3}) == {"a": {"x": 1}, "b": {"c": 3}}
    assert apply_event(None, "put", "/deep/er", 1) == {"deep": {"er": 1}}
    assert apply_event(tree, "patch", "/", "garbage") == tree


def test_map_error_picks_the_specific_class():
    from firebase_admin import exceptions as fb_exc
    import requests

    denied = map_error(fb_exc.UnauthenticatedError("Permission denied"), "write x")
    assert isinstance(denied, PermissionDeniedError) and "write x" in str(denied)
    assert isinstance(map_error(requests.ConnectionError("refused"), "read y"), RelayUnavailableError)
    assert isinstance(map_error(fb_exc.UnavailableError("down"), "read y"), RelayUnavailableError)


def test_a_refused_connection_is_said_in_words_not_as_a_connection_pool():
    import socket

    import requests
    from firebase_admin import exceptions as fb_exc

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        requests.get(f"http://127.0.0.1:{port}/x.json", timeout=5)
    except requests.ConnectionError as exc:
        error = map_error(exc, "read x")
    else:
        raise AssertionError("nothing listens there")
    assert isinstance(error, RelayUnavailableError)
    assert "(connection refused)" in str(error)
    assert "ConnectionPool" not in str(error) and "Max retries" not in str(error)
    html = fb_exc.UnknownError("<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>")
    assert "answered with a web page: it is not a Realtime Database" in str(map_error(html, "read x"))
    assert "<html" not in str(map_error(html, "read x"))


# ------------------------------------------------------------------------------------------------- against the emulator
@pytest.fixture
def rules_app(firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {"mine": {".read": "auth.uid === 'alice'", ".write": "auth.uid === 'alice'"}}})
    return firebase_app_factory


async def wait_for(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_calls_round_trip_and_denials_are_mapped(rules_app):
    database = Database(rules_app.make({"uid": "alice"}))
    other = Database(rules_app.make({"uid": "mallory"}))
    try:
        await database.set("mine/a", {"v": 1})
        await database.update("mine", {"b": 2, "a/w": 3})
        assert await database.get("mine") == {"a": {"v": 1, "w": 3}, "b": 2}
        await database.delete("mine/a")
        assert await database.get("mine") == {"b": 2}
        with pytest.raises(PermissionDeniedError, match="refused"):
            await other.get("mine")
        with pytest.raises(PermissionDeniedError):
            await other.set("mine/x", 1)
        with pytest.raises(PermissionDeniedError):
            await other.listen("mine", lambda *a: None)
    finally:
        await database.close()
        await other.close()


async def test_listener_delivers_initial_value_then_changes(rules_app):
    database = Database(rules_app.make({"uid": "alice"}))
    events = []
    try:
        await database.set("mine/a", 1)
        listener = await database.listen("mine", lambda *e: events.append(e))
        await wait_for(lambda: events)
        assert events[0] == ("put", "/", {"a": 1})
        await database.set("mine/b", "x" * 20000)
        await database.update("mine", {"c": 1, "d": 2})
        await wait_for(lambda: len(events) >= 3)
        assert events[1] == ("put", "/b", "x" * 20000)
        assert events[2][0] == "patch"
        await listener.close()
        await listener.close()
    finally:
        await database.close()


async def test_dead_listener_is_noticed_and_resubscribed(rules_app):
    database = Database(rules_app.make({"uid": "alice"}))
    tree = {}

    def on(kind, path, data):
        tree["v"] = apply_event(tree.get("v"), kind, path, data)

    try:
        listener = await database.listen("mine", on)
        await database.set("mine/a", 1)
        await wait_for(lambda: tree.get("v") == {"a": 1})
        listener.kill_for_test()
        await database.set("mine/b", 2)  # written while nobody listened
        await wait_for(lambda: listener.subscriptions == 2)
        await wait_for(lambda: tree.get("v") == {"a": 1, "b": 2})
    finally:
        await database.close()


async def test_silent_listener_is_resubscribed():
    """A stream that carries nothing, not even keep-alives, for longer than the silence time-out is replaced."""
    async with Emulator(keepalive_interval=60) as emu:
        app = firebase_admin.initialize_app(AnonymousCredentials(), {"databaseURL": emu.database_url("silence")},
                                            name=f"t-{uuid.uuid4().hex}")
        database = Database(app, silence_timeout=0.5)
        try:
            listener = await database.listen("x", lambda *e: None)
            await wait_for(lambda: listener.subscriptions >= 2)
        finally:
            await database.close()
            firebase_admin.delete_app(app)


async def test_keepalives_keep_a_quiet_listener_alive():
    async with Emulator(keepalive_interval=0.1) as emu:
        app = firebase_admin.initialize_app(AnonymousCredentials(), {"databaseURL": emu.database_url("quiet")},
                                            name=f"t-{uuid.uuid4().hex}")
        database = Database(app, silence_timeout=1.0)
        try:
            listener = await database.listen("x", lambda *e: None)
            before = listener.last_activity
            await wait_for(lambda: listener.last_activity > before + 0.15)
            await asyncio.sleep(1.5)
            assert listener.subscriptions == 1
        finally:
            await database.close()
            firebase_admin.delete_app(app)


async def test_listener_survives_an_emulator_restart():
    async with Emulator() as emu:
        app = firebase_admin.initialize_app(AnonymousCredentials(), {"databaseURL": emu.database_url("restart")},
                                            name=f"t-{uuid.uuid4().hex}")
        database = Database(app, silence_timeout=5)
        errors, tree = [], {}

        def on(kind, path, data):
            tree["v"] = apply_event(tree.get("v"), kind, path, data)

        try:
            listener = await database.listen("x", on, on_error=errors.append)
            await database.set("x/a", 1)
            await wait_for(lambda: tree.get("v") == {"a": 1})
            await emu.stop()
            with pytest.raises(RelayUnavailableError, match="could not be reached"):
                await database.set("x/b", 2)
            await asyncio.sleep(0.5)
            await emu.start()
            await database.set("x/b", 2)
            await wait_for(lambda: tree.get("v") == {"a": 1, "b": 2})
            assert listener.subscriptions >= 2
        finally:
            await database.close()
            firebase_admin.delete_app(app)
