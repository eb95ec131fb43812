r"""How a stream frame (:mod:`core.protocol.stream`) travels as one message on a link other than the relay. No I/O.

Frames on the data channel: one message each, a short ASCII header line, then the data as it is (no escaping).
Text frames are text messages:

    d42\nhello          {"kind": "data", "seq": 42, "data": "hello"}
    d43!\nhi            ... "confirm": true          d44+\n<piece>   ... "more": true (a fragment)
    s46\n<json>         signal                       c47\n   close
    a47                 {"kind": "ack", "seq": 47}   p3 / q3   ping / pong (no data line)

Binary frames (the stream's ``binary`` kind: raw bytes in the stream, base64 only on the relay) are binary
messages: the same header line in ASCII, then the raw bytes:

    b"b45\n" + raw      {"kind": "binary", "seq": 45, "data": raw}     b"b46!+\n" + raw   flags as above

A relay-sized frame (48 KiB of bytes, 64 KiB as base64) is then one data-channel message of 48 KiB and a few
bytes, under the 64 KiB of one link frame. Frames keep their sequence numbers, so a binary frame sent here and
resent on the relay after a fallback is the same frame (base64 there). JSON would escape every non-ASCII character
of a text (six bytes for one) and costs a parse per frame; this header costs a split. A text starting with "{" is
read as a JSON frame.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ProtocolError

__all__ = ["binary_head", "decode_frame", "encode_frame"]

_KIND_CODES = {"data": "d", "binary": "b", "signal": "s", "close": "c", "ack": "a", "ping": "p", "pong": "q"}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
_MAX_HEADER = 16


def _header(frame: dict[str, Any]) -> str:
    head = f"{_KIND_CODES[frame['kind']]}{frame['seq']}"
    if frame.get("confirm"):
        head += "!"
    if frame.get("more"):
        head += "+"
    return head


def encode_frame(frame: dict[str, Any]) -> str | bytes:
    """The data-channel message of a :mod:`core.protocol.stream` frame: text, or bytes for a binary frame (see above)."""
    kind = frame["kind"]
    if kind == "data" and "more" not in frame and "confirm" not in frame:  # most frames: no flags to write
        return f"d{frame['seq']}\n{frame['data']}"
    if "data" not in frame:
        return f"{_KIND_CODES[kind]}{frame['seq']}"
    if kind == "binary":
        return binary_head(frame) + frame["data"]
    return f"{_header(frame)}\n{frame['data']}"


def binary_head(frame: dict[str, Any]) -> bytes:
    """The header line of a binary frame's message (its raw bytes follow), for links that write the two apart."""
    return f"{_header(frame)}\n".encode("ascii")


def decode_frame(message: str | bytes) -> dict[str, Any]:
    """The frame a data-channel message carries; the stream checks the rest (kinds that need data, ranges).

    Raises:
        ProtocolError: the header is malformed, or a binary message is not a binary frame.
    """
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _decode_binary(message)
    text = message
    if text[:1] == "d":
        # Most frames: a data frame without flags, read without the general header parser.
        head, newline, data = text.partition("\n")
        digits = head[1:]
        if newline and len(head) <= _MAX_HEADER and digits.isdigit() and digits.isascii():
            return {"kind": "data", "seq": int(digits), "data": data}
    if text.startswith("{"):
        try:
            frame = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"a WebRTC frame is not valid JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise ProtocolError("a WebRTC frame in JSON must be an object")
        return frame
    head, newline, data = text.partition("\n")
    frame = _decode_header(head)
    if frame["kind"] == "binary":
        raise ProtocolError("a binary frame arrived as text; binary frames are binary messages")
    if newline:
        frame["data"] = data
    return frame


def _decode_binary(message: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A binary frame; its ``data`` is a memoryview of ``message`` (nothing copied: the stream joins fragments). A
    bytearray, which its owner may change or reuse, is copied first."""
    view = memoryview(bytes(message) if isinstance(message, bytearray) else message)
    end = bytes(view[:_MAX_HEADER + 1]).find(b"\n")
    if end < 0:
        raise ProtocolError(f"a binary WebRTC frame has no header line: {bytes(view[:_MAX_HEADER + 1])!r}")
    try:
        head = bytes(view[:end]).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"a binary WebRTC frame has a malformed header {bytes(view[:end])!r}") from None
    frame = _decode_header(head)
    if frame["kind"] != "binary":
        raise ProtocolError(f"a {frame['kind']} frame arrived as a binary message; only binary frames are binary")
    frame["data"] = view[end + 1:]
    return frame


def _decode_header(head: str) -> dict[str, Any]:
    kind = _CODE_KINDS.get(head[:1])
    digits = head[1:].rstrip("!+")
    if kind is None or not digits.isascii() or not digits.isdigit() or len(head) > _MAX_HEADER:
        raise ProtocolError(f"a WebRTC frame has a malformed header {head[:_MAX_HEADER + 1]!r}")
    frame: dict[str, Any] = {"kind": kind, "seq": int(digits)}
    flags = head[1 + len(digits):]
    if "!" in flags:
        frame["confirm"] = True
    if "+" in flags:
        frame["more"] = True
    return frame


