r"""The direct link's words, without I/O: its signals (candidates and the session certificate), the byte stream
that carries frames over TCP + TLS, and the bytes that settle which connection wins a race.

Signals (JSON objects sent with the connection's ``send_signal``, never written anywhere else; ``attempt`` counts
the initiator's tries so that late signals of an abandoned try are recognised)::

    {"direct": attempt, "type": "offer",  "candidates": [["192.168.1.20", 50123], ...], "cert": base64(DER)}
    {"direct": attempt, "type": "answer", "candidates": [...], "cert": "..."}           target -> initiator
    {"direct": attempt, "type": "decline", "reason": "..."}    a side with the direct link turned off

The certificate is the side's self-signed certificate for this session; the other side trusts exactly that
certificate (its SHA-256 fingerprint is pinned) and nothing else.

On the wire, after the TLS handshake, each side writes :data:`HELLO` and reads the other's: a TLS 1.3 client
finishes its handshake before the server has checked the client's certificate, so only the server's hello proves
that the server accepted it. Of the connections that got that far, the initiator picks the first and writes
:data:`CHOSEN` on it (the target waits for it); every other connection is closed. Then frames flow, each one a
5-byte header (4-byte big-endian length of the body, then :data:`TEXT`, :data:`BINARY` or :data:`RUN`) and the
body: the message :mod:`core.protocol.linkframes` makes of a stream frame (text as UTF-8; binary frames carry raw
bytes), or a *run*.

A run carries consecutive fragments of one binary message in one record, so that a 1 MiB file chunk (about 22
relay-sized fragments) costs one record on the wire instead of 22: :data:`RUN_HEAD` (the first fragment's sequence
number, the number of fragments, the size of each but the last, and the last one's flags: 1 confirm, 2 more), then
their bytes back to back. Every fragment but the last is ``more`` and not ``confirm``; each keeps its own sequence
number, so the stream sees exactly the frames it wrote, and after a fallback the relay carries the same frames one
by one. :func:`encode_stream_frames` makes runs of whatever frames a link writes together;
:func:`decode_frames` gives the frames back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from .linkframes import binary_head, decode_frame, encode_frame

__all__ = [
    "BINARY", "CHOSEN", "HEADER", "HELLO", "MAX_BODY", "MAX_RUN_BYTES", "RUN", "RUN_HEAD", "SIGNAL_KEY", "TEXT",
    "DirectSignal", "FrameReader", "decode_frames", "decode_run", "encode_stream_frame", "encode_stream_frames", "fingerprint",
    "parse_header", "parse_signal",
]

SIGNAL_KEY = "direct"
HELLO = b"H"
CHOSEN = b"G"
TEXT = 0
BINARY = 1
RUN = 2
HEADER = struct.Struct(">IB")
RUN_HEAD = struct.Struct(">QIIB")
_CONFIRM, _MORE = 1, 2
# The most bytes of fragments one run carries (a longer sequence of fragments becomes several runs).
MAX_RUN_BYTES = 4 * 1024 * 1024
# The most fragments one run may carry (the stream never has more in flight).
MAX_RUN_FRAMES = 4096
# A body is one stream frame: at most a relay frame's data, or a whole message sent as one frame; the limit keeps a
# broken or hostile peer from making this side allocate without bound.
MAX_BODY = 64 * 1024 * 1024 + 64
MAX_CANDIDATES = 16
MAX_CERT_CHARS = 8192
MAX_REASON_CHARS = 200


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as lower-case hex."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class DirectSignal:
    """One direct-link signal, checked. ``cert`` is DER bytes (offers and answers only)."""

    attempt: int
    type: str
    candidates: tuple[tuple[str, int], ...] = ()
    cert: bytes = b""
    reason: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def to_json(self) -> dict[str, Any]:
        signal: dict[str, Any] = {SIGNAL_KEY: self.attempt, "type": self.type}
        if self.type == "decline":
            signal["reason"] = self.reason
        else:
            signal["candidates"] = [[host, port] for host, port in self.candidates]
            signal["cert"] = base64.b64encode(self.cert).decode("ascii")
        return signal


def parse_signal(signal: dict[str, Any]) -> DirectSignal:
    """Check a direct-link signal from the peer.

    Raises:
        ProtocolError: it is malformed (the message says what is wrong).
    """
    attempt, kind = signal.get(SIGNAL_KEY), signal.get("type")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
        raise ProtocolError(f"a direct-link signal without a valid attempt number: {str(signal)[:100]}")
    if kind == "decline":
        reason = signal.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            reason = "the direct link is turned off on the other device"
        return DirectSignal(attempt, "decline", reason=reason[:MAX_REASON_CHARS])
    if kind not in ("offer", "answer"):
        raise ProtocolError(f"an unknown direct-link signal type {str(kind)[:40]!r}")
    return DirectSignal(attempt, kind, parse_candidates(signal.get("candidates")), _parse_cert(signal.get("cert")))


def parse_candidates(value: Any) -> tuple[tuple[str, int], ...]:
    """``[[ip, port], ...]`` as a tuple of (address, port), checked.

    Raises:
        ProtocolError: not a list of at most MAX_CANDIDATES pairs of an IP address and a port 1-65535.
    """
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise ProtocolError(f"direct-link candidates must be a list of at most {MAX_CANDIDATES} [address, port]")
    candidates = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int)
                and not isinstance(item[1], bool) and 1 <= item[1] <= 65535):
            raise ProtocolError(f"a malformed direct-link candidate {str(item)[:60]}")
        try:
            address = str(ipaddress.ip_address(item[0]))
        except ValueError:
            raise ProtocolError(f"a direct-link candidate {item[0][:60]!r} is not an IP address") from None
        candidates.append((address, item[1]))
    return tuple(candidates)


def _parse_cert(value: Any) -> bytes:
    if not isinstance(value, str) or not value or len(value) > MAX_CERT_CHARS:
        raise ProtocolError("a direct-link signal without a certificate")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("a direct-link certificate is not valid base64") from None


def candidates_for(addresses: tuple[str, ...], port: int) -> tuple[tuple[str, int], ...]:
    """The candidates to offer: each local address with the listener's port (at most MAX_CANDIDATES)."""
    return tuple((address, port) for address in addresses[:MAX_CANDIDATES])


