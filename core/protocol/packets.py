"""The WebRTC link's packet format: split messages into data-channel packets and join them again (no I/O).

Every data-channel message the link sends is one *packet*, always a binary message::

    +--------+------------------------+
    | header | payload (0..n bytes)   |
    +--------+------------------------+
      1 byte

    header bits   7      6..2       1..0
                 MORE   reserved    type       reserved bits must be 0

    type 0  TEXT       payload: a piece of a UTF-8 string
    type 1  BINARY     payload: a piece of a byte string
    type 2  KEEPALIVE  no payload; sent when the link was idle, so the peer knows it is alive
    type 3  CLOSE      payload: a UTF-8 reason; the peer is closing the link on purpose

A message larger than one packet (``MAX_PACKET_BYTES``, header included) is sent as consecutive packets of the same
type; every packet but the last has MORE set. The data channel is reliable and ordered, so fragments need no
numbers; control packets (KEEPALIVE, CLOSE) are never fragmented and may arrive between two fragments. Text is
encoded to UTF-8 once and split on byte boundaries: the receiver joins the bytes, then decodes.

``MAX_PACKET_BYTES`` is 64 KiB, the message size every WebRTC peer must accept when the other side does not
announce one (RFC 8841 section 6); aiortc announces 256 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError

TEXT = 0x00
BINARY = 0x01
KEEPALIVE = 0x02
CLOSE = 0x03
MORE = 0x80
_TYPE_MASK = 0x03
_RESERVED_MASK = 0x7C

MAX_PACKET_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_TYPE_NAMES = {TEXT: "text", BINARY: "binary", KEEPALIVE: "keep-alive", CLOSE: "close"}


@dataclass(frozen=True)
class ChannelMessage:
    """A whole message from the peer: ``str`` if it was sent as text, ``bytes`` if binary."""

    data: str | bytes


@dataclass(frozen=True)
class Keepalive:
    """The peer says it is alive."""


@dataclass(frozen=True)
class Close:
    """The peer is closing the link on purpose, for ``reason``."""

    reason: str


Decoded = ChannelMessage | Keepalive | Close


def encode_message(data: str | bytes, *, max_packet: int = MAX_PACKET_BYTES) -> list[bytes]:
    """The packets that carry ``data``, each at most ``max_packet`` bytes long (header included).

    Raises:
        TypeError: ``data`` is neither ``str`` nor ``bytes``.
        ValueError: ``max_packet`` leaves no room for a payload.
    """
    if isinstance(data, str):
        return encode_payload(TEXT, data.encode("utf-8"), max_packet=max_packet)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return encode_payload(BINARY, bytes(data), max_packet=max_packet)
    raise TypeError(f"a message must be str or bytes, not {type(data).__name__}")


def encode_payload(kind: int, payload: bytes, *, max_packet: int = MAX_PACKET_BYTES) -> list[bytes]:
    """The packets that carry ``payload`` (already UTF-8 for TEXT) as a message of ``kind`` (TEXT or BINARY)."""
    if kind not in (TEXT, BINARY):
        raise ValueError(f"only TEXT and BINARY messages are split into packets, not type {kind}")
    if max_packet < 2:
        raise ValueError(f"max_packet must be at least 2 bytes (1 header + 1 payload), not {max_packet}")
    room = max_packet - 1
    if len(payload) <= room:
        return [bytes((kind,)) + payload]
    view = memoryview(payload)
    last = (len(payload) - 1) // room * room
    packets = [bytes((kind | MORE,)) + view[start : start + room] for start in range(0, last, room)]
    packets.append(bytes((kind,)) + view[last:])
    return packets


def encode_keepalive() -> bytes:
    """A KEEPALIVE packet."""
    return bytes((KEEPALIVE,))


def encode_close(reason: str) -> bytes:
    """A CLOSE packet carrying ``reason`` (kept short: it must fit one packet)."""
    payload = reason.encode("utf-8")[: MAX_PACKET_BYTES - 1]
    return bytes((CLOSE,)) + payload.decode("utf-8", errors="ignore").encode("utf-8")


class PacketDecoder:
    """Turns packets, one at a time, into whole messages and control events.

    ``feed()`` raises :class:`~core.errors.ProtocolError` for a malformed packet; the decoder then drops the message
    being joined (if the packet broke it) and keeps working, so the next well-formed message decodes normally.
    A message over ``max_message_bytes`` is refused once; its remaining fragments are skipped silently.
    """

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._max_message_bytes = max_message_bytes
        self._kind: int | None = None  # type of the message being joined, None between messages
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # inside a message that went over the limit

    @property
    def pending(self) -> int:
        """Bytes held for a message whose last fragment has not arrived."""
        return self._size

    def feed(self, packet: bytes) -> Decoded | None:
        """Take one packet; return a whole message or control event, or None while a message is incomplete."""
        if not isinstance(packet, (bytes, bytearray)):
            raise ProtocolError(
                "the peer sent a text data channel message; this link only exchanges binary packets"
            )
        if not packet:
            raise ProtocolError("the peer sent an empty packet (every packet starts with a header byte)")
        header = packet[0]
        if header <= BINARY and self._kind is None and len(packet) <= self._max_message_bytes:
            # The common case, a whole message in one packet, without the bookkeeping of fragments.
            if header == BINARY:
                return ChannelMessage(bytes(packet[1:]))
            return ChannelMessage(self._utf8(packet[1:], "a text message"))
        kind, more = header & _TYPE_MASK, bool(header & MORE)
        if header & _RESERVED_MASK:
            raise ProtocolError(f"unknown packet type in header byte 0x{header:02x}")
        if kind in (KEEPALIVE, CLOSE):
            return self._control(kind, more, packet)
        return self._fragment(kind, more, packet)

    def _control(self, kind: int, more: bool, packet: bytes) -> Decoded:
        name = _TYPE_NAMES[kind]
        if more:
            raise ProtocolError(f"a {name} packet cannot be fragmented (MORE is set)")
        if kind == KEEPALIVE:
            if len(packet) > 1:
                raise ProtocolError(f"a keep-alive packet carries no payload, this one has {len(packet) - 1} bytes")
            return Keepalive()
        return Close(self._utf8(packet[1:], "the close reason"))

    def _fragment(self, kind: int, more: bool, packet: bytes) -> ChannelMessage | None:
        if self._kind is not None and kind != self._kind:
            expected = _TYPE_NAMES[self._kind]
            self._reset()
            raise ProtocolError(f"a {_TYPE_NAMES[kind]} fragment inside a {expected} message; the message was dropped")
        self._kind = kind
        size = self._size + len(packet) - 1
        if self._skipping or size > self._max_message_bytes:
            first = not self._skipping
            self._parts, self._size, self._skipping = [], 0, more
            if not more:
                self._kind = None
            if first:
                raise ProtocolError(
                    f"a message over the limit of {self._max_message_bytes} bytes arrived; it was dropped"
                )
            return None
        self._parts.append(bytes(packet[1:]))
        self._size = size
        if more:
            return None
        payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._reset()
        if kind == BINARY:
            return ChannelMessage(payload)
        return ChannelMessage(self._utf8(payload, "a text message"))

    def _reset(self) -> None:
        self._kind, self._parts, self._size, self._skipping = None, [], 0, False

    @staticmethod
    def _utf8(payload: bytes, what: str) -> str:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what} is not valid UTF-8 (byte {exc.start}); it was dropped") from exc
