"""The direct link's sans-I/O parts: its frames on a byte stream, its signals, and the order of links."""

from __future__ import annotations

import base64

import pytest

from core.errors import ProtocolError
from core.protocol.direct import (
    HEADER,
    MAX_BODY,
    SIGNAL_KEY,
    DirectSignal,
    FrameReader,
    encode_stream_frame,
    fingerprint,
    parse_header,
    parse_signal,
)
from core.protocol.linkorder import Attach, Detach, LinkOrder, Report, Retry

FRAMES = [
    {"kind": "data", "seq": 1, "data": "héllo\nworld"},
    {"kind": "binary", "seq": 2, "data": bytes(range(256)) * 10},
    {"kind": "binary", "seq": 3, "data": memoryview(b"x"), "more": True, "confirm": True},
    {"kind": "ack", "seq": 3},
    {"kind": "ping", "seq": 7},
    {"kind": "signal", "seq": 4, "data": '{"webrtc":1}'},
]


def test_frames_survive_the_byte_stream_cut_anywhere() -> None:
    stream = b"".join(encode_stream_frame(frame) for frame in FRAMES)
    for cut in (1, 3, 5, 7, 100, 1000):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), cut):
            got += reader.feed(stream[start:start + cut])
        assert got == FRAMES
        assert reader.pending == 0


def test_a_large_run_is_read_into_a_buffer_of_its_own_and_its_message_is_those_bytes() -> None:
    from core.protocol.direct import encode_stream_frames
    from core.protocol.stream import ReliableStream, StreamTimers, WriteFrame

    timers = StreamTimers(max_frame_bytes=64 * 1024, window=1000, window_bytes=10**9, ack_delay=0)
    sender, receiver = ReliableStream(timers, now=0.0), ReliableStream(timers, now=0.0)
    chunk = bytes(range(251)) * 4200  # about 1 MiB: far larger than the scratch buffer
    actions = sender.send("data", "first", 0.0)[1]
    for _ in range(3):
        actions += sender.send_message("binary", chunk, 0.0)[1]
    actions += sender.send("data", "last", 0.0)[1]
    stream = b"".join(encode_stream_frames([a.frame for a in actions if isinstance(a, WriteFrame)]))
    reader = FrameReader()
    got, at = [], 0
    while at < len(stream):  # as a socket gives it: as much as the buffer offered holds, at most 100,000 bytes
        buffer = reader.get_buffer(-1)
        count = min(len(buffer), len(stream) - at, 100_000)
        assert count > 0
        buffer[:count] = stream[at:at + count]
        at += count
        got += reader.buffer_updated(count)
    assert reader.pending == 0 and not reader.malformed
    fragments = [frame for frame in got if frame["kind"] == "binary"]
    assert len({id(frame["data"].obj) for frame in fragments}) == 3  # one bytes object per message
    delivered = [a.data for f in got for a in receiver.receive(f, 0.0) if hasattr(a, "kind")]
    assert delivered == ["first", chunk, chunk, chunk, "last"]
    assert all(type(data) is bytes for data in delivered[1:4])


