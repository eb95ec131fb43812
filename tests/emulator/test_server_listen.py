"""Streaming listeners: firebase-admin's ``listen()`` and raw event streams (must also pass on Google's emulator)."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator

import pytest
import requests
from firebase_admin import db, exceptions

WAIT = 20.0  # bound of every wait for an event; never a timing assertion

# firebase-admin's ListenerRegistration.close() closes the response while its thread is blocked reading it, so the
# thread ends with an AttributeError inside http.client: a race in the SDK, not a failure of the server.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


class Recorder:
    """Collects a listener's events in a thread-safe queue."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, str, object]] = queue.Queue()

    def __call__(self, event: db.Event) -> None:
        self.events.put((event.event_type, event.path, event.data))

    def next(self) -> tuple[str, str, object]:
        try:
            return self.events.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no event arrived") from None

    def until(self, wanted: tuple[str, str, object]) -> list[tuple[str, str, object]]:
        """Events up to and including ``wanted``."""
        seen = []
        while True:
            event = self.next()
            seen.append(event)
            if event == wanted:
                return seen


@pytest.fixture
def admin(firebase_app_factory):
    return firebase_app_factory.make()


@pytest.fixture
def listen(admin) -> Iterator:
    registrations = []

    def start(path: str, app=None) -> Recorder:
        recorder = Recorder()
        registrations.append(db.reference(path, app=app or admin).listen(recorder))
        return recorder

    yield start
    # close() returns only after the server's next keep-alive: close them all at once.
    closers = [threading.Thread(target=registration.close) for registration in registrations]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=WAIT)


def test_first_event_is_the_whole_value(admin, listen):
    db.reference("/room", app=admin).set({"a": 1, "b": {"c": 2}})
    recorder = listen("/room")
    assert recorder.next() == ("put", "/", {"a": 1, "b": {"c": 2}})


def test_first_event_of_missing_location_is_null(listen):
    recorder = listen("/nothing")
    assert recorder.next() == ("put", "/", None)


def test_writes_below_arrive_with_relative_paths(admin, listen):
    recorder = listen("/room")
    assert recorder.next() == ("put", "/", None)
    ref = db.reference("/room", app=admin)
    ref.child("a").set(1)
    assert recorder.next() == ("put", "/a", 1)
    ref.child("b/c").set({"d": True})
    assert recorder.next() == ("put", "/b/c", {"d": True})
    ref.child("a").delete()
    assert recorder.next() == ("put", "/a", None)
    ref.set("whole")
    assert recorder.next() == ("put", "/", "whole")


def test_update_arrives_as_one_patch(admin, listen):
    ref = db.reference("/room", app=admin)
    ref.set({"a": 1, "b": 2})
    recorder = listen("/room")
    assert recorder.next()[0] == "put"
    ref.update({"a": 10, "c": 3})
    assert recorder.next() == ("patch", "/", {"a": 10, "c": 3})
    ref.child("sub").update({"x": 1})
    assert recorder.next() == ("patch", "/sub", {"x": 1})


def test_write_above_the_listened_location_sends_its_new_value(admin, listen):
    db.reference("/a/b", app=admin).set({"v": 1})
    recorder = listen("/a/b")
    assert recorder.next() == ("put", "/", {"v": 1})
    db.reference("/a", app=admin).set({"b": {"v": 2}, "other": 1})
    assert recorder.next() == ("put", "/", {"v": 2})
    # A write above that leaves the listened value as it was sends nothing; the next real change arrives.
    db.reference("/a", app=admin).update({"other": 2})
    db.reference("/a/b/v", app=admin).set(3)
    assert recorder.next() == ("put", "/v", 3)


def test_writes_elsewhere_are_not_sent(admin, listen):
    recorder = listen("/mine")
    assert recorder.next() == ("put", "/", None)
    db.reference("/other", app=admin).set(1)
    db.reference("/mine/x", app=admin).set(2)
    assert recorder.next() == ("put", "/x", 2)


def test_many_listeners_all_get_each_write(admin, listen):
    recorders = [listen("/fan") for _ in range(5)]
    for recorder in recorders:
        assert recorder.next() == ("put", "/", None)
    db.reference("/fan/m", app=admin).set("hello")
    for recorder in recorders:
        assert recorder.next() == ("put", "/m", "hello")


def test_listener_with_auth_override_under_rules(firebase_app_factory, listen):
    firebase_app_factory.load_rules({"rules": {"users": {"$uid": {".read": "auth != null && auth.uid == $uid"}}}})
    alice = firebase_app_factory.make({"uid": "alice"})
    recorder = listen("/users/alice", app=alice)
    assert recorder.next() == ("put", "/", None)
    db.reference("/users/alice/x", app=firebase_app_factory.make()).set(1)
    assert recorder.next() == ("put", "/x", 1)


