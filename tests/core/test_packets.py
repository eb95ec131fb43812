"""Tests for core.protocol.packets: the WebRTC link's packet format, without I/O."""

from __future__ import annotations

import pytest

from core.errors import ProtocolError
from core.protocol.packets import (
    BINARY,
    CLOSE,
    KEEPALIVE,
    MAX_PACKET_BYTES,
    MORE,
    TEXT,
    Close,
    PacketDecoder,
    Keepalive,
    ChannelMessage,
    encode_close,
    encode_keepalive,
    encode_message,
    encode_payload,
)


def roundtrip(data: str | bytes, *, max_packet: int = MAX_PACKET_BYTES) -> list[object]:
    decoder = PacketDecoder()
    return [decoder.feed(packet) for packet in encode_message(data, max_packet=max_packet)]


def test_a_short_text_is_one_packet_with_a_one_byte_header() -> None:
    assert encode_message("héllo") == [bytes([TEXT]) + "héllo".encode()]


def test_a_short_binary_is_one_packet_with_a_one_byte_header() -> None:
    assert encode_message(b"\x00\x01") == [bytes([BINARY]) + b"\x00\x01"]


@pytest.mark.parametrize("data", ["", b"", "x", b"y", "ü" * 10, bytes(range(256))])
def test_small_messages_round_trip(data: str | bytes) -> None:
    assert roundtrip(data) == [ChannelMessage(data)]


def test_a_large_text_is_split_and_joined_even_inside_a_multibyte_character() -> None:
    text = "aé€😀" * 1000  # 10 bytes per repetition: fragment edges fall inside characters
    packets = encode_message(text, max_packet=101)
    assert len(packets) > 1
    assert all(len(packet) <= 101 for packet in packets)
    assert all(packet[0] == TEXT | MORE for packet in packets[:-1])
    assert packets[-1][0] == TEXT
    decoder = PacketDecoder()
    results = [decoder.feed(packet) for packet in packets]
    assert results[:-1] == [None] * (len(packets) - 1)
    assert results[-1] == ChannelMessage(text)


def test_a_large_binary_is_split_at_the_packet_limit() -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    packets = encode_message(data)
    assert len(packets) == -(-len(data) // (MAX_PACKET_BYTES - 1))
    assert all(len(packet) <= MAX_PACKET_BYTES for packet in packets)
    assert roundtrip(data)[-1] == ChannelMessage(data)


def test_a_message_exactly_filling_one_packet_is_not_split() -> None:
    assert len(encode_message(b"z" * (MAX_PACKET_BYTES - 1))) == 1
    assert len(encode_message(b"z" * MAX_PACKET_BYTES)) == 2


def test_control_packets_decode() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(encode_keepalive()) == Keepalive()
    assert decoder.feed(encode_close("bye now")) == Close("bye now")
    assert encode_keepalive() == bytes([KEEPALIVE])
    assert encode_close("")[0] == CLOSE


def test_control_packets_may_arrive_between_fragments() -> None:
    decoder = PacketDecoder()
    first, second = encode_message(b"ab" * 10, max_packet=11)
    assert decoder.feed(first) is None
    assert decoder.feed(encode_keepalive()) == Keepalive()
    assert decoder.feed(second) == ChannelMessage(b"ab" * 10)


def test_too_small_a_packet_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_packet"):
        encode_message("x", max_packet=1)


def test_encode_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        encode_message(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("packet", "match"),
    [
        (b"", "empty packet"),
        (bytes([0x40]) + b"x", "unknown packet type"),
        (bytes([0x07]), "unknown packet type"),
        (bytes([KEEPALIVE | MORE]), "cannot be fragmented"),
        (bytes([KEEPALIVE]) + b"x", "keep-alive packet carries"),
        (bytes([CLOSE | MORE]) + b"x", "cannot be fragmented"),
        (bytes([CLOSE]) + b"\xff", "not valid UTF-8"),
        (bytes([TEXT]) + b"\xc3", "not valid UTF-8"),
    ],
)
def test_malformed_packets_raise_a_protocol_error(packet: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        PacketDecoder().feed(packet)


def test_a_text_packet_instead_of_bytes_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="text data channel message"):
        PacketDecoder().feed("hello")  # type: ignore[arg-type]


def test_a_fragment_of_another_type_in_the_middle_is_refused_and_the_decoder_recovers() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(bytes([TEXT | MORE]) + b"abc") is None
    with pytest.raises(ProtocolError, match="binary fragment inside a text message"):
        decoder.feed(bytes([BINARY]) + b"def")
    # The partial message is dropped; the next message decodes normally.
    assert decoder.feed(bytes([BINARY]) + b"ok") == ChannelMessage(b"ok")


def test_invalid_utf8_across_fragments_is_refused_and_the_decoder_recovers() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(bytes([TEXT | MORE]) + b"ab\xe2") is None
    with pytest.raises(ProtocolError, match="not valid UTF-8"):
        decoder.feed(bytes([TEXT]) + b"zz")
    assert decoder.feed(bytes([TEXT]) + b"next") == ChannelMessage("next")


def test_a_message_over_the_limit_is_refused_once_and_its_remaining_fragments_are_skipped() -> None:
    decoder = PacketDecoder(max_message_bytes=10)
    packets = encode_message(b"x" * 30, max_packet=5)  # 4 payload bytes per packet: 8 packets
    raised = 0
    for packet in packets:
        try:
            assert decoder.feed(packet) is None
        except ProtocolError as exc:
            raised += 1
            assert "over the limit of 10 bytes" in str(exc)
    assert raised == 1
    assert decoder.feed(encode_message(b"fine")[0]) == ChannelMessage(b"fine")


def test_a_message_at_the_limit_is_accepted() -> None:
    decoder = PacketDecoder(max_message_bytes=10)
    packets = encode_message(b"y" * 10, max_packet=4)
    assert [decoder.feed(packet) for packet in packets][-1] == ChannelMessage(b"y" * 10)


def test_pending_reports_a_partial_message() -> None:
    decoder = PacketDecoder()
    assert decoder.pending == 0
    decoder.feed(bytes([BINARY | MORE]) + b"abc")
    assert decoder.pending == 3
    decoder.feed(bytes([BINARY]) + b"d")
    assert decoder.pending == 0


def test_a_single_packet_over_the_limit_is_refused_and_the_next_one_decodes() -> None:
    decoder = PacketDecoder(max_message_bytes=4)
    with pytest.raises(ProtocolError, match="over the limit of 4 bytes"):
        decoder.feed(bytes([TEXT]) + b"12345")
    assert decoder.feed(bytes([TEXT]) + b"1234") == ChannelMessage("1234")


def test_only_messages_are_split_into_frames() -> None:
    with pytest.raises(ValueError, match="only TEXT and BINARY"):
        encode_payload(KEEPALIVE, b"")
    assert encode_payload(BINARY, b"abc", max_packet=2) == [bytes([BINARY | MORE]) + b"a", bytes([BINARY | MORE]) + b"b",
                                                           bytes([BINARY]) + b"c"]
