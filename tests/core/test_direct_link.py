"""The direct link between two managers on the emulator (TCP + TLS 1.3 on 127.0.0.1), tried together with WebRTC
by the manager's default upgrader (core.links)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core import events as ev
from core.direct.certs import session_certificate
from core.files import FileTransfers
from core.links import ConnectionLinks, LinkUpgrader, link_upgrader
from core.manager import FirebasePeerConnectionManager
from core.options import ManagerOptions
from core.peer import PeerConnection, PeerInfo

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
USER = "alice"
WAIT = 30.0  # upper bound for anything a test waits for; never an assertion about speed

FAST = ManagerOptions(
    heartbeat_interval=0.5, connect_timeout=15.0, ack_timeout=20.0, retransmit_interval=1.0, ping_interval=0.5,
    peer_timeout=10.0, upgrade_timeout=10.0, reupgrade_interval=0.5, addresses=("127.0.0.1",), direct_timeout=3.0,
    webrtc=False,
)
WEBRTC_LINK = {"keepalive_interval": 0.2, "idle_timeout": 1.5}


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Pair:
    def __init__(self, a: FirebasePeerConnectionManager, b: FirebasePeerConnectionManager) -> None:
        self.a, self.b = a, b
        self.incoming: asyncio.Queue[PeerConnection] = asyncio.Queue()
        b.events.on(ev.INCOMING_CONNECTION, lambda e: self.incoming.put_nowait(e.connection))

    async def connect(self) -> tuple[PeerConnection, PeerConnection]:
        conn_a = await self.a.connect_to_peer("phone")
        async with asyncio.timeout(WAIT):
            conn_b = await self.incoming.get()
        return conn_a, conn_b


@pytest.fixture
async def managers(firebase_app_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    firebase_app_factory.load_rules(RULES)
    started: list[FirebasePeerConnectionManager] = []

    async def make(upgrader_a: Any = None, upgrader_b: Any = None, options_a: ManagerOptions = FAST,
                   options_b: ManagerOptions | None = None) -> Pair:
        options_b = options_b or options_a
        a = FirebasePeerConnectionManager(USER, PeerInfo("laptop", "Laptop"), app=firebase_app_factory.make(
            {"uid": USER}), options=options_a, upgrader=upgrader_a or link_upgrader(options_a, **WEBRTC_LINK))
        b = FirebasePeerConnectionManager(USER, PeerInfo("phone", "Phone"), app=firebase_app_factory.make(
            {"uid": USER}), options=options_b, upgrader=upgrader_b or link_upgrader(options_b, **WEBRTC_LINK))
        for manager in (a, b):
            await manager.start()
            started.append(manager)
        await wait_for(lambda: a._view.get("phone") is not None, "the phone to be online")
        return Pair(a, b)

    yield make
    for manager in started:
        await manager.stop()


def spy(upgrader: LinkUpgrader) -> list[ConnectionLinks]:
    seen: list[ConnectionLinks] = []
    upgrader.on_upgrade = seen.append
    return seen


async def test_a_session_opens_a_direct_link_and_carries_messages_both_ways(managers: Any) -> None:
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(FAST)
    links_a = spy(upgrader_a)
    pair = await managers(upgrader_a, upgrader_b)
    conn_a, conn_b = await pair.connect()
    assert (conn_a.transport, conn_b.transport) == ("direct", "direct")
    got_b: list[Any] = []
    got_a: list[Any] = []
    conn_b.events.on(ev.DATA, got_b.append)
    conn_b.events.on(ev.BINARY, got_b.append)
    conn_a.events.on(ev.DATA, got_a.append)
    await conn_a.send("hello, direct")
    await conn_a.send_bytes(b"\x00\xff" * 40_000)  # over one relay frame: split and joined again
    await conn_b.send("and back")
    await wait_for(lambda: len(got_b) == 2 and len(got_a) == 1, "messages both ways")
    assert got_b == [ev.Data("hello, direct"), ev.BinaryData(b"\x00\xff" * 40_000)]
    assert got_a == [ev.Data("and back")]
    link = links_a[0].direct.link
    assert link is not None and not link.is_closed


class Rewriting:
    """An upgrader whose outgoing direct-link signals are rewritten on the way, as by someone who can write the
    signalling (``rewrite`` takes and returns a signal)."""

    def __init__(self, inner: LinkUpgrader, rewrite: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.inner, self.rewrite = inner, rewrite

    async def __call__(self, host: Any) -> None:
        await self.inner(_RewritingHost(host, self.rewrite))


class _RewritingHost:
    def __init__(self, host: Any, rewrite: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._host, self._rewrite = host, rewrite

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    async def send_signal(self, signal: dict[str, Any]) -> None:
        if "direct" in signal and signal.get("type") in ("offer", "answer"):
            signal = self._rewrite(signal)
        await self._host.send_signal(signal)


def another_certificate(signal: dict[str, Any]) -> dict[str, Any]:
    import base64
    return {**signal, "cert": base64.b64encode(session_certificate().der).decode()}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_certificate_that_does_not_match_is_refused_and_the_session_stays_on_the_relay(
        managers: Any) -> None:
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(FAST)
    links_a, links_b = spy(upgrader_a), spy(upgrader_b)
    pair = await managers(Rewriting(upgrader_a, another_certificate), upgrader_b)
    conn_a, conn_b = await pair.connect()
    assert (conn_a.transport, conn_b.transport) == ("relay", "relay")
    # Each side refused the other: the phone's handshake saw a certificate other than the signalled one, and the
    # laptop's handshake was refused by the phone (which pinned the false certificate).
    assert "certificate is not the one it signalled" in links_b[0].direct.failures[0]
    assert "refused our certificate" in links_a[0].direct.failures[0]
    assert conn_b.upgrade_failure is not None and "direct" in conn_b.upgrade_failure.reason
    assert links_a[0].direct.link is None and links_b[0].direct.link is None
    got: list[Any] = []
    conn_b.events.on(ev.DATA, got.append)
    await conn_a.send("still here, over the relay")
    await wait_for(lambda: got == [ev.Data("still here, over the relay")], "the message over the relay")


async def test_no_reachable_candidate_leads_to_webrtc(managers: Any) -> None:
    options = dataclasses.replace(FAST, webrtc=True, direct_timeout=1.5)
    port = closed_port()

    def unreachable(signal: dict[str, Any]) -> dict[str, Any]:
        return {**signal, "candidates": [["127.0.0.1", port]]}

    upgrader_a, upgrader_b = link_upgrader(options, **WEBRTC_LINK), link_upgrader(options, **WEBRTC_LINK)
    links_a = spy(upgrader_a)
    pair = await managers(Rewriting(upgrader_a, unreachable), Rewriting(upgrader_b, unreachable), options)
    conn_a, conn_b = await pair.connect()
    await wait_for(lambda: conn_a.transport == conn_b.transport == "webrtc", "both sides on WebRTC")
    assert "refused" in links_a[0].direct.failures[0]
    assert conn_a.upgrade_failure is None  # WebRTC carries the data: nothing to warn about


async def test_no_direct_on_one_side_keeps_both_off_it(managers: Any) -> None:
    off = dataclasses.replace(FAST, direct=False)
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(off)
    links_a = spy(upgrader_a)
    pair = await managers(upgrader_a, upgrader_b, FAST, off)
    conn_a, conn_b = await pair.connect()
    assert (conn_a.transport, conn_b.transport) == ("relay", "relay")
    assert links_a[0].direct.peer_declined
    assert links_a[0].direct.listeners == [] or all(listener.closed for listener in links_a[0].direct.listeners)
    assert "turned off on the other device" in (conn_a.upgrade_failure.reason if conn_a.upgrade_failure else "")
    # The laptop does not try again.
    attempts = links_a[0].direct.attempt_number
    await asyncio.sleep(FAST.reupgrade_interval * 3)
    assert links_a[0].direct.attempt_number == attempts


async def test_a_listener_accepts_nothing_after_the_attempt(managers: Any) -> None:
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(FAST)
    links_a, links_b = spy(upgrader_a), spy(upgrader_b)
    pair = await managers(upgrader_a, upgrader_b)
    conn_a, conn_b = await pair.connect()
    assert conn_a.transport == "direct"
    candidates = [c for links in (links_a, links_b) for lst in links[0].direct.listeners for c in lst.candidates]
    assert candidates
    for host, port in candidates:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)


async def test_the_direct_link_torn_down_mid_transfer_falls_back_without_loss_and_comes_back(
        managers: Any, tmp_path: Path) -> None:
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(FAST)
    links_a = spy(upgrader_a)
    pair = await managers(upgrader_a, upgrader_b)
    conn_a, conn_b = await pair.connect()
    changes: list[ev.LinkChanged] = []
    conn_a.events.on(ev.LINK_CHANGED, changes.append)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 * 1024 * 1024))
    sender, receiver = FileTransfers(conn_a), FileTransfers(conn_b)
    offers: asyncio.Queue[Any] = asyncio.Queue()
    receiver.events.on(ev.INCOMING_TRANSFER, lambda e: offers.put_nowait(e.offer))
    outgoing = await sender.send_files([source])
    incoming = await (await asyncio.wait_for(offers.get(), WAIT)).accept(tmp_path / "in")
    await wait_for(lambda: incoming.bytes_done > 2 * 1024 * 1024, "the transfer to be under way")
    first = links_a[0].direct.link
    assert first is not None and incoming.bytes_done < source.stat().st_size
    first.abort()  # the TCP connection breaks, as when a network goes away
    await asyncio.wait_for(asyncio.gather(outgoing.wait(), incoming.wait()), WAIT * 2)
    await wait_for(lambda: conn_a.transport == "direct", "the direct link to come back")
    assert [c.transport for c in changes][:2] == ["relay", "direct"], changes
    assert links_a[0].direct.link is not first
    saved = tmp_path / "in" / "big.bin"
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    await sender.close()
    await receiver.close()


class _Host:
    """What a direct link tells its connection, recorded (the link itself is real: TLS over loopback)."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.detached: list[str] = []

    def receive_frame(self, frame: object) -> None:
        self.frames.append(frame)

    def receive_frames(self, frames: list[Any]) -> None:
        self.frames += frames

    def detach_link(self, link: Any, reason: str = "") -> None:
        self.detached.append(reason)


