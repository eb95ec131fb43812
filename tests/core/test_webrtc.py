"""Tests for core.webrtc: two real aiortc links in one process over UDP on 127.0.0.1, signalled in memory."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCIceServer

from core.errors import (
    ClosedError,
    ConnectionClosedError,
    MessageTooLargeError,
    NoRouteError,
    ProtocolError,
    UpgradeError,
)
from core.peer import Route
from core.events import ProtocolErrorEvent
from core.protocol.packets import MAX_PACKET_BYTES, ChannelMessage
from core.options import IceServer
from core.webrtc.link import LinkClosed, LinkOptions, LinkState, WebRTCLink, rtc_configuration

# Tests gather host candidates on 127.0.0.1 only: no traffic ever leaves loopback.
LOOPBACK = LinkOptions(host_addresses=("127.0.0.1",))
WAIT = 20.0  # upper bound for anything a test waits for; never an assertion about speed


class Wire:
    """One direction of in-memory signalling: signals go through JSON, as they would over the relay."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.sent: list[dict] = []
        self.deliver = True

    async def send(self, signal: dict) -> None:
        copied = json.loads(json.dumps(signal))
        self.sent.append(copied)
        if self.deliver:
            self.queue.put_nowait(copied)

    async def pump(self, link: WebRTCLink) -> None:
        while True:
            await link.handle_signal(await self.queue.get())


class Recorder:
    """Collects a link's events."""

    def __init__(self, link: WebRTCLink) -> None:
        self.messages: list[str | bytes] = []
        self.closed: asyncio.Future[LinkClosed] = asyncio.get_running_loop().create_future()
        self.protocol_errors: list[ProtocolErrorEvent] = []
        self.arrived = asyncio.Event()
        link.events.on("message", self._on_message)
        link.events.on("closed", self._on_closed)
        link.events.on("protocol_error", self.protocol_errors.append)

    def _on_message(self, message: ChannelMessage) -> None:
        self.messages.append(message.data)
        self.arrived.set()

    def _on_closed(self, closed: LinkClosed) -> None:
        assert not self.closed.done(), "closed must be emitted once"
        self.closed.set_result(closed)

    async def wait_for(self, count: int) -> list[str | bytes]:
        async with asyncio.timeout(WAIT):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


class Pair:
    def __init__(self, a: WebRTCLink, b: WebRTCLink, to_a: Wire, to_b: Wire) -> None:
        self.a, self.b, self.to_a, self.to_b = a, b, to_a, to_b
        self.ra, self.rb = Recorder(a), Recorder(b)

    async def open(self) -> None:
        await asyncio.gather(self.a.open(WAIT), self.b.open(WAIT))


@asynccontextmanager
async def link_pair(
    options_a: LinkOptions = LOOPBACK, options_b: LinkOptions = LOOPBACK
) -> AsyncIterator[Pair]:
    to_a, to_b = Wire(), Wire()
    a = WebRTCLink("offerer", to_b.send, options_a)
    b = WebRTCLink("answerer", to_a.send, options_b)
    pumps = [asyncio.create_task(to_b.pump(b)), asyncio.create_task(to_a.pump(a))]
    try:
        yield Pair(a, b, to_a, to_b)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await asyncio.gather(a.close(), b.close())


async def test_open_then_text_and_binary_round_trip() -> None:
    async with link_pair() as pair:
        assert pair.a.state is LinkState.NEW
        await pair.open()
        assert pair.a.state is LinkState.OPEN and pair.b.state is LinkState.OPEN
        await pair.a.send("hello from a")
        await pair.a.send(b"\x00\x01binary")
        await pair.b.send("héllo from b")
        await pair.b.send(b"")
        assert await pair.rb.wait_for(2) == ["hello from a", b"\x00\x01binary"]
        assert await pair.ra.wait_for(2) == ["héllo from b", b""]