def test_a_buffer_for_a_record_larger_than_a_run_is_not_kept() -> None:
    from core.protocol.direct import MAX_RUN_BYTES

    reader = FrameReader()
    large = {"kind": "binary", "seq": 1, "data": bytes(MAX_RUN_BYTES * 2)}  # a whole message sent as one frame
    assert reader.feed(encode_stream_frame(large)) == [large]
    assert reader.buffered < MAX_RUN_BYTES
    run = {"kind": "binary", "seq": 2, "data": bytes(MAX_RUN_BYTES // 2)}
    assert reader.feed(encode_stream_frame(run)) == [run]
    assert MAX_RUN_BYTES // 2 <= reader.buffered < MAX_RUN_BYTES  # kept for the next one


def test_small_records_across_the_end_of_the_scratch_buffer_arrive_whole() -> None:
    frames = [{"kind": "binary", "seq": seq, "data": bytes([seq % 256]) * (700 + seq * 37)} for seq in range(1, 400)]
    stream = b"".join(encode_stream_frame(frame) for frame in frames)
    assert len(stream) > 3 * FrameReader.SCRATCH
    for cut in (997, 4099, 65536, len(stream)):
        reader, got = FrameReader(), []
        for start in range(0, len(stream), cut):
            got += reader.feed(stream[start:start + cut])
        assert got == frames and reader.pending == 0


def test_binary_frames_carry_raw_bytes_not_base64() -> None:
    raw = bytes(range(256)) * 100
    encoded = encode_stream_frame({"kind": "binary", "seq": 9, "data": raw})
    assert raw in encoded and len(encoded) < len(raw) + 16


def test_a_header_of_an_unknown_kind_or_over_the_limit_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown kind"):
        parse_header(HEADER.pack(5, 7))
    with pytest.raises(ProtocolError, match="over the limit"):
        parse_header(HEADER.pack(MAX_BODY + 1, 1))



def test_a_record_that_is_not_a_valid_frame_is_left_out_and_the_next_one_still_arrives() -> None:
    reader = FrameReader()
    good = encode_stream_frame(FRAMES[0])
    assert reader.feed(HEADER.pack(2, 0) + b"\xff\xfe" + good) == [FRAMES[0]]
    assert len(reader.malformed) == 1 and "UTF-8" in reader.malformed[0]
    with pytest.raises(ProtocolError, match="unknown kind"):
        reader.feed(HEADER.pack(5, 7) + b"hello")


def test_signals_round_trip_and_bad_ones_say_what_is_wrong() -> None:
    offer = DirectSignal(2, "offer", (("127.0.0.1", 5000), ("::1", 6000)), b"\x30\x82cert")
    assert parse_signal(offer.to_json()) == offer
    assert offer.fingerprint == fingerprint(b"\x30\x82cert")
    decline = parse_signal({SIGNAL_KEY: 0, "type": "decline"})
    assert decline.type == "decline" and "turned off" in decline.reason
    good = offer.to_json()
    bad = [
        ({**good, SIGNAL_KEY: -1}, "attempt"),
        ({**good, SIGNAL_KEY: True}, "attempt"),
        ({**good, "type": "hello"}, "unknown"),
        ({**good, "candidates": [["example.com", 80]]}, "not an IP address"),
        ({**good, "candidates": [["127.0.0.1", 0]]}, "malformed"),
        ({**good, "candidates": [["127.0.0.1", 1]] * 17}, "at most"),
        ({**good, "cert": "***"}, "base64"),
        ({key: value for key, value in good.items() if key != "cert"}, "certificate"),
    ]
    for signal, message in bad:
        with pytest.raises(ProtocolError, match=message):
            parse_signal(signal)


def test_direct_wins_whenever_it_opens() -> None:
    order = LinkOrder(initiator=True)
    assert order.opened("webrtc") == [Attach("webrtc", "upgraded (no direct link yet)")]
    assert order.opened("direct") == [Attach("direct", "direct opened, faster than webrtc")]
    assert order.attached == "direct"
    # A WebRTC link that opens later is kept in reserve.
    assert order.opened("webrtc") == []
    assert order.attached == "direct"


def test_webrtc_carries_the_data_when_only_it_opens() -> None:
    order = LinkOrder(initiator=True, retry_interval=15.0)
    assert order.failed("direct", "refused") == [Retry("direct", 15.0), Report("direct", "refused")]
    assert order.opened("webrtc") == [Attach("webrtc", "upgraded (no direct link yet)")]
    # Once WebRTC is open a failed direct try is not reported (the data still goes fast), only tried again, later
    # each time (up to 16 intervals); a direct link that opens starts the count again.
    assert order.failed("direct", "refused") == [Retry("direct", 30.0)]
    assert order.failed("direct", "refused") == [Retry("direct", 60.0)]
    for _ in range(5):
        order.failed("direct", "refused")
    assert order.failed("direct", "refused") == [Retry("direct", 15.0 * 16)]
    order.opened("direct")
    assert order.lost("direct", "reset")[-1] == Retry("direct", 0.0)
    assert Retry("direct", 15.0) in order.failed("direct", "refused")


def test_after_a_break_the_relay_then_direct_again_then_webrtc() -> None:
    order = LinkOrder(initiator=True, retry_interval=15.0)
    order.opened("direct")
    order.opened("webrtc")  # in reserve
    assert order.lost("direct", "reset") == [Detach("direct", "reset"), Retry("direct", 0.0)]
    assert order.attached is None
    # The direct try fails: the WebRTC link in reserve takes over, and direct is tried again later.
    assert order.failed("direct", "refused") == [
        Attach("webrtc", "the direct link failed (refused); WebRTC is open"), Retry("direct", 15.0)]
    assert order.opened("direct") == [Attach("direct", "direct opened, faster than webrtc")]


def test_the_answering_side_never_retries_and_a_declined_link_is_not_retried() -> None:
    answering = LinkOrder(initiator=False)
    answering.opened("direct")
    assert answering.lost("direct", "reset") == [Detach("direct", "reset")]
    assert answering.failed("direct", "x") == [Report("direct", "x")]
    order = LinkOrder(initiator=True)
    order.declined("direct")
    assert order.failed("direct", "turned off") == [Report("direct", "turned off")]
    off = LinkOrder(initiator=True, direct=False)
    off.opened("direct")
    assert off.lost("direct", "reset") == [Detach("direct", "reset")]


def test_a_closed_connection_decides_nothing() -> None:
    order = LinkOrder(initiator=True)
    order.close()
    assert order.opened("direct") == [] and order.failed("direct", "x") == [] and order.lost("webrtc", "x") == []


def test_a_long_binary_message_is_split_into_fragments_that_keep_their_bytes() -> None:
    from core.protocol.records import frame_from_store, frame_to_store
    from core.protocol.stream import ReliableStream, StreamTimers, WriteFrame

    raw = bytes(range(256)) * 1000 + b"xy"  # not a multiple of 3: the last fragment carries the padding on the relay
    timers = StreamTimers(max_frame_bytes=4000, window=1000, window_bytes=10**9)
    sender, receiver = ReliableStream(timers, now=0.0), ReliableStream(timers, now=0.0)
    _, actions = sender.send_message("binary", raw, 0.0)
    frames = [action.frame for action in actions if isinstance(action, WriteFrame)]
    assert len(frames) > 50 and all(isinstance(frame["data"], memoryview) for frame in frames)
    delivered = [action for frame in frames for action in receiver.receive(frame, 0.0) if hasattr(action, "kind")]
    (whole,) = [action for action in delivered if action.kind == "binary"]
    assert whole.data == raw and type(whole.data) is bytes
    # The same fragments over the direct link (raw bytes on the wire), one of them resent over the relay (base64
    # there, after a fallback): the message is still whole.
    other = ReliableStream(timers, now=0.0)
    through_link = [FrameReader().feed(encode_stream_frame(frame))[0] for frame in frames]
    through_link[3] = frame_from_store({**frame_to_store(frames[3]), "data": str(frame_to_store(frames[3])["data"])})
    delivered = [a for f in through_link for a in other.receive(f, 0.0) if getattr(a, "kind", None) == "binary"]
    assert len(delivered) == 1 and delivered[0].data == raw


def _records(stream: bytes) -> list[int]:
    """The kinds of the records on a byte stream, in order."""
    kinds, at = [], 0
    while at < len(stream):
        length, kind = parse_header(stream[at:at + HEADER.size])
        kinds.append(kind)
        at += HEADER.size + length
    return kinds


def test_the_fragments_of_a_message_travel_as_one_run_and_come_back_as_the_same_frames() -> None:
    from core.protocol.direct import BINARY, RUN, TEXT, encode_stream_frames
    from core.protocol.stream import ReliableStream, StreamTimers, WriteFrame

    timers = StreamTimers(max_frame_bytes=4000, window=1000, window_bytes=10**9)
    sender = ReliableStream(timers, now=0.0)
    raw = bytes(range(256)) * 100 + b"z"  # 25,601 bytes: 8 fragments of 3,000 and one of 1,601
    actions = sender.send("data", "before", 0.0)[1]
    actions += sender.send_message("binary", raw, 0.0, confirm=True)[1]
    actions += sender.send_message("binary", b"small", 0.0)[1]
    actions += sender.send_message("binary", raw[:6000], 0.0)[1]  # exactly two full fragments
    frames = [action.frame for action in actions if isinstance(action, WriteFrame)]
    stream = b"".join(encode_stream_frames(frames))
    assert _records(stream) == [TEXT, RUN, BINARY, RUN]
    assert len(stream) < len(raw) + 6000 + 100  # the bytes once, and a few headers
    for cut in (1, 7, 1000, len(stream)):
        reader, got = FrameReader(), []
        for start in range(0, len(stream), cut):
            got += reader.feed(stream[start:start + cut])
        assert got == frames  # each fragment with its own seq and flags, the last one's confirm kept
    receiver = ReliableStream(StreamTimers(max_frame_bytes=4000, window=1000, ack_delay=0), now=0.0)
    delivered = [a.data for f in got for a in receiver.receive(f, 0.0) if hasattr(a, "kind")]
    assert delivered == ["before", raw, b"small", raw[:6000]]


def test_a_run_is_cut_where_the_frames_stop_following_each_other() -> None:
    from core.protocol.direct import BINARY, MAX_RUN_BYTES, RUN, encode_stream_frames

    def fragment(seq: int, size: int, **flags: bool) -> dict:
        return {"kind": "binary", "seq": seq, "data": bytes(size), **flags}

    # A gap in the sequence numbers (a frame resent alone), a short fragment before the end, the size limit.
    gap = [fragment(1, 10, more=True), fragment(2, 10, more=True), fragment(4, 10, more=True), fragment(5, 3)]
    assert _records(b"".join(encode_stream_frames(gap))) == [RUN, RUN]
    short = [fragment(1, 10, more=True), fragment(2, 4, more=True), fragment(3, 10)]
    assert _records(b"".join(encode_stream_frames(short))) == [RUN, BINARY]
    step = MAX_RUN_BYTES // 3
    big = [fragment(seq, step, more=True) for seq in range(1, 5)] + [fragment(5, 1)]
    records = _records(b"".join(encode_stream_frames(big)))
    assert records == [RUN, RUN]
    reader = FrameReader()
    assert reader.feed(b"".join(encode_stream_frames(big))) == big


@pytest.mark.parametrize(
    ("count", "step", "size", "flags"),
    [(1, 10, 10, 0), (3, 0, 0, 0), (3, 10, 20, 0), (3, 10, 31, 0), (2, 10, 15, 4), (5000, 1, 5000, 0)],
    ids=["one-fragment", "empty-step", "too-short", "too-long", "unknown-flag", "too-many"],
)
def test_malformed_runs_are_refused(count, step, size, flags) -> None:
    from core.protocol.direct import RUN, RUN_HEAD, decode_frames

    with pytest.raises(ProtocolError, match="run"):
        decode_frames(RUN, RUN_HEAD.pack(1, count, step, flags) + bytes(size))
    with pytest.raises(ProtocolError, match="shorter than its header"):
        decode_frames(RUN, b"\x00" * 5)
