"""End-to-end tests of relay connections: two managers in one process on the emulator, with the real rules."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from core import events as ev
from core.errors import (
    ClosedError,
    ConnectError,
    ConnectionClosedError,
    MessageTooLargeError,
    PeerOfflineError,
    PeerTimeoutError,
    PermissionDeniedError,
    ProtocolError,
)
from core.relay.firebase import Database
from core.options import ManagerOptions
from core.peer import PeerInfo
from core.link import Link
from core.manager import FirebasePeerConnectionManager
from core.relay.connection import RelayConnection

try:
    from .relay_support import wait_for
except ImportError:  # tests/ is not a package
    from relay_support import wait_for

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
USER = "alice"

FAST = ManagerOptions(
    heartbeat_interval=0.5,
    presence_misses=3,
    connect_timeout=10.0,
    ack_timeout=10.0,
    retransmit_interval=1.0,
    ping_interval=0.3,
    slow_after=1.0,
    peer_timeout=5.0,
    listener_silence_timeout=10.0,
    close_timeout=2.0,
    webrtc=False, direct=False,
)


class Recorder:
    """Records every event an emitter emits (by name)."""

    def __init__(self, emitter, *names):
        self.items: list[tuple[str, object]] = []
        for name in names:
            emitter.on(name, lambda payload, name=name: self.items.append((name, payload)))

    def of(self, name):
        return [p for n, p in self.items if n == name]


@pytest.fixture
def relay(firebase_app_factory):
    firebase_app_factory.load_rules(RULES)
    managers: list[FirebasePeerConnectionManager] = []

    def make(device_id, label=None, *, options=FAST, user=USER, upgrader=None):
        app = firebase_app_factory.make({"uid": user})
        m = FirebasePeerConnectionManager(user, PeerInfo(device_id, label or device_id), app=app, options=options,
                                          upgrader=upgrader)
        managers.append(m)
        return m

    make.factory = firebase_app_factory
    yield make


@pytest.fixture
async def cleanup():
    managers = []
    yield managers
    for m in managers:
        await m.stop()


async def pair(relay, cleanup, *, confirm=False, options=FAST):
    a, b = relay("laptop", "Laptop", options=options), relay("phone", "Phone", options=options)
    cleanup += [a, b]
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None, what="phone online")
    incoming = asyncio.get_running_loop().create_future()
    b.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
    conn_a = await a.connect_to_peer("phone", confirm_data_receival=confirm)
    async with asyncio.timeout(10):
        conn_b = await incoming
    return a, b, conn_a, conn_b


async def test_presence_lists_other_online_devices_and_clean_stop_is_immediate(relay, cleanup):
    a, b = relay("laptop", "Laptop"), relay("phone", "Phone")
    cleanup += [a, b]
    changes = Recorder(a.events, ev.PEERS_CHANGED)
    async with a:
        await b.start()
        await wait_for(lambda: a._view.get("phone") is not None)
        assert await a.get_online_peers() == [PeerInfo("phone", "Phone")]
        assert await b.get_online_peers() == [PeerInfo("laptop", "Laptop")]
        assert changes.of(ev.PEERS_CHANGED)[-1].peers == (PeerInfo("phone", "Phone"),)
        await b.stop()
        # Offline at once: the explicit offline record, not a heartbeat going stale, took it off the list.
        await wait_for(lambda: a._presence_tree["phone"]["online"] is False, what="offline record")
        assert a._view.get("phone") is None
        assert changes.of(ev.PEERS_CHANGED)[-1].peers == ()
    with pytest.raises(ClosedError):
        await a.get_online_peers()


async def test_connect_send_both_ways_and_disconnect(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup)
    assert conn_a.session_id == conn_b.session_id
    assert conn_a.peer == PeerInfo("phone", "Phone") and conn_b.peer == PeerInfo("laptop", "Laptop")
    assert conn_a.transport == "relay" and not conn_a.is_closed
    got_a, got_b = Recorder(conn_a.events, ev.DATA, ev.BINARY), Recorder(conn_b.events, ev.DATA, ev.BINARY)
    await conn_a.send("hello")
    await conn_a.send_bytes(b"\x00\xffbytes")
    await conn_b.send("hi back")
    await wait_for(lambda: len(got_b.items) == 2 and len(got_a.items) == 1)
    assert got_b.items == [(ev.DATA, ev.Data("hello")), (ev.BINARY, ev.BinaryData(b"\x00\xffbytes"))]
    assert got_a.items == [(ev.DATA, ev.Data("hi back"))]

    closed_a, closed_b = Recorder(a.events, ev.CONNECTION_CLOSED), Recorder(b.events, ev.CONNECTION_CLOSED)
    await conn_a.disconnect()
    await conn_a.disconnect()  # twice is fine
    await wait_for(lambda: closed_b.items, what="peer sees the close")
    (pb,) = closed_b.of(ev.CONNECTION_CLOSED)
    assert pb.reason == "peer-requested-closed" and pb.connection is conn_b and pb.error is None
    assert closed_a.of(ev.CONNECTION_CLOSED)[0].reason == "local-closed"
    with pytest.raises(ConnectionClosedError):
        await conn_a.send("late")
    with pytest.raises(ConnectionClosedError):
        await conn_b.send("late")
    # The session's data is deleted when it ends.
    admin = Database(relay.factory.make())
    try:
        await wait_for(lambda: True)
        assert await admin.get(f"relay/sessions/{USER}/{conn_a.session_id}") is None
        assert await admin.get(f"relay/negotiation/{USER}/phone") is None
    finally:
        await admin.close()


async def test_connect_to_offline_or_unknown_device_fails_fast(relay, cleanup):
    a, b = relay("laptop"), relay("phone")
    cleanup += [a, b]
    await a.start()
    with pytest.raises(PeerOfflineError, match="not online"):
        await a.connect_to_peer("nobody")
    with pytest.raises(PeerOfflineError):
        await a.connect_to_peer("bad/id")
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None)
    await b.stop()
    await wait_for(lambda: a._view.get("phone") is None)
    with pytest.raises(PeerOfflineError):
        await a.connect_to_peer("phone")
    with pytest.raises(ValueError):
        await a.connect_to_peer("laptop")
    with pytest.raises(TypeError):
        await a.connect_to_peer(42)  # type: ignore[arg-type]


async def test_connect_before_start_and_after_stop_is_a_clear_error(relay):
    a = relay("laptop")
    with pytest.raises(ClosedError, match="start"):
        await a.connect_to_peer("phone")
    await a.start()
    await a.stop()
    await a.stop()
    with pytest.raises(ClosedError, match="stopped"):
        await a.start()


async def test_wrong_user_is_refused_by_the_rules(firebase_app_factory):
    firebase_app_factory.load_rules(RULES)
    app = firebase_app_factory.make({"uid": "mallory"})
    m = FirebasePeerConnectionManager(USER, PeerInfo("laptop", "Laptop"), app=app, options=FAST)
    with pytest.raises(PermissionDeniedError, match="refused"):
        await m.start()


async def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        FirebasePeerConnectionManager("a/b", PeerInfo("x", "x"))
    with pytest.raises(ValueError):
        FirebasePeerConnectionManager("u", PeerInfo("x.y", "x"))
    with pytest.raises(ValueError):
        FirebasePeerConnectionManager("u", PeerInfo("x", ""))


async def test_message_too_large_is_refused_before_writing(relay, cleanup):
    limit = 256 * 1024
    options = dataclasses.replace(FAST, max_message_bytes=limit)
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=options)
    before = conn_a._stream.next_seq
    with pytest.raises(MessageTooLargeError) as info:
        await conn_a.send("é" * (limit // 2 + 1))  # 2 bytes each in UTF-8
    assert info.value.limit == limit
    with pytest.raises(MessageTooLargeError):
        await conn_a.send_bytes(b"x" * (limit + 1))
    with pytest.raises(TypeError):
        await conn_a.send(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await conn_a.send("lone surrogate \ud800 " * (limit // 64))
    assert conn_a._stream.next_seq == before  # nothing was queued
    got = Recorder(conn_b.events, ev.DATA, ev.BINARY)
    await conn_a.send("é" * (limit // 2))  # exactly at the limit: several relay frames, joined again
    await conn_a.send_bytes(b"\xfe" * limit)
    await wait_for(lambda: len(got.items) == 2)
    assert got.of(ev.DATA)[0].data == "é" * (limit // 2)
    assert got.of(ev.BINARY)[0].data == b"\xfe" * limit


@pytest.mark.parametrize("confirm", [True, False])
async def test_a_mebibyte_string_and_bytes_cross_the_relay_intact(relay, cleanup, confirm):
    a, b, conn_a, conn_b = await pair(relay, cleanup, confirm=confirm)
    assert conn_a.transport == "relay"
    got = Recorder(conn_b.events, ev.DATA, ev.BINARY)
    text = "".join(chr(0x20 + i % 0x3000) for i in range(1024 * 1024 // 2))  # 1-3 UTF-8 bytes a character
    blob = bytes(range(256)) * 4096  # 1 MiB
    await conn_a.send("before")
    await conn_a.send(text)
    await conn_a.send_bytes(blob)
    await conn_a.send("after")
    if confirm:
        # send() returned once the peer's application had each whole message.
        assert [item.data for _, item in got.items] == ["before", text, blob, "after"]
    await wait_for(lambda: len(got.items) == 4, what="four messages")
    assert [item.data for _, item in got.items] == ["before", text, blob, "after"]
    assert conn_a._stream.next_seq > 4 + 16  # the large ones really went as several frames


async def test_a_fragment_run_over_the_receivers_limit_closes_with_a_protocol_error(relay, cleanup):
    small = dataclasses.replace(FAST, max_message_bytes=100 * 1024)
    a, b = relay("laptop", "Laptop"), relay("phone", "Phone", options=small)
    cleanup += [a, b]
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None, what="phone online")
    incoming = asyncio.get_running_loop().create_future()
    b.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
    conn_a = await a.connect_to_peer("phone")
    async with asyncio.timeout(10):
        conn_b = await incoming
    seen = Recorder(conn_b.events, ev.PROTOCOL_ERROR, ev.CLOSED, ev.DATA)
    with contextlib.suppress(ConnectionClosedError):
        await conn_a.send("x" * 300 * 1024)  # within the sender's limit, over the receiver's
    await wait_for(lambda: seen.of(ev.CLOSED), what="the receiver to close")
    assert seen.of(ev.DATA) == []
    closed = seen.of(ev.CLOSED)[0]
    assert closed.reason == "connection-error" and isinstance(closed.error, ProtocolError)
    assert "limit" in str(seen.of(ev.PROTOCOL_ERROR)[0].error)


async def test_thousand_confirmed_messages_each_way_at_once_in_order(relay, cleanup):
    options = dataclasses.replace(FAST, send_window=64)
    a, b, conn_a, conn_b = await pair(relay, cleanup, confirm=True, options=options)
    # The accepting side confirms too when its sends are made through a confirming connection.
    conn_b.confirm_data_receival = True
    got_a, got_b = Recorder(conn_a.events, ev.DATA), Recorder(conn_b.events, ev.DATA)
    n = 1000
    async with asyncio.timeout(90):
        await asyncio.gather(
            *(conn_a.send(f"a{i}") for i in range(n)),
            *(conn_b.send(f"b{i}") for i in range(n)),
        )
    # With confirmation every send returned only after the peer's application had the message.
    assert [d.data for d in got_b.of(ev.DATA)] == [f"a{i}" for i in range(n)]
    assert [d.data for d in got_a.of(ev.DATA)] == [f"b{i}" for i in range(n)]
    # Batching: far fewer relay requests than messages.
    assert conn_a.stats["relay_requests"] < n


async def test_confirmed_send_times_out_when_the_peer_never_confirms(relay, cleanup):
    options = dataclasses.replace(FAST, ack_timeout=0.5, peer_timeout=30, close_timeout=0.3)
    a, b, conn_a, conn_b = await pair(relay, cleanup, confirm=True, options=options)
    # The peer's side stops processing its inbox (as a hung device would) but the connection stays up.
    await conn_b._listener.close()
    with pytest.raises(PeerTimeoutError, match="did not confirm") as info:
        await conn_a.send("anyone?")
    assert info.value.seconds == 0.5 and "acknowledgement" in info.value.what


async def test_latency_is_measured_and_slowness_reported(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=dataclasses.replace(FAST, close_timeout=0.3))
    lat = Recorder(conn_a.events, ev.LATENCY, ev.SLOW, ev.RECOVERED)
    await wait_for(lambda: len(lat.of(ev.LATENCY)) >= 2, what="latency events")
    assert conn_a.rtt is not None and conn_a.rtt > 0
    assert lat.of(ev.LATENCY)[0].transport == "relay"
    # Make the peer stop answering: pings go unanswered and the connection reports it is slow.
    await conn_b._listener.close()
    await wait_for(lambda: lat.of(ev.SLOW), what="slow event")
    slow = lat.of(ev.SLOW)[0]
    assert slow.what and slow.waited >= FAST.slow_after and slow.timeout > 0
    assert conn_a.is_slow


async def test_vanished_peer_is_reported_as_connection_error(relay, cleanup):
    options = dataclasses.replace(FAST, peer_timeout=1.5, close_timeout=0.3)
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=options)
    closed = Recorder(a.events, ev.CONNECTION_CLOSED)
    conn_closed = Recorder(conn_a.events, ev.CLOSED)
    # The peer vanishes without a word: its writer and listener stop, nothing more is written.
    await conn_b._writer.stop()
    await conn_b._listener.close()
    conn_b._ticker.cancel()
    await wait_for(lambda: closed.items, timeout=10, what="connection error")
    (event,) = closed.of(ev.CONNECTION_CLOSED)
    assert event.reason == "connection-error" and isinstance(event.error, PeerTimeoutError)
    assert conn_closed.of(ev.CLOSED)[0].reason == "connection-error"
    assert conn_a.is_closed


async def test_malformed_data_from_a_third_client_is_a_protocol_error(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup)
    errors = Recorder(conn_b.events, ev.PROTOCOL_ERROR)
    got = Recorder(conn_b.events, ev.DATA)
    # A third client of the same user (the rules cannot tell devices apart) writes junk that passes the rules.
    intruder = Database(relay.factory.make({"uid": USER}))
    inbox = f"relay/sessions/{USER}/{conn_a.session_id}/phone"
    ts = {".sv": "timestamp"}
    try:
        await intruder.set(f"{inbox}/messages/s0000000999", {"kind": "ping", "seq": 5, "updatedWhen": ts})
        await intruder.set(f"{inbox}/messages/s0000005000", {"kind": "data", "seq": 5000, "data": "x", "updatedWhen": ts})
        await intruder.set(f"{inbox}/messages/s0000000003", {"kind": "data", "seq": 4, "data": "x", "updatedWhen": ts})
        await intruder.set(f"{inbox}/acknowledgement", {"peerId": "laptop", "seq": 77, "updatedWhen": ts})
        await wait_for(lambda: len(errors.items) >= 4, what="protocol errors")
    finally:
        await intruder.close()
    assert all(isinstance(e.error, Exception) for e in errors.of(ev.PROTOCOL_ERROR))
    # No crash: the connection still works both ways, and the junk was removed from the inbox.
    await conn_a.send("first")
    await conn_b.send("still alive")
    await wait_for(lambda: got.items)
    assert got.of(ev.DATA)[0].data == "first"
    assert not conn_a.is_closed and not conn_b.is_closed
    admin = Database(relay.factory.make())
    try:
        await conn_b._writer.flush()
        left = await admin.get(f"{inbox}/messages") or {}
        assert not [k for k in left if k.startswith("s")], left
    finally:
        await admin.close()


@pytest.mark.parametrize("data", ["QUJD=", "QUJD==", "QUI", "QUJ=", "QU JD"])
async def test_a_binary_frame_whose_base64_is_not_canonical_is_a_protocol_error(relay, cleanup, data):
    """Base64 is decoded strictly: extra or missing padding, bits set past the end, spaces: a protocol error, never
    bytes handed to the application."""
    a, b, conn_a, conn_b = await pair(relay, cleanup)
    errors = Recorder(conn_b.events, ev.PROTOCOL_ERROR, ev.BINARY)
    intruder = Database(relay.factory.make({"uid": USER}))
    seq = conn_a._stream.next_seq
    try:
        await intruder.set(f"relay/sessions/{USER}/{conn_a.session_id}/phone/messages/s{seq:010d}",
                           {"kind": "binary", "seq": seq, "data": data, "updatedWhen": {".sv": "timestamp"}})
        await wait_for(lambda: errors.items, what="the frame handled")
    finally:
        await intruder.close()
    assert errors.of(ev.BINARY) == []
    (error,) = errors.of(ev.PROTOCOL_ERROR)
    assert "base64" in str(error.error)


class LoopbackLink(Link):
    """A test link that hands frames straight to the peer connection (no relay), and can break."""

    transport = "webrtc"

    def __init__(self, target: RelayConnection):
        self.target = target
        self.broken = False
        self.sent = 0
        self.dropped: list[dict] = []

    def send_frame(self, frame):
        if self.broken:
            raise ConnectionError("channel closed")
        self.sent += 1
        asyncio.get_running_loop().call_soon(self.target.receive_frame, dict(frame))


async def test_attached_link_carries_frames_and_detaching_falls_back_without_loss(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, confirm=True)
    conn_b.confirm_data_receival = True
    link_ab, link_ba = LoopbackLink(conn_b), LoopbackLink(conn_a)
    changes = Recorder(conn_a.events, ev.LINK_CHANGED)
    got = Recorder(conn_b.events, ev.DATA)
    conn_a.attach_link(link_ab)
    conn_b.attach_link(link_ba)
    assert conn_a.transport == "webrtc"
    assert changes.of(ev.LINK_CHANGED) == [ev.LinkChanged("webrtc", "relay", "upgraded")]
    await conn_a.send("over webrtc")
    assert link_ab.sent >= 1
    # The link breaks while messages are in flight: everything unacknowledged goes over the relay again.
    link_ba.broken = True  # acks from b cannot come back over the link
    before = link_ab.sent
    sends = [asyncio.ensure_future(conn_a.send(f"m{i}")) for i in range(5)]
    await wait_for(lambda: link_ab.sent >= before + 5, what="the five messages sent over the link")
    link_ab.broken = True
    conn_b.detach_link(link_ba, "test")
    conn_a.detach_link(link_ab, "test")
    assert conn_a.transport == "relay"
    async with asyncio.timeout(20):
        await asyncio.gather(*sends)
    assert [d.data for d in got.of(ev.DATA)] == ["over webrtc"] + [f"m{i}" for i in range(5)]
    assert changes.of(ev.LINK_CHANGED)[-1] == ev.LinkChanged("relay", "webrtc", "test")


async def test_signals_travel_in_order_and_upgrader_runs_before_handing_out(relay, cleanup):
    order = []

    async def upgrader(conn):
        got = asyncio.get_running_loop().create_future()
        conn.set_signal_handler(lambda s: got.done() or got.set_result(s))
        await conn.send_signal({"from": conn.own_id, "initiator": conn.is_initiator})
        signal = await asyncio.wait_for(got, 10)
        order.append((conn.own_id, signal))
        if conn.is_initiator:
            raise RuntimeError("no WebRTC here")

    a = relay("laptop", upgrader=upgrader)
    b = relay("phone", upgrader=upgrader)
    cleanup += [a, b]
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None)
    incoming = asyncio.get_running_loop().create_future()
    b.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.set_result((len(order), e.connection)))
    conn = await a.connect_to_peer("phone")
    assert any(who == "laptop" for who, _ in order)  # the upgrade step ran before connect_to_peer returned
    async with asyncio.timeout(10):
        count, _ = await incoming
    assert count >= 1  # the target's upgrade step ran before incoming_connection fired
    assert dict(order)["laptop"] == {"from": "phone", "initiator": False}
    assert dict(order)["phone"] == {"from": "laptop", "initiator": True}
    assert conn.transport == "relay"


async def test_upgrade_failure_is_reported_and_relay_keeps_working(relay, cleanup):
    async def upgrader(conn):
        raise RuntimeError("no route")

    a = relay("laptop", upgrader=upgrader)
    b = relay("phone")
    cleanup += [a, b]
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None)
    incoming = asyncio.get_running_loop().create_future()
    b.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.set_result(e.connection))
    conn = await a.connect_to_peer("phone")
    # The failure happened before the consumer had the connection: it is kept, and its event follows hand-out.
    assert conn.upgrade_failure is not None and conn.upgrade_failure.reason == "no route"
    seen = Recorder(conn.events, ev.UPGRADE_FAILED)
    await wait_for(lambda: seen.items, what="the held upgrade_failed event")
    assert seen.of(ev.UPGRADE_FAILED) == [conn.upgrade_failure]
    assert isinstance(seen.of(ev.UPGRADE_FAILED)[0].error, RuntimeError)
    conn_b = await asyncio.wait_for(incoming, 10)
    got = Recorder(conn_b.events, ev.DATA)
    await conn.send("still works")
    await wait_for(lambda: got.items)


async def test_data_sent_at_once_is_not_lost_while_the_peer_is_still_upgrading(relay, cleanup):
    """The initiator may send before the target emitted incoming_connection: the target holds the data until then."""

    async def slow_upgrader(conn):
        await asyncio.sleep(0.3)

    a = relay("laptop")
    b = relay("phone", upgrader=slow_upgrader)
    cleanup += [a, b]
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None)
    got = []
    b.events.on(ev.INCOMING_CONNECTION, lambda e: e.connection.events.on(ev.DATA, lambda d: got.append(d.data)))
    conn = await a.connect_to_peer("phone", confirm_data_receival=True)
    await conn.send("early")  # confirmed while the target is still upgrading
    await conn.send("second")
    await wait_for(lambda: len(got) == 2, what="held data")
    assert got == ["early", "second"]


async def test_async_signal_handlers_run_in_order(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup)
    seen = []

    async def handler(signal):
        await asyncio.sleep(0.05 if signal["n"] == 0 else 0)
        seen.append(signal["n"])

    conn_b.set_signal_handler(handler)
    for n in range(3):
        await conn_a.send_signal({"n": n})
    await wait_for(lambda: len(seen) == 3)
    assert seen == [0, 1, 2]


def test_options_check_their_limits_and_leave_room_for_the_upgrade():
    defaults = ManagerOptions()
    # The answering side may wait a whole upgrade attempt before it hands a connection out.
    assert defaults.connect_timeout >= defaults.upgrade_timeout + 5
    rules = json.loads(RULES.read_text())
    message = rules["rules"]["relay"]["sessions"]["$uid"]["$sessionId"]["$deviceId"]["messages"]["$key"]
    allowed = int(re.search(r"length <= (\d+)", message["data"][".validate"]).group(1))
    assert defaults.relay_frame_bytes == allowed  # one frame's data, as the rules allow it
    assert defaults.max_message_bytes == 16 * 1024 * 1024
    bad_values = ({"max_message_bytes": 0}, {"relay_frame_bytes": 8}, {"send_window": 0}, {"webrtc_send_window": 5000},
                  {"send_window_bytes": 0})
    for bad in bad_values:
        with pytest.raises(ValueError):
            ManagerOptions(**bad)


async def test_known_peers_include_offline_devices_with_their_last_seen_time(relay, cleanup):
    a, b, c = relay("laptop", "Laptop"), relay("phone", "Phone"), relay("tablet", "Tablet")
    cleanup += [a, b, c]
    await b.start()
    await c.start()
    await c.stop()
    changes = Recorder(a.events, ev.PEERS_CHANGED)
    before = time.time()
    await a.start()
    # A device that was offline before this one started is known at once, with when it was last seen.
    await wait_for(lambda: len(a._view.known) == 2, what="both devices known")
    known = await a.get_known_peers()
    assert [(s.info, s.online) for s in known] == [(PeerInfo("phone", "Phone"), True),
                                                    (PeerInfo("tablet", "Tablet"), False)]
    # last_seen is on the local clock: the tablet stopped before this device started, within the test.
    assert known[1].last_seen is not None and before - 30 < known[1].last_seen < time.time() + 1
    assert changes.of(ev.PEERS_CHANGED)[-1].devices == tuple(a._view.known)
    await b.stop()
    await wait_for(lambda: changes.of(ev.PEERS_CHANGED)[-1].peers == (), what="the phone offline")
    last = changes.of(ev.PEERS_CHANGED)[-1]
    assert [(s.info.id, s.online) for s in last.devices] == [("phone", False), ("tablet", False)]
    assert last.devices[0].last_seen is not None and last.devices[0].last_seen >= known[1].last_seen


async def test_an_incoming_connection_is_named_by_presence_even_before_presence_arrived(relay, cleanup):
    # The race: a device connects right after coming online, and its negotiation reaches the acceptor before its
    # presence does. Here the acceptor's view never learns of it (its updates are dropped), which is the worst case.
    a, b = relay("laptop", "Laptop"), relay("phone", "Phone")
    cleanup += [a, b]
    await a.start()
    a._view.update = lambda devices, now: False  # type: ignore[method-assign]
    incoming = asyncio.get_running_loop().create_future()
    a.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
    await b.start()
    await wait_for(lambda: b._view.get("laptop") is not None, what="the laptop online for the phone")
    assert a._view.get("phone") is None
    conn_b = await b.connect_to_peer("laptop")
    async with asyncio.timeout(10):
        conn_a = await incoming
    assert conn_a.peer == PeerInfo("phone", "Phone")
    await conn_b.disconnect()


async def test_a_short_lived_device_leaves_no_record_and_an_offline_one_can_be_forgotten(relay, cleanup):
    a = relay("laptop", "Laptop")
    cli = relay("cli", "Script", options=dataclasses.replace(FAST, leave_presence=False))
    tablet = relay("tablet", "Tablet")
    cleanup += [a, cli, tablet]
    await a.start()
    await cli.start()
    await tablet.start()
    await wait_for(lambda: len(a._view.online) == 2, what="both devices online")
    await cli.stop()
    await tablet.stop()
    # The tablet stays known (offline, last seen); the short-lived one is gone from every list.
    await wait_for(lambda: [(s.info.id, s.online) for s in a._view.known] == [("tablet", False)],
                   what="only the tablet known, offline")
    with pytest.raises(ConnectError, match="only an offline device can be forgotten"):
        await a.forget_peer("laptop")
    await a.forget_peer("tablet")
    await wait_for(lambda: a._view.known == [] or list(a._view.known) == [], what="the tablet forgotten")
    assert await a.get_known_peers() == []