# -- frames on the byte stream ---------------------------------------------------------------------------------


def encode_stream_frame(frame: dict[str, Any]) -> bytes:
    """A stream frame as header + body bytes (see the module docstring); a binary frame's bytes are copied once."""
    return b"".join(_frame_parts(frame))


def _frame_parts(frame: dict[str, Any]) -> list[Any]:
    if frame["kind"] == "binary":
        head, data = binary_head(frame), frame["data"]
        return [HEADER.pack(len(head) + len(data), BINARY) + head, data]
    body = encode_frame(frame).encode("utf-8")  # type: ignore[union-attr]
    return [HEADER.pack(len(body), TEXT) + body]


def _is_fragment(frame: dict[str, Any]) -> bool:
    """A binary frame that another fragment of its message follows (so a run may go on after it)."""
    return frame["kind"] == "binary" and frame.get("more") is True and not frame.get("confirm")


def encode_stream_frames(frames: list[dict[str, Any]]) -> list[Any]:
    """The parts (bytes and memoryviews, to be joined or written in order) of ``frames`` on the byte stream:
    consecutive fragments of one binary message as runs, every other frame as it is. Binary data is not copied (its
    parts are the frames' own), and small parts that follow each other are joined (each part written on its own
    would be a TLS record of its own)."""
    parts: list[Any] = []
    i, count = 0, len(frames)
    while i < count:
        first = frames[i]
        j = i + 1
        if _is_fragment(first):
            step = len(first["data"])
            size = step
            # Take the fragments that follow in sequence, as long as every one before is a full fragment.
            while (j < count and j - i < MAX_RUN_FRAMES and step > 0 and _is_fragment(frames[j - 1])
                   and len(frames[j - 1]["data"]) == step and frames[j]["kind"] == "binary"
                   and frames[j]["seq"] == first["seq"] + (j - i) and len(frames[j]["data"]) <= step
                   and size + len(frames[j]["data"]) <= MAX_RUN_BYTES):
                size += len(frames[j]["data"])
                j += 1
        if j - i < 2:
            parts += _frame_parts(first)
            i += 1
            continue
        last = frames[j - 1]
        flags = (_CONFIRM if last.get("confirm") else 0) | (_MORE if last.get("more") else 0)
        parts.append(HEADER.pack(RUN_HEAD.size + size, RUN) + RUN_HEAD.pack(first["seq"], j - i, step, flags))
        parts += [frame["data"] for frame in frames[i:j]]
        i = j
    return _join_small(parts)