async def test_an_open_link_says_it_got_through_between_host_addresses() -> None:
    async with link_pair() as pair:
        assert pair.a.route is None  # nothing selected yet
        await pair.open()
        assert pair.a.route == pair.b.route == Route("host", "host", "host")
        assert str(pair.a.route) == "via host"


async def test_a_dead_stun_server_delays_gathering_by_the_gather_timeout_only() -> None:
    # A STUN server on loopback that never answers (a bound socket that reads nothing): both sides still connect
    # over their host candidates, within an open time-out shorter than aioice's own 5 s gathering wait.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        stun = (IceServer(f"stun:127.0.0.1:{silent.getsockname()[1]}"),)
        options = replace(LOOPBACK, ice_servers=stun, gather_timeout=0.5)
        async with link_pair(options, options) as pair:
            await asyncio.gather(pair.a.open(4.0), pair.b.open(4.0))
            assert pair.a.route is not None and pair.a.route.kind == "host"
    finally:
        silent.close()


async def test_signals_are_small_json_with_loopback_candidates_only() -> None:
    async with link_pair() as pair:
        await pair.open()
        (offer,) = pair.to_b.sent
        (answer,) = pair.to_a.sent
        assert offer["type"] == "offer" and answer["type"] == "answer"
        for signal in (offer, answer):
            candidates = [line for line in signal["sdp"].splitlines() if line.startswith("a=candidate:")]
            assert candidates, "the SDP must carry candidates"
            assert all(" 127.0.0.1 " in line for line in candidates), candidates


async def test_the_link_sockets_get_the_requested_receive_buffer() -> None:
    rmem_max = Path("/proc/sys/net/core/rmem_max")
    if not rmem_max.exists() or int(rmem_max.read_text()) <= 256 * 1024:
        pytest.skip("the kernel does not allow receive buffers above aioice's own 256 KiB")
    wanted = min(1024 * 1024, int(rmem_max.read_text()))
    async with link_pair(replace(LOOPBACK, receive_buffer=wanted), replace(LOOPBACK, receive_buffer=None)) as pair:
        await pair.open()

        def buffers(link: WebRTCLink) -> list[int]:
            connection = link.peer_connection.sctp.transport.transport.iceGatherer._connection
            return [
                protocol.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                for protocol in connection._protocols
            ]

        # Linux reports twice the size asked for (it counts its bookkeeping).
        assert buffers(pair.a) and all(size >= 2 * wanted for size in buffers(pair.a))
        assert all(size < 2 * wanted for size in buffers(pair.b))


