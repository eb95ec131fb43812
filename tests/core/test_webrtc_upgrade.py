"""Tests for core.upgrade: relay connections upgraded to WebRTC (two managers on the emulator, aiortc on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core import events as ev
from core.options import ManagerOptions
from core.peer import PeerConnection, PeerInfo, Route
from core.manager import FirebasePeerConnectionManager
from core.protocol.linkframes import decode_frame
from core.webrtc.upgrade import ConnectionUpgrade, WebRTCUpgrader, webrtc_upgrader

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
USER = "alice"
WAIT = 30.0  # upper bound for anything a test waits for; never an assertion about speed

FAST = ManagerOptions(
    heartbeat_interval=0.5,
    connect_timeout=15.0,
    ack_timeout=20.0,
    retransmit_interval=1.0,
    ping_interval=0.5,
    peer_timeout=10.0,
    upgrade_timeout=10.0,
    reupgrade_interval=0.5,
)
# Loopback only, and a short idle time-out so a torn-down transport is noticed quickly.
LINK = {"host_addresses": ("127.0.0.1",), "keepalive_interval": 0.2, "idle_timeout": 1.5}


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def both_on_webrtc(conn_a: PeerConnection, conn_b: PeerConnection) -> None:
    """Wait (bounded) until both sides carry their frames over a WebRTC link. Each side attaches its link when its
    own data channel opens, and on a loaded machine one side may still be (or be back) on the relay when the other
    is already on WebRTC: a test that needs both links waits for them instead of assuming them."""
    await wait_for(lambda: all(c.transport == "webrtc" and c._link is not None for c in (conn_a, conn_b)),
                   "both sides on WebRTC")


class Recorder:
    def __init__(self, emitter: Any, *names: str) -> None:
        self.items: list[tuple[str, Any]] = []
        for name in names:
            emitter.on(name, lambda payload, name=name: self.items.append((name, payload)))

    def of(self, name: str) -> list[Any]:
        return [payload for kind, payload in self.items if kind == name]


class Pair:
    def __init__(self, a: FirebasePeerConnectionManager, b: FirebasePeerConnectionManager) -> None:
        self.a, self.b = a, b
        self.incoming: asyncio.Future[PeerConnection] = asyncio.get_running_loop().create_future()
        self.incoming_events: Recorder | None = None

        def on_incoming(event: ev.IncomingConnection) -> None:
            if not self.incoming.done():
                # Subscribed in the handler, as a consumer does: events held until hand-out come after it.
                self.incoming_events = Recorder(event.connection.events, ev.UPGRADE_FAILED, ev.DATA)
                self.incoming.set_result(event.connection)

        b.events.on(ev.INCOMING_CONNECTION, on_incoming)

    async def connect(self, *, confirm: bool = False) -> tuple[PeerConnection, PeerConnection]:
        conn_a = await self.a.connect_to_peer("phone", confirm_data_receival=confirm)
        self.outgoing_events = Recorder(conn_a.events, ev.UPGRADE_FAILED, ev.DATA)
        async with asyncio.timeout(WAIT):
            conn_b = await self.incoming
        return conn_a, conn_b


@pytest.fixture
async def managers(firebase_app_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    firebase_app_factory.load_rules(RULES)
    started: list[FirebasePeerConnectionManager] = []

    async def make(upgrader_a: Any, upgrader_b: Any, options: ManagerOptions = FAST) -> Pair:
        a = FirebasePeerConnectionManager(USER, PeerInfo("laptop", "Laptop"), app=firebase_app_factory.make(
            {"uid": USER}), options=options, upgrader=upgrader_a)
        b = FirebasePeerConnectionManager(USER, PeerInfo("phone", "Phone"), app=firebase_app_factory.make(
            {"uid": USER}), options=options, upgrader=upgrader_b)
        for manager in (a, b):
            await manager.start()
            started.append(manager)
        await wait_for(lambda: a._view.get("phone") is not None, "the phone to be online")
        return Pair(a, b)

    yield make
    for manager in started:
        await manager.stop()


def spy_upgrades(upgrader: WebRTCUpgrader) -> list[ConnectionUpgrade]:
    """Every per-connection upgrade the upgrader starts (to look at its events before the connection is handed out)."""
    seen: list[ConnectionUpgrade] = []
    upgrader.on_upgrade = seen.append
    return seen


async def test_both_sides_upgrade_before_the_connection_is_handed_out(managers: Any) -> None:
    pair = await managers(webrtc_upgrader(FAST, **LINK), webrtc_upgrader(FAST, **LINK))
    conn_a, conn_b = await pair.connect()
    assert conn_a.transport == "webrtc"
    assert conn_b.transport == "webrtc"
    # Both on 127.0.0.1: the selected candidate pair is host to host, and the connection says so.
    assert conn_a.route == conn_b.route == Route("host", "host", "host")
    # More frames in flight over WebRTC (so fewer acknowledgements); the relay's window comes back on fallback.
    assert conn_a._stream.timers.window == conn_b._stream.timers.window == FAST.webrtc_send_window
    got_b = Recorder(conn_b.events, ev.DATA, ev.BINARY)
    got_a = Recorder(conn_a.events, ev.DATA)
    await conn_a.send("hello over webrtc")
    await conn_a.send_bytes(b"\x00\xffbytes")
    await conn_b.send("and back")
    await wait_for(lambda: len(got_b.items) == 2 and len(got_a.items) == 1, "messages both ways")
    assert got_b.of(ev.DATA) == [ev.Data("hello over webrtc")]
    assert got_b.of(ev.BINARY) == [ev.BinaryData(b"\x00\xffbytes")]
    assert got_a.of(ev.DATA) == [ev.Data("and back")]
    closed = Recorder(conn_b.events, ev.CLOSED)
    await conn_a.disconnect()
    # The phone acknowledged the close although it shut its WebRTC link at once (the ack also goes by the relay).
    assert conn_a._close_acked.is_set()
    await wait_for(lambda: closed.items, "the phone to see the disconnect")
    assert closed.of(ev.CLOSED)[0].reason == "peer-requested-closed"


@pytest.mark.parametrize("disabled", ["initiator", "target"])
async def test_one_side_with_webrtc_off_gives_a_relay_connection_with_the_reason(managers: Any, disabled: str) -> None:
    off = dataclasses.replace(FAST, webrtc=False)
    upgrader_a = webrtc_upgrader(off if disabled == "initiator" else FAST, **LINK)
    upgrader_b = webrtc_upgrader(off if disabled == "target" else FAST, **LINK)
    seen_a, seen_b = spy_upgrades(upgrader_a), spy_upgrades(upgrader_b)
    pair = await managers(upgrader_a, upgrader_b)
    conn_a, conn_b = await pair.connect()
    events_a = pair.outgoing_events
    assert conn_a.transport == "relay" and conn_b.transport == "relay"
    for upgrade in (*seen_a, *seen_b):
        assert upgrade.failures, "each side must know why there is no WebRTC"
        assert "turned off" in upgrade.failures[0]
    # The consumer of each side sees the reason: on the connection, and as an event right after hand-out.
    for conn, events in ((conn_a, events_a), (conn_b, pair.incoming_events)):
        assert conn.upgrade_failure is not None and "turned off" in conn.upgrade_failure.reason
        await wait_for(lambda events=events: events.of(ev.UPGRADE_FAILED), "the held upgrade_failed event")
        assert events.of(ev.UPGRADE_FAILED) == [conn.upgrade_failure]
    on_side = conn_b if disabled == "initiator" else conn_a
    assert "other device" in on_side.upgrade_failure.reason
    got = Recorder(conn_b.events, ev.DATA)
    await conn_a.send("over the relay")
    await wait_for(lambda: got.items, "a message over the relay")


async def test_a_thousand_confirmed_messages_survive_a_torn_down_transport_and_come_back_to_webrtc(
    managers: Any,
) -> None:
    pair = await managers(webrtc_upgrader(FAST, **LINK), webrtc_upgrader(FAST, **LINK))
    conn_a, conn_b = await pair.connect(confirm=True)
    await both_on_webrtc(conn_a, conn_b)
    changes = Recorder(conn_a.events, ev.LINK_CHANGED)
    got = Recorder(conn_b.events, ev.DATA)
    count = 1000
    sending = asyncio.gather(*(conn_a.send(f"m{i}") for i in range(count)))
    await wait_for(lambda: len(got.items) >= count // 3, "a third of the messages")
    # Tear down the phone's aiortc transport, as a network failure would: once the phone is on WebRTC (a loaded
    # machine may have sent it back to the relay for a moment meanwhile).
    await wait_for(lambda: conn_b._link is not None, "the phone's WebRTC link")
    link = conn_b._link.link  # the WebRTC link the connection carries its frames over now
    await link.peer_connection.sctp.transport.transport.stop()
    async with asyncio.timeout(WAIT * 2):
        await sending
    await wait_for(lambda: len(got.items) == count, "every message")
    assert [item.data for item in got.of(ev.DATA)] == [f"m{i}" for i in range(count)]
    await wait_for(lambda: conn_a.transport == "webrtc" and conn_b.transport == "webrtc", "the re-upgrade")
    transports = [change.transport for change in changes.of(ev.LINK_CHANGED)]
    assert transports[:2] == ["relay", "webrtc"], changes.items
    # The fallback has no route; the re-opened link says how it got through.
    assert [change.route for change in changes.of(ev.LINK_CHANGED)][:2] == [None, Route("host", "host", "host")]
    assert conn_a.route == Route("host", "host", "host")
    await conn_a.send("after the re-upgrade")
    await wait_for(lambda: len(got.items) == count + 1, "the last message")


async def test_the_manager_upgrades_by_default_and_declines_with_webrtc_off(managers: Any) -> None:
    pair = await managers(None, None, dataclasses.replace(FAST, webrtc=False))
    assert isinstance(pair.a.upgrader, WebRTCUpgrader) and not pair.a.upgrader.enabled
    conn_a, conn_b = await pair.connect()
    assert conn_a.transport == "relay" and conn_a.upgrade_failure is not None
    default = FirebasePeerConnectionManager(USER, PeerInfo("x", "X"), options=FAST)
    assert isinstance(default.upgrader, WebRTCUpgrader) and default.upgrader.enabled


@pytest.mark.parametrize("confirm", [True, False])
async def test_a_mebibyte_string_and_bytes_cross_webrtc_intact(managers: Any, confirm: bool) -> None:
    pair = await managers(webrtc_upgrader(FAST, **LINK), webrtc_upgrader(FAST, **LINK))
    conn_a, conn_b = await pair.connect(confirm=confirm)
    await both_on_webrtc(conn_a, conn_b)
    changes = Recorder(conn_a.events, ev.LINK_CHANGED)
    got = Recorder(conn_b.events, ev.DATA, ev.BINARY)
    text = "".join(chr(0x20 + i % 0x3000) for i in range(1024 * 1024 // 2))
    blob = bytes(range(256)) * 4096
    await conn_a.send(text)
    await conn_a.send_bytes(blob)
    await conn_a.send("after")
    if confirm:
        assert len(got.items) == 3
    await wait_for(lambda: len(got.items) == 3, "three messages")
    assert [item.data for _, item in got.items] == [text, blob, "after"]
    assert changes.items == [] and conn_a.transport == "webrtc"


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_a_large_message_cut_by_a_torn_down_transport_arrives_once_intact(managers: Any, kind: str) -> None:
    pair = await managers(webrtc_upgrader(FAST, **LINK), webrtc_upgrader(FAST, **LINK))
    conn_a, conn_b = await pair.connect(confirm=True)
    await both_on_webrtc(conn_a, conn_b)
    changes = Recorder(conn_a.events, ev.LINK_CHANGED)
    got = Recorder(conn_b.events, ev.DATA, ev.BINARY)
    # The phone's WebRTC link passes 20 fragments on, then its transport is torn down and nothing more of the
    # link reaches the connection: the rest of the message must come over the relay.
    frame_link = conn_b._link
    passed: list[bool] = []
    stopped: list[asyncio.Future[Any]] = []

    def cut(message: Any) -> None:
        if stopped:
            return
        frame_link._on_message(message)
        if decode_frame(message.data).get("more"):
            passed.append(conn_b._stream._partial_kind is not None)
        if len(passed) == 20:
            transport = frame_link.link.peer_connection.sctp.transport.transport
            stopped.append(asyncio.ensure_future(transport.stop()))

    frame_link.link.events.remove_listener("message", frame_link._on_message)
    frame_link.link.events.on("message", cut)
    # 64 fragments, two send windows: 4 MiB of text, or 3 MiB of bytes (binary messages on WebRTC, base64 on the
    # relay after the fallback).
    payload: str | bytes = "0123456789abcdef" * (4 * 1024 * 1024 // 16)
    if kind == "bytes":
        payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    async with asyncio.timeout(WAIT * 2):
        # Confirmed: the phone's application has all of it.
        await (conn_a.send(payload) if kind == "text" else conn_a.send_bytes(payload))
    assert all(passed) and len(passed) == 20, "the transport went down in the middle of the message"
    assert [change.transport for change in changes.of(ev.LINK_CHANGED)][:1] == ["relay"]
    if conn_a.transport == "relay":
        assert conn_a._stream.timers.window == FAST.send_window
    assert len(got.items) == 1 and got.items[0][1].data == payload
    await conn_a.send("and after it")
    await wait_for(lambda: len(got.items) == 2, "the next message")
    assert got.items[1][1].data == "and after it"
    await asyncio.gather(*stopped)
