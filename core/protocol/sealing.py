"""Frames sealed for the relay, without I/O: ChaCha20-Poly1305 with the session's keys (:mod:`.handshake`).

Every frame a session writes to the database is sealed by :meth:`FrameSealer.seal` and opened by
:meth:`FrameSealer.open` on the other side; stream frames in memory and on other links stay plain (a WebRTC data
channel has its own encryption, DTLS, whose fingerprints now travel inside this one). A stored frame::

    {"kind": "data", "seq": 7, "data": "<base64 of ciphertext and tag>", "confirm"?: true, "more"?: true}

- The plaintext is the frame's ``data`` in UTF-8; for ``binary`` frames the raw bytes its base64 stands for (so
  bytes are not base64-encoded twice); for ``ping``/``pong`` nothing (only the 16-byte tag is stored).
- The nonce is the kind's code and the sequence number: unique per key, since a key is one session's one direction
  and a (kind, seq) pair is only ever written with the same content (a retransmission seals the same frame again,
  giving the same bytes).
- The associated data binds the protocol, the session id, the sender and receiver ids, the kind, the sequence
  number and the ``confirm`` and ``more`` flags: a frame moved to another key, session, direction or position, or
  with a flag changed, fails authentication.
- Acknowledgements carry a ``tag``: the seal of nothing under (``ack``, seq), so a forged acknowledgement cannot make
  a sender believe its frames arrived.

What stays visible to the database: the kind, the sequence number, the flags, the size (plaintext plus 16 bytes,
then base64) and the time of every write.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import ProtocolError
from .handshake import PROTOCOL, SessionKeys
from .records import decode_base64

TAG_BYTES = 16
_KIND_CODES = {"data": 1, "binary": 2, "signal": 3, "close": 4, "ack": 5, "ping": 6, "pong": 7}


def sealed_frame_limit(relay_frame_chars: int) -> int:
    """The most plaintext bytes of ``data`` in one frame whose sealed base64 fits ``relay_frame_chars`` characters,
    rounded down to a multiple of 4 (a piece of a base64 text cut there is base64 on its own)."""
    return ((relay_frame_chars // 4) * 3 - TAG_BYTES) // 4 * 4


class FrameSealer:
    """Seals frames this device writes and opens frames the peer wrote, for one session.

    Args:
        keys: the session keys from the handshake.
        session_id, own_id, peer_id: bound into every frame's associated data.
    """

    def __init__(self, keys: SessionKeys, *, session_id: str, own_id: str, peer_id: str) -> None:
        self._send = ChaCha20Poly1305(keys.send)
        self._receive = ChaCha20Poly1305(keys.receive)
        self._out_prefix = b"\0".join((PROTOCOL, session_id.encode(), own_id.encode(), peer_id.encode())) + b"\0"
        self._in_prefix = b"\0".join((PROTOCOL, session_id.encode(), peer_id.encode(), own_id.encode())) + b"\0"

    @staticmethod
    def _nonce(kind: str, seq: int) -> bytes:
        return bytes([_KIND_CODES[kind], 0, 0, 0]) + seq.to_bytes(8, "big")

    @staticmethod
    def _ad(prefix: bytes, kind: str, seq: int, confirm: bool, more: bool) -> bytes:
        return prefix + f"{kind}\0{seq}\0{int(confirm)}{int(more)}".encode("ascii")

    def seal(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The stored form of a plain frame (see the module docstring)."""
        kind, seq = frame["kind"], frame["seq"]
        confirm, more = bool(frame.get("confirm")), bool(frame.get("more"))
        data = frame.get("data", "")
        if kind == "binary":
            plain = decode_base64(data)
        else:
            plain = data.encode("utf-8")
        sealed = self._send.encrypt(self._nonce(kind, seq), plain, self._ad(self._out_prefix, kind, seq, confirm, more))
        out: dict[str, Any] = {"kind": kind, "seq": seq, "data": base64.b64encode(sealed).decode("ascii")}
        if confirm:
            out["confirm"] = True
        if more:
            out["more"] = True
        return out

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The plain frame from its stored form.

        Raises:
            ProtocolError: malformed, or it fails authentication (forged, altered, replayed from elsewhere).
        """
        kind, seq = stored.get("kind"), stored.get("seq")
        if kind not in _KIND_CODES or kind == "ack" or isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ProtocolError(f"A sealed frame has no valid kind and seq: {str(stored)[:120]}")
        confirm, more = stored.get("confirm", False), stored.get("more", False)
        if not isinstance(confirm, bool) or not isinstance(more, bool):
            raise ProtocolError(f"Sealed frame {seq} has malformed flags.")
        data = stored.get("data", "")
        try:
            sealed = decode_base64(data) if isinstance(data, str) else b""
        except ValueError as exc:
            raise ProtocolError(
                f"A {kind} frame ({seq}) failed authentication and was dropped: its data is {exc}."
            ) from None
        try:
            plain = self._receive.decrypt(
                self._nonce(kind, seq), sealed, self._ad(self._in_prefix, kind, seq, confirm, more)
            )
        except (InvalidTag, binascii.Error, ValueError, TypeError):
            raise ProtocolError(
                f"A {kind} frame ({seq}) failed authentication and was dropped: it was not written by the other "
                "device in this session (forged, altered, or replayed)."
            ) from None
        frame: dict[str, Any] = {"kind": kind, "seq": seq}
        if kind == "binary":
            frame["data"] = base64.b64encode(plain).decode("ascii")
        elif kind not in ("ping", "pong"):
            try:
                frame["data"] = plain.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"Sealed {kind} frame {seq} is not UTF-8 text.") from None
        if confirm:
            frame["confirm"] = True
        if more:
            frame["more"] = True
        return frame

    def ack_tag(self, seq: int) -> str:
        """The tag an acknowledgement of everything up to ``seq`` carries."""
        tag = self._send.encrypt(self._nonce("ack", seq), b"", self._ad(self._out_prefix, "ack", seq, False, False))
        return base64.b64encode(tag).decode("ascii")

    def check_ack(self, seq: object, tag: object) -> int:
        """The acknowledged ``seq`` when ``tag`` authenticates it.

        Raises:
            ProtocolError: malformed or forged.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(tag, str):
            raise ProtocolError(f"An acknowledgement without a valid seq and tag was dropped: seq {seq!r}.")
        try:
            self._receive.decrypt(
                self._nonce("ack", seq), base64.b64decode(tag, validate=True), self._ad(self._in_prefix, "ack", seq, False, False)
            )
        except (InvalidTag, binascii.Error, ValueError):
            raise ProtocolError(
                f"An acknowledgement ({seq}) failed authentication and was dropped: it was not written by the other "
                "device in this session."
            ) from None
        return seq
