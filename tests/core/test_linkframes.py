"""Tests for the form of connection frames on a WebRTC data channel (core.upgrade.encode_frame/decode_frame)."""

from __future__ import annotations

import base64
import json
import random

import pytest

from core.errors import ProtocolError
from core.protocol.packets import MAX_PACKET_BYTES
from core.protocol.stream import ReliableStream, WriteFrame
from core.protocol.linkframes import decode_frame, encode_frame

FRAMES = [
    {"kind": "data", "seq": 1, "data": "hello"},
    {"kind": "data", "seq": 2, "data": ""},
    {"kind": "data", "seq": 3, "data": "line one\nline two\n", "confirm": True},
    {"kind": "data", "seq": 4, "data": "é€🙂 \"quoted\" \\ {json}", "more": True},
    {"kind": "binary", "seq": 5, "data": b"\x00\x01\x02\xff", "more": True},
    {"kind": "binary", "seq": 9_999_999_999, "data": b"\x00", "confirm": True},
    {"kind": "signal", "seq": 6, "data": '{"webrtc":1,"type":"offer","sdp":"v=0\\r\\n"}'},
    {"kind": "close", "seq": 7, "data": ""},
    {"kind": "ack", "seq": 0},
    {"kind": "ack", "seq": 7},
    {"kind": "ping", "seq": 3},
    {"kind": "pong", "seq": 3},
]


@pytest.mark.parametrize("frame", FRAMES, ids=[f"{f['kind']}-{f['seq']}" for f in FRAMES])
def test_every_frame_survives_the_data_channel_form(frame):
    message = encode_frame(frame)
    assert isinstance(message, bytes if frame["kind"] == "binary" else str)
    assert decode_frame(message) == frame


def test_binary_frames_carry_raw_bytes_not_base64():
    raw = bytes(range(256)) * 192  # 48 KiB: what one relay-sized frame holds
    frame = {"kind": "binary", "seq": 77, "data": raw, "more": True, "confirm": True}
    message = encode_frame(frame)
    assert message == b"b77!+\n" + raw
    assert len(message) < MAX_PACKET_BYTES - 1  # one data-channel message, one link frame
    assert decode_frame(message) == frame
    assert decode_frame(bytearray(message)) == frame
    assert decode_frame(b"b1\n") == {"kind": "binary", "seq": 1, "data": b""}


def test_binary_frames_from_the_stream_cross_into_another_stream():
    a, b = ReliableStream(), ReliableStream()
    raw = random.Random(5).randbytes(200_000)
    _, actions = a.send_message("binary", raw, 0.0, confirm=True)
    messages = [encode_frame(action.frame) for action in actions if isinstance(action, WriteFrame)]
    assert len(messages) == 5 and all(isinstance(m, bytes) for m in messages)
    assert sum(len(m) for m in messages) < len(raw) + 100
    got = []
    for message in messages:
        got += b.receive(decode_frame(message), 0.0)
    assert [a.data for a in got if type(a).__name__ == "Deliver"] == [raw]


@pytest.mark.parametrize(
    "message",
    [b"", b"b12", b"d1\nhello", b"a7\n", b"b" + b"9" * 20 + b"\nx", b"\xff1\nx", b"b1x\nx", "b1\nAAEC"],
    ids=["empty", "no-newline", "data-as-binary", "ack-as-binary", "long-header", "non-ascii", "bad-flag",
         "binary-as-text"],
)
def test_malformed_binary_messages_are_protocol_errors(message):
    with pytest.raises(ProtocolError):
        decode_frame(message)


def test_text_is_not_escaped():
    frame = {"kind": "data", "seq": 12, "data": "é" * 100}
    text = encode_frame(frame)
    assert text == "d12\n" + "é" * 100
    assert len(text.encode("utf-8")) < len(json.dumps(frame).encode("utf-8")) / 2


def test_frames_from_the_stream_round_trip_into_another_stream():
    a, b = ReliableStream(), ReliableStream()
    _, actions = a.send_message("data", "x" * 100_000 + "é", 0.0, confirm=True)
    got = []
    for action in actions:
        assert isinstance(action, WriteFrame)
        got += b.receive(decode_frame(encode_frame(action.frame)), 0.0)
    assert [a.data for a in got if type(a).__name__ == "Deliver"] == ["x" * 100_000 + "é"]


def test_json_frames_are_still_read():
    assert decode_frame('{"kind":"data","seq":4,"data":"x"}') == {"kind": "data", "seq": 4, "data": "x"}


@pytest.mark.parametrize(
    "text",
    ["", "x1", "d", "d!", "dx\nhi", "d-1\nx", "d1?\nx", "d١٢\nx", "a" + "9" * 20, "{not json", "[1, 2]", "\nd1"],
)
def test_malformed_texts_are_protocol_errors(text):
    with pytest.raises(ProtocolError):
        decode_frame(text)


def test_a_frame_without_its_data_line_is_left_for_the_stream_to_refuse():
    frame = decode_frame("d5")
    assert frame == {"kind": "data", "seq": 5}
    assert type(ReliableStream().receive(frame, 0.0)[0]).__name__ == "BadFrame"


def test_binary_data_is_base64_only_on_the_relay() -> None:
    from core.protocol.records import frame_from_store, frame_to_store

    raw = bytes(range(256)) * 3
    frame = {"kind": "binary", "seq": 5, "data": memoryview(raw), "more": True}
    stored = frame_to_store(frame)
    assert stored == {"kind": "binary", "seq": 5, "data": base64.b64encode(raw).decode(), "more": True}
    assert frame["data"] == raw  # the stream's frame is left as it is (it may be resent on another link)
    assert frame_from_store(stored)["data"] == raw
    assert frame_from_store({**stored, "data": str(stored["data"])}) == frame  # plain text is decoded and checked
    opened = {"kind": "binary", "seq": 5, "data": raw}  # what opening a sealed frame may give: kept as it is
    assert frame_from_store(opened) is opened
    text = {"kind": "data", "seq": 6, "data": "hi"}
    assert frame_to_store(text) is text and frame_from_store(text) is text
    for bad in ("not base64!", "QUJD=", 7):
        with pytest.raises(ProtocolError, match="base64"):
            frame_from_store({"kind": "binary", "seq": 7, "data": bad})
    # On a data channel a binary frame arrives as a view of the message: nothing copied before the stream.
    arrived = decode_frame(encode_frame(frame))
    assert isinstance(arrived["data"], memoryview) and arrived["data"] == raw