async def test_a_one_mebibyte_string_crosses_intact() -> None:
    text = "".join(chr(0x20 + (i * 7919) % 0x2000) for i in range(1024 * 1024 // 2))
    assert len(text.encode()) > 1024 * 1024
    async with link_pair() as pair:
        await pair.open()
        await pair.a.send(text)
        await pair.a.send("after")
        assert await pair.rb.wait_for(2) == [text, "after"]


async def test_a_thousand_messages_arrive_in_order() -> None:
    async with link_pair() as pair:
        await pair.open()
        for i in range(1000):
            await pair.a.send(f"message {i}" if i % 2 else f"message {i}".encode())
        received = await pair.rb.wait_for(1000)
        assert received == [f"message {i}" if i % 2 else f"message {i}".encode() for i in range(1000)]


async def test_concurrent_large_sends_do_not_interleave_their_fragments() -> None:
    # A small high-water mark makes each send wait between its fragments, giving the other a chance to cut in.
    options = replace(LOOPBACK, high_water=MAX_PACKET_BYTES, low_water=MAX_PACKET_BYTES // 4)
    async with link_pair(options, options) as pair:
        await pair.open()
        first, second = "a" * (5 * MAX_PACKET_BYTES), b"b" * (5 * MAX_PACKET_BYTES)
        await asyncio.gather(pair.a.send(first), pair.a.send(second))
        received = await pair.rb.wait_for(2)
        assert sorted(received, key=lambda item: isinstance(item, bytes)) == [first, second]
        assert pair.rb.protocol_errors == []


async def test_the_peer_closing_is_reported_with_its_reason() -> None:
    async with link_pair() as pair:
        await pair.open()
        await pair.b.close()
        async with asyncio.timeout(WAIT):
            closed = await pair.ra.closed
        assert closed.initiator == "peer"
        assert "closed the link" in closed.reason
        assert (await pair.rb.closed).initiator == "local"
        assert pair.a.state is LinkState.CLOSED
        with pytest.raises(ConnectionClosedError, match="closed the link"):
            await pair.a.send("too late")
        with pytest.raises(ClosedError):
            await pair.b.send("too late")


async def test_the_transport_torn_down_under_the_link_is_reported_on_both_sides() -> None:
    # A short idle time-out lets the far side notice that nothing arrives any more.
    options = replace(LOOPBACK, keepalive_interval=0.2, idle_timeout=1.5)
    async with link_pair(options, options) as pair:
        await pair.open()
        await pair.b.send("before")
        await pair.ra.wait_for(1)
        # Tear down b's ICE transport as a network failure would: no close message reaches a.
        await pair.b.peer_connection.sctp.transport.transport.stop()
        async with asyncio.timeout(WAIT):
            closed_b = await pair.rb.closed
            closed_a = await pair.ra.closed
        assert closed_b.initiator == "failure" and closed_b.reason
        assert closed_a.initiator == "failure"
        assert "nothing arrived" in closed_a.reason or "connection" in closed_a.reason
        assert isinstance(closed_a.error, ConnectionClosedError)


async def test_open_times_out_with_a_reason_when_the_peer_never_answers() -> None:
    async with link_pair() as pair:
        pair.to_b.deliver = False
        with pytest.raises(UpgradeError, match="did not answer"):
            await pair.a.open(0.5)
        assert pair.a.state is LinkState.CLOSED
        closed = await pair.ra.closed
        assert closed.initiator == "failure" and "did not answer" in closed.reason


async def test_open_times_out_with_a_reason_when_no_offer_arrives() -> None:
    link = WebRTCLink("answerer", Wire().send, LOOPBACK)
    with pytest.raises(UpgradeError, match="no WebRTC offer arrived"):
        await link.open(0.2)
    await link.close()


async def test_abort_fails_a_waiting_open_with_the_given_reason() -> None:
    async with link_pair() as pair:
        pair.to_b.deliver = False
        opening = asyncio.create_task(pair.a.open(WAIT))
        await asyncio.sleep(0)
        await pair.a.abort("the other device has WebRTC turned off")
        with pytest.raises(UpgradeError, match="turned off"):
            await opening
        closed = await pair.ra.closed
        assert closed.initiator == "failure" and closed.reason == "the other device has WebRTC turned off"
        await pair.a.abort("again")  # no effect after close
        assert pair.a.closed_info == closed


async def test_no_network_path_is_reported_as_an_ice_problem() -> None:
    # The answerer gathers no candidate at all, so ICE can never find a pair: the time-out says so, and what to add.
    async with link_pair(LOOPBACK, replace(LOOPBACK, host_addresses=())) as pair:
        answering = asyncio.create_task(pair.b.open(WAIT))
        with pytest.raises(NoRouteError, match="network path.*add a STUN server") as caught:
            await pair.a.open(1.5)
        assert caught.value.missing == "stun"
        await pair.b.close()
        with pytest.raises(ClosedError):
            await answering


async def test_a_malformed_signal_gives_a_protocol_error_and_is_ignored() -> None:
    async with link_pair() as pair:
        for bad in ({}, {"type": "offer"}, {"type": "bogus", "sdp": "x"}, {"type": "offer", "sdp": 5}, "text"):
            with pytest.raises(ProtocolError):
                await pair.b.handle_signal(bad)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError, match="unexpected answer"):
            await pair.b.handle_signal({"type": "answer", "sdp": "v=0"})
        with pytest.raises(ProtocolError, match="not valid"):
            await pair.b.handle_signal({"type": "offer", "sdp": "this is not SDP"})
        # The pair still opens afterwards: bad input lost nothing.
        await pair.open()
        await pair.a.send("still fine")
        assert await pair.rb.wait_for(1) == ["still fine"]


async def test_a_failing_event_handler_does_not_break_the_link() -> None:
    async with link_pair() as pair:
        await pair.open()

        def broken(message: ChannelMessage) -> None:
            raise RuntimeError("consumer bug")

        pair.b.events.on("message", broken)
        await pair.a.send("one")
        await pair.a.send("two")
        assert await pair.rb.wait_for(2) == ["one", "two"]
        assert pair.b.state is LinkState.OPEN


async def test_garbage_in_the_data_channel_is_reported_and_the_link_keeps_working() -> None:
    async with link_pair() as pair:
        await pair.open()
        pair.a.data_channel.send(b"\x7f junk")  # bypasses the framing on purpose
        pair.a.data_channel.send("a text message")
        await pair.a.send("good")
        assert await pair.rb.wait_for(1) == ["good"]
        assert len(pair.rb.protocol_errors) == 2
        assert all(isinstance(event.error, ProtocolError) for event in pair.rb.protocol_errors)


async def test_a_message_over_the_limit_is_refused_before_sending() -> None:
    options = replace(LOOPBACK, max_message_bytes=1000)
    async with link_pair(options, options) as pair:
        await pair.open()
        with pytest.raises(MessageTooLargeError) as caught:
            await pair.a.send("x" * 1001)
        assert caught.value.size == 1001 and caught.value.limit == 1000
        await pair.a.send("x" * 1000)
        assert await pair.rb.wait_for(1) == ["x" * 1000]
        with pytest.raises(TypeError, match="str or bytes"):
            await pair.a.send(42)  # type: ignore[arg-type]


async def test_flow_control_keeps_the_buffer_under_the_high_water_mark() -> None:
    options = replace(LOOPBACK, high_water=256 * 1024, low_water=64 * 1024)
    message = b"f" * (MAX_PACKET_BYTES - 1)  # exactly one frame
    count = 128  # 8 MiB: far above the high-water mark if nothing held the sender back
    async with link_pair(options, options) as pair:
        await pair.open()
        highest = 0
        for _ in range(count):
            await pair.a.send(message)
            highest = max(highest, pair.a.buffered_amount)
        assert highest <= options.high_water + MAX_PACKET_BYTES
        assert highest > options.low_water, "the test must actually fill the buffer"
        received = await pair.rb.wait_for(count)
        assert all(item == message for item in received)


async def test_close_is_idempotent_and_leaves_no_task_behind() -> None:
    baseline = asyncio.all_tasks()
    async with link_pair() as pair:
        await pair.open()
        await pair.a.send("x")
        await pair.rb.wait_for(1)
        await asyncio.gather(pair.a.close(), pair.a.close())
        await pair.a.close()
        await pair.b.close()
        assert pair.a.peer_connection.connectionState == "closed"
        assert pair.b.peer_connection.connectionState == "closed"
    async with asyncio.timeout(WAIT):  # aiortc's own short-lived tasks finish by themselves
        while asyncio.all_tasks() - baseline:
            await asyncio.sleep(0.05)


async def test_using_a_closed_link_raises_closed_error() -> None:
    link = WebRTCLink("offerer", Wire().send, LOOPBACK)
    await link.close()
    with pytest.raises(ClosedError):
        await link.open(1)
    with pytest.raises(ClosedError):
        await link.send("x")
    await link.handle_signal({"type": "answer", "sdp": "v=0"})  # a late signal is ignored
    await link.close()


async def test_send_before_open_is_refused() -> None:
    link = WebRTCLink("offerer", Wire().send, LOOPBACK)
    with pytest.raises(ConnectionClosedError, match="not open"):
        await link.send("x")
    await link.close()


async def test_a_failing_signal_channel_fails_the_open_with_the_cause() -> None:
    async def broken(signal: dict) -> None:
        raise OSError("relay unreachable")

    link = WebRTCLink("offerer", broken, LOOPBACK)
    with pytest.raises(UpgradeError, match="could not send the offer") as caught:
        await link.open(WAIT)
    assert isinstance(caught.value.__cause__, OSError)
    assert link.state is LinkState.CLOSED


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ((), []),
        ((IceServer("stun:stun.example.org:3478"),), [RTCIceServer("stun:stun.example.org:3478")]),
        (
            (IceServer(("turn:turn.example.org", "turns:turn.example.org:5349"), "user", "secret"),),
            [RTCIceServer(["turn:turn.example.org", "turns:turn.example.org:5349"], "user", "secret")],
        ),
    ],
)
def test_ice_servers_map_to_aiortc(servers: tuple[IceServer, ...], expected: list[RTCIceServer]) -> None:
    configuration = rtc_configuration(LinkOptions(ice_servers=servers))
    assert isinstance(configuration, RTCConfiguration)
    # An empty list, never None: aiortc would otherwise add Google's public STUN server.
    assert configuration.iceServers == expected


