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
5-byte header (4-byte big-endian length of the body, then :data:`TEXT` or :data:`BINARY`) and the body: the
message :mod:`core.protocol.linkframes` makes of a stream frame (text as UTF-8; binary frames carry raw bytes).
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
    "BINARY", "CHOSEN", "HEADER", "HELLO", "MAX_BODY", "SIGNAL_KEY", "TEXT", "DirectSignal", "FrameReader",
    "encode_stream_frame", "fingerprint", "parse_header", "parse_signal",
]

SIGNAL_KEY = "direct"
HELLO = b"H"
CHOSEN = b"G"
TEXT = 0
BINARY = 1
HEADER = struct.Struct(">IB")
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
    if frame["kind"] == "binary":
        head, data = binary_head(frame), frame["data"]
        return b"".join((HEADER.pack(len(head) + len(data), BINARY), head, data))
    body = encode_frame(frame).encode("utf-8")  # type: ignore[union-attr]
    return HEADER.pack(len(body), TEXT) + body


def parse_header(header: bytes) -> tuple[int, int]:
    """(body length, kind) of a 5-byte frame header.

    Raises:
        ProtocolError: an unknown kind, or a body over MAX_BODY.
    """
    length, kind = HEADER.unpack(header)
    if kind not in (TEXT, BINARY):
        raise ProtocolError(f"a direct-link frame of unknown kind {kind}")
    if length > MAX_BODY:
        raise ProtocolError(f"a direct-link frame of {length} bytes, over the limit of {MAX_BODY}")
    return length, kind


def decode_body(kind: int, body: bytes) -> dict[str, Any]:
    """The stream frame of a body read after its header.

    Raises:
        ProtocolError: the body is not a valid frame (or not UTF-8 for a text frame).
    """
    if kind == TEXT:
        try:
            return decode_frame(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("a direct-link text frame is not valid UTF-8") from None
    return decode_frame(body)


class FrameReader:
    """Turns bytes as they arrive into frames: ``feed(data)`` returns every frame completed by ``data``."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            length, kind = parse_header(bytes(self._buffer[: HEADER.size]))
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            frames.append(decode_body(kind, body))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)