def _join_small(parts: list[Any], small: int = 4096) -> list[Any]:
    """``parts`` with every sequence of consecutive parts under ``small`` bytes joined into one."""
    out: list[Any] = []
    pending: list[Any] = []
    for part in parts:
        if len(part) < small:
            pending.append(part)
            continue
        if pending:
            out.append(b"".join(pending) if len(pending) > 1 else pending[0])
            pending = []
        out.append(part)
    if pending:
        out.append(b"".join(pending) if len(pending) > 1 else pending[0])
    return out


def parse_header(header: bytes) -> tuple[int, int]:
    """(body length, kind) of a 5-byte frame header.

    Raises:
        ProtocolError: an unknown kind, or a body over MAX_BODY.
    """
    length, kind = HEADER.unpack(header)
    if kind not in (TEXT, BINARY, RUN):
        raise ProtocolError(f"a direct-link frame of unknown kind {kind}")
    if length > MAX_BODY:
        raise ProtocolError(f"a direct-link frame of {length} bytes, over the limit of {MAX_BODY}")
    return length, kind


def decode_frames(kind: int, body: bytes) -> list[dict[str, Any]]:
    """The stream frames of a body read after its header: one, or a run's fragments (their ``data`` memoryviews
    of ``body``).

    Raises:
        ProtocolError: the body is not a valid frame or run (or not UTF-8 for a text frame).
    """
    if kind == TEXT:
        try:
            return [decode_frame(body.decode("utf-8"))]
        except UnicodeDecodeError:
            raise ProtocolError("a direct-link text frame is not valid UTF-8") from None
    if kind == BINARY:
        return [decode_frame(body)]
    if len(body) < RUN_HEAD.size:
        raise ProtocolError(f"a direct-link run of {len(body)} bytes is shorter than its header")
    return decode_run(body[:RUN_HEAD.size], memoryview(body)[RUN_HEAD.size:])


def decode_run(head: bytes, data: bytes | memoryview) -> list[dict[str, Any]]:
    """The fragments of a run from its header (:data:`RUN_HEAD`) and its data: their ``data`` are memoryviews of
    ``data``, so that a message that is all of one run's bytes is those very bytes again (the stream's join).

    Raises:
        ProtocolError: the run is malformed (the counts and sizes do not agree).
    """
    first, count, step, flags = RUN_HEAD.unpack(head)
    size = len(data)
    if not (2 <= count <= MAX_RUN_FRAMES and step >= 1 and (count - 1) * step < size <= count * step
            and first >= 1 and flags <= _CONFIRM | _MORE):
        raise ProtocolError(f"a malformed direct-link run: {count} fragments of {step} bytes from {first}, "
                            f"{size} bytes, flags {flags}")
    view = memoryview(data)
    frames: list[dict[str, Any]] = [
        {"kind": "binary", "seq": first + index, "data": view[index * step:(index + 1) * step], "more": True}
        for index in range(count - 1)
    ]
    last: dict[str, Any] = {"kind": "binary", "seq": first + count - 1, "data": view[(count - 1) * step:]}
    if flags & _CONFIRM:
        last["confirm"] = True
    if flags & _MORE:
        last["more"] = True
    frames.append(last)
    return frames