@pytest.mark.parametrize("url", ["http://example.org", "stun:", "turn:host:port"])
def test_a_malformed_ice_server_url_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="ICE server URL"):
        rtc_configuration(LinkOptions(ice_servers=(IceServer(url),)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinkOptions(high_water=10, low_water=10),
        lambda: LinkOptions(keepalive_interval=5, idle_timeout=5),
        lambda: LinkOptions(max_message_bytes=0),
    ],
)
def test_inconsistent_options_are_refused(make: Callable[[], LinkOptions]) -> None:
    with pytest.raises(ValueError):
        make()


def test_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        WebRTCLink("leader", Wire().send)  # type: ignore[arg-type]


async def test_small_messages_sent_while_a_large_one_waits_for_room_keep_their_order() -> None:
    options = replace(LOOPBACK, high_water=MAX_PACKET_BYTES, low_water=MAX_PACKET_BYTES // 4)
    async with link_pair(options, options) as pair:
        await pair.open()
        big = "B" * (6 * MAX_PACKET_BYTES)
        sends = [asyncio.ensure_future(pair.a.send(big))]
        await asyncio.sleep(0)  # the big send is now waiting for room between its fragments
        sends += [asyncio.ensure_future(pair.a.send(f"small {i}")) for i in range(20)]
        await asyncio.gather(*sends)
        received = await pair.rb.wait_for(21)
        assert received == [big] + [f"small {i}" for i in range(20)]


async def test_send_now_sends_one_frame_at_once_or_declines_without_sending() -> None:
    options = replace(LOOPBACK, high_water=MAX_PACKET_BYTES, low_water=MAX_PACKET_BYTES // 4)
    async with link_pair(options, options) as pair:
        assert pair.a.send_now("too early") is False  # not open
        await pair.open()
        assert pair.a.send_now("first") is True
        assert pair.a.send_now(b"\x00second") is True
        assert pair.a.send_now("x" * MAX_PACKET_BYTES) is False  # needs two frames: send() must take it
        big = asyncio.ensure_future(pair.a.send("B" * (6 * MAX_PACKET_BYTES)))
        await asyncio.sleep(0)  # the big send waits for room between its fragments
        assert pair.a.send_now("behind the big one") is False  # would overtake it
        await big
        assert await pair.rb.wait_for(3) == ["first", b"\x00second", "B" * (6 * MAX_PACKET_BYTES)]
        await pair.a.close()
        assert pair.a.send_now("after close") is False