def test_denied_listen_raises_unauthenticated(firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {".read": False}})
    app = firebase_app_factory.make({"uid": "mallory"})
    with pytest.raises(exceptions.UnauthenticatedError):
        db.reference("/secret", app=app).listen(lambda event: None)


# -- raw event streams -----------------------------------------------------------------------------------------


def _stream(emulator, namespace: str, path: str, *, override: str | None = None) -> requests.Response:
    params = {"ns": namespace}
    headers = {"Accept": "text/event-stream"}
    if override is None:
        headers["Authorization"] = "Bearer owner"
    else:
        params["auth_variable_override"] = override
    return requests.get(f"{emulator.url}{path}.json", params=params, headers=headers, stream=True, timeout=WAIT)


def _events(response: requests.Response) -> Iterator[tuple[str, str]]:
    event = None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            event = line[len("event:"):].strip()
        elif line.startswith("data:"):
            yield event or "message", line[len("data:"):].strip()


def test_stream_headers_and_first_event(emulator, namespace):
    with _stream(emulator, namespace, "/x") as response:
        assert response.status_code == 200
        content_type = response.headers["Content-Type"].replace(" ", "").lower()
        assert content_type == "text/event-stream;charset=utf-8"
        event, data = next(_events(response))
        assert event == "put"
        assert json.loads(data) == {"path": "/", "data": None}


def test_rules_change_cancels_a_listener_that_may_no_longer_read(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {".read": True, ".write": True}})
    with _stream(emulator, namespace, "/room", override='{"uid":"alice"}') as response:
        events = _events(response)
        assert next(events)[0] == "put"
        firebase_app_factory.load_rules({"rules": {".read": False}})
        for event, data in events:
            if event == "cancel":
                break
            assert event == "keep-alive"
        else:
            raise AssertionError("the stream ended without a cancel event")


def test_rules_change_keeps_a_listener_that_may_still_read(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {".read": True, ".write": True}})
    with _stream(emulator, namespace, "/room", override='{"uid":"alice"}') as response:
        events = _events(response)
        assert next(events)[0] == "put"
        firebase_app_factory.load_rules({"rules": {"room": {".read": "auth.uid == 'alice'"}, ".write": True}})
        db.reference("/room/n", app=firebase_app_factory.make()).set(1)
        for event, data in events:
            if event == "put":
                assert json.loads(data) == {"path": "/n", "data": 1}
                break
            assert event == "keep-alive"


def test_data_change_that_revokes_the_read_cancels_the_listener(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {
        "rooms": {"$room": {".read": "root.child('members').child($room).child(auth.uid).exists()"}},
        ".write": True,
    }})
    admin = firebase_app_factory.make()
    db.reference("/members/r1/alice", app=admin).set(True)
    with _stream(emulator, namespace, "/rooms/r1", override='{"uid":"alice"}') as response:
        events = _events(response)
        assert next(events)[0] == "put"
        db.reference("/rooms/r1/msg", app=admin).set("hi")
        db.reference("/members/r1/alice", app=admin).delete()
        seen = []
        for event, data in events:
            if event == "cancel":
                break
            if event != "keep-alive":
                seen.append((event, json.loads(data)))
        else:
            raise AssertionError("the stream ended without a cancel event")
        assert seen == [("put", {"path": "/msg", "data": "hi"})]


def test_stalled_listener_does_not_block_writes_or_other_listeners(emulator, namespace, admin, listen):
    # A client that opens a stream and never reads it.
    host, port = emulator.host_port.rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)), timeout=WAIT)
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(
            f"GET /big.json?ns={namespace} HTTP/1.1\r\nHost: {emulator.host_port}\r\n"
            "Accept: text/event-stream\r\nAuthorization: Bearer owner\r\n\r\n".encode()
        )
        # Another client listens next to it (a small stream: the SDK reads one character at a time).
        recorder = listen("/flag")
        assert recorder.next() == ("put", "/", None)
        ref = db.reference("/big", app=admin)
        chunk = "x" * 50_000
        for i in range(200):  # ~10 MB through a stream nobody reads
            ref.child(f"k{i % 10}").set(chunk + str(i))
        db.reference("/flag", app=admin).set("done")
        recorder.until(("put", "/", "done"))
        assert ref.child("k9").get() == chunk + "199"
    finally:
        stalled.close()