async def _raced_wires() -> tuple[Any, Any]:
    """Two wires that won a race between two sides on 127.0.0.1 (the first one the initiator's)."""
    from core.direct.link import Listener, race

    certs = session_certificate(), session_certificate()
    listeners = Listener(), Listener()
    for listener in listeners:
        await listener.start(("127.0.0.1",))
    return await asyncio.gather(*(
        race(initiator=side == 0, own=certs[side], peer_cert=certs[1 - side].der,
             peer_candidates=listeners[1 - side].candidates, listener=listeners[side], timeout=WAIT)
        for side in (0, 1)))


async def test_frames_sent_before_the_other_side_reads_arrive_and_a_broken_record_ends_only_itself(caplog) -> None:
    from core.direct.link import DirectLink
    from core.protocol.direct import HEADER, TEXT, encode_stream_frame, encode_stream_frames

    first, second = await _raced_wires()
    chunk = os.urandom(3 * 1024 * 1024 + 5)
    fragments = [{"kind": "binary", "seq": 2 + i, "data": chunk[at:at + 48 * 1024], "more": True}
                 for i, at in enumerate(range(0, len(chunk), 48 * 1024))]
    del fragments[-1]["more"]
    # Written at once, before the other side has a link reading them: they wait in its wire.
    first.write(encode_stream_frame({"kind": "data", "seq": 1, "data": "early"}))
    first.transport.writelines(encode_stream_frames(fragments))
    first.write(HEADER.pack(2, TEXT) + b"\xff\xfe")  # a record that is no frame: left out, logged
    first.write(encode_stream_frame({"kind": "data", "seq": 99, "data": "after"}))
    await first.drain()
    await asyncio.sleep(0.2)
    host = _Host()
    link = DirectLink(second, host, idle_timeout=WAIT)  # type: ignore[arg-type]
    await wait_for(lambda: len(host.frames) == len(fragments) + 2, "every frame")
    assert host.frames[0]["data"] == "early" and host.frames[-1]["data"] == "after"
    assert b"".join(bytes(frame["data"]) for frame in host.frames[1:-1]) == chunk
    assert "UTF-8" in caplog.text and not host.detached
    first.write(HEADER.pack(5, 77) + b"hello")  # a header of no known kind: nothing after it can be trusted
    await wait_for(lambda: bool(host.detached), "the link to give up")
    assert "framing" in host.detached[0] and link.is_closed
    first.abort()


async def test_a_wire_lost_before_its_link_started_tells_the_link_at_once() -> None:
    from core.direct.link import DirectLink
    from core.protocol.direct import encode_stream_frame

    first, second = await _raced_wires()
    first.write(encode_stream_frame({"kind": "data", "seq": 1, "data": "last words"}))
    await first.drain()
    first.transport.close()
    await wait_for(lambda: second.transport.is_closing(), "the other side to see the connection end")
    host = _Host()
    link = DirectLink(second, host, idle_timeout=WAIT)  # type: ignore[arg-type]
    await wait_for(lambda: bool(host.detached), "the link to learn it is lost")
    assert [frame["data"] for frame in host.frames] == ["last words"]  # what came first is not thrown away
    assert "closed" in host.detached[0] and link.is_closed
