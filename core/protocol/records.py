"""What the relay stores, as plain values: ids and labels the security rules accept, the presence record, the
paths of the data layout (see :mod:`core.relay.connection` and ``docs/relay-layout.md``) and message keys. No I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ..errors import ProtocolError
from .stream import SEQUENCED_KINDS

SERVER_TIMESTAMP = {".sv": "timestamp"}
ID_RE = re.compile(r"^[A-Za-z0-9_:@+=~-]{1,64}$")
MAX_LABEL = 100


def valid_id(value: object) -> bool:
    """True for a user, device or session id the security rules accept (1-64 of ``A-Z a-z 0-9 _ : @ + = ~ -``)."""
    return isinstance(value, str) and ID_RE.match(value) is not None


def valid_label(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_LABEL


def decode_base64(text: str) -> bytes:
    """The bytes of a ``binary`` frame's ``data``, which must be canonical base64 (what ``base64.b64encode``
    writes: padded, no extra ``=``, no spaces, no bits set past the end).

    Raises:
        ValueError: anything else, saying what is wrong.
    """
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None
    # Strict decoding refuses everything else that is not canonical (characters outside the alphabet, missing,
    # early or excess padding); bits set past the end can only be in the last four characters, so re-encoding
    # those alone checks them (re-encoding the whole text cost a quarter as much again as decoding it).
    if text and base64.b64encode(raw[(len(text) // 4 - 1) * 3 :]).decode("ascii") != text[-4:]:
        raise ValueError("not canonical base64 (wrong padding or bits past the end)")
    return raw


def frame_to_store(frame: dict[str, Any]) -> dict[str, Any]:
    """A stream frame as the relay stores it in the clear: a binary frame's raw bytes become base64 text; every other
    frame is stored as it is. (A sealed frame is made from the stream's frame directly: :mod:`.sealing`.)"""
    if frame["kind"] != "binary" or isinstance(frame.get("data"), str):
        return frame
    return {**frame, "data": base64.b64encode(frame["data"]).decode("ascii")}


def frame_from_store(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame read from the relay as the stream takes it: a binary frame's base64 text becomes its bytes (decoded
    and checked); bytes (what opening a sealed frame may give) stay as they are.

    Raises:
        ProtocolError: a binary frame's data is not canonical base64 (or not text at all), saying why.
    """
    if frame.get("kind") != "binary":
        return frame
    data = frame.get("data")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return frame if isinstance(data, bytes) else {**frame, "data": bytes(data)}
    if not isinstance(data, str):
        raise ProtocolError(f"Binary message {frame.get('seq')!r} carries {type(data).__name__}, not base64 text.")
    try:
        raw = decode_base64(data)
    except ValueError as exc:
        raise ProtocolError(f"Binary message {frame.get('seq')!r} is not valid base64: {exc}") from None
    return {**frame, "data": raw}


def heartbeat_record(label: str, *, online: bool = True, key: str | None = None) -> dict[str, Any]:
    """The value a device writes at ``presence/{userId}/{deviceId}`` (``key``: its identity key in base64)."""
    record: dict[str, Any] = {"label": label, "lastSeen": SERVER_TIMESTAMP, "online": online}
    if key is not None:
        record["key"] = key
    return record


def presence_path(uid: str, device_id: str | None = None) -> str:
    return f"presence/{uid}" + (f"/{device_id}" if device_id else "")


def negotiation_path(uid: str, device_id: str) -> str:
    return f"relay/negotiation/{uid}/{device_id}"


def session_path(uid: str, session_id: str) -> str:
    return f"relay/sessions/{uid}/{session_id}"


def message_key(frame: dict[str, Any]) -> str:
    """The key a frame is stored under in the receiver's inbox."""
    kind, seq = frame["kind"], frame["seq"]
    prefix = "s" if kind in SEQUENCED_KINDS else kind
    return f"{prefix}{seq:010d}"