class FrameReader:
    """Turns the bytes of the stream into frames, reading them into buffers it supplies itself (the shape of
    asyncio's ``BufferedProtocol``): :meth:`get_buffer` says where the next bytes go, :meth:`buffer_updated` says
    how many arrived and returns every frame they completed.

    Small records are read into one scratch buffer and copied out. A large record's body (a run of file data) is
    read straight into a buffer of its own, kept from one record to the next, and copied out once as ``bytes``:
    the fragments of the run are views of those bytes, so the stream hands the message on as they are. From TLS to
    the stream a file's byte is copied twice: once decrypted, once into its message.

    A record whose header is sound but whose body is not a valid frame is left out, and why is added to
    :attr:`malformed` (the holder logs and clears it); a header that is not sound raises, as nothing after it can
    be trusted to start a record.
    """

    SCRATCH = 64 * 1024
    # A large record's buffer is kept for the next one up to this size (a run of file data); a larger one (a whole
    # message sent as one frame) is let go once read.
    KEEP = MAX_RUN_BYTES + RUN_HEAD.size

    def __init__(self) -> None:
        self._scratch = bytearray(self.SCRATCH)
        self._view = memoryview(self._scratch)
        self._start = 0  # where the first record not yet parsed begins in the scratch buffer
        self._end = 0  # how far the scratch buffer is filled
        self._big = bytearray()  # a large record's body, reused
        self._big_size = 0  # > 0 while a large record's body is being read into ``_big``
        self._big_filled = 0
        self._big_kind = 0
        self._big_head = b""  # a run's header, read before its data
        self.malformed: list[str] = []

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next bytes are to be read (at least one byte of room)."""
        if self._big_size:
            return memoryview(self._big)[self._big_filled:self._big_size]
        if self._end == len(self._scratch):  # a small record incomplete at the end: move it to the front
            pending = self._end - self._start
            self._view[:pending] = self._view[self._start:self._end]
            self._start, self._end = 0, pending
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> list[dict[str, Any]]:
        """``nbytes`` arrived in the buffer :meth:`get_buffer` gave: the frames they completed.

        Raises:
            ProtocolError: the stream is not made of valid records (the link cannot go on after it).
        """
        if self._big_size:
            self._big_filled += nbytes
            if self._big_filled < self._big_size:
                return []
            return self._big_done()
        self._end += nbytes
        return self._parse()

    def feed(self, data: bytes | memoryview) -> list[dict[str, Any]]:
        """Every frame that ``data`` completes (the bytes copied into the buffers given)."""
        frames: list[dict[str, Any]] = []
        view, at = memoryview(data), 0
        while at < len(view):
            buffer = self.get_buffer()
            count = min(len(buffer), len(view) - at)
            buffer[:count] = view[at:at + count]
            at += count
            frames += self.buffer_updated(count)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record held."""
        return self._big_filled if self._big_size else self._end - self._start

    def _parse(self) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        view = self._view
        while self._end - self._start >= HEADER.size:
            at = self._start
            length, kind = parse_header(view[at:at + HEADER.size])
            head = RUN_HEAD.size if kind == RUN and length > RUN_HEAD.size else 0
            if HEADER.size + length > len(self._scratch):
                # Too large for the scratch buffer: its body (a run's data, after the run's header) gets its own.
                if self._end - at < HEADER.size + head:
                    break
                self._big_kind = kind
                self._big_head = bytes(view[at + HEADER.size:at + HEADER.size + head])
                self._big_size = length - head
                if len(self._big) < self._big_size:
                    self._big = bytearray(self._big_size)
                got = self._end - (at + HEADER.size + head)
                self._big[:got] = view[at + HEADER.size + head:self._end]
                self._big_filled = got  # less than the body: all of it would have fit the scratch buffer
                self._start = self._end = 0
                return frames
            end = at + HEADER.size + length
            if end > self._end:
                break
            body = bytes(view[at + HEADER.size:end])
            self._start = end
            frames += self._decode(kind, body)
        if self._start == self._end:
            self._start = self._end = 0
        return frames

    @property
    def buffered(self) -> int:
        """The bytes of the buffers held (the scratch buffer and a large record's)."""
        return len(self._scratch) + len(self._big)

    def _big_done(self) -> list[dict[str, Any]]:
        data = bytes(memoryview(self._big)[:self._big_size])
        if len(self._big) > self.KEEP:
            self._big = bytearray()
        kind, head = self._big_kind, self._big_head
        self._big_size = self._big_filled = 0
        self._big_head = b""
        if kind == RUN and head:
            try:
                return decode_run(head, data)
            except ProtocolError as exc:
                self.malformed.append(str(exc))
                return []
        return self._decode(kind, data)

    def _decode(self, kind: int, body: bytes) -> list[dict[str, Any]]:
        try:
            return decode_frames(kind, body)
        except ProtocolError as exc:
            self.malformed.append(str(exc))
            return []
