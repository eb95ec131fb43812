"""Frames sealed for the relay, without I/O: ChaCha20-Poly1305 with the session's keys (:mod:`.handshake`).

Every frame a session writes to the database is sealed by :meth:`FrameSealer.seal` and opened by
:meth:`FrameSealer.open` on the other side; stream frames in memory and on other links stay plain (a WebRTC data
channel has its own encryption, DTLS, whose fingerprints now travel inside this one). A stored frame::

    {"kind": "data", "seq": 7, "data": "<base64 of ciphertext and tag>", "confirm"?: true, "more"?: true}

- The plaintext of a frame that carries data is one *format* byte, then the body: the frame's ``data`` in UTF-8, or
  for ``binary`` frames the raw bytes its base64 stands for (so bytes are not base64-encoded twice). Format 0: the
  body as it is; format 1: the body compressed with raw DEFLATE (zlib), used only when the sealer compresses and
  that saves at least an eighth (:func:`deflate`). ``ping``/``pong`` frames have no plaintext at all (only the
  16-byte tag is stored).
- The format byte is inside the ciphertext, so the tag authenticates it like the body (a flipped format byte fails
  authentication, exactly as a flipped body byte does; TLS 1.3 carries its record type the same way), and the
  database does not even see whether a frame was compressed. A receiver opens both formats whatever its own setting.
- Inflating is bounded: a compressed body may not inflate past the most a frame of its kind can hold, which is what
  the sender itself may put in one (:func:`sealed_frame_limit` bytes of text, 3/4 of that of binary data); one that
  would, or that is not one complete DEFLATE stream, is a :class:`~core.errors.ProtocolError` and the frame is
  dropped. Memory stays bounded even against a peer that holds the session key.
- The nonce is the kind's code and the sequence number: unique per key, since a key is one session's one direction
  and a (kind, seq) pair is only ever written with the same content (a retransmission seals the same frame again,
  giving the same bytes). Compression keeps that true: whether and how a frame is compressed depends only on its
  bytes (never on earlier frames), so sealing a frame twice gives the same ciphertext.
- The associated data binds the protocol, the frame format (:data:`FRAME_FORMAT`), the session id, the sender and
  receiver ids, the kind, the sequence number and the ``confirm`` and ``more`` flags: a frame moved to another key,
  session, direction or position, or with a flag changed, fails authentication; so does a frame from a peerchat
  that seals frames another way (frames without a format byte, before compression came), rather than being
  misread.
- Acknowledgements carry a ``tag``: the seal of nothing under (``ack``, seq), so a forged acknowledgement cannot make
  a sender believe its frames arrived.

What stays visible to the database: the kind, the sequence number, the flags, the size (the body, compressed or
not, plus 17 bytes, then base64) and the time of every write. With compression the size depends on the content as
well as its length (see ``ManagerOptions.relay_compression`` for when that matters).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import ProtocolError
from .handshake import PROTOCOL, SessionKeys
from .records import decode_base64

TAG_BYTES = 16
# The frame format, bound into every frame's associated data: change it whenever the plaintext's layout changes.
FRAME_FORMAT = b"frames 2"
# What sealing adds to a frame's body: the format byte and the tag.
OVERHEAD_BYTES = 1 + TAG_BYTES
_KIND_CODES = {"data": 1, "binary": 2, "signal": 3, "close": 4, "ack": 5, "ping": 6, "pong": 7}
_EMPTY_KINDS = ("ping", "pong")

# The format byte.
AS_IS = 0
DEFLATED = 1

# Compression: raw DEFLATE (no zlib header or checksum: the tag already proves integrity), kept only when it saves
# at least 1/8 of the body; bodies shorter than COMPRESS_MIN_BYTES are never tried (nothing worth saving). A body
# longer than twice SAMPLE_BYTES is first judged by its first SAMPLE_BYTES compressed at zlib's fastest level:
# - a sample that does not shrink by 1/16 (random or already compressed data: photos, archives) skips the whole
#   body, for a small fraction of what compressing it costs;
# - a sample that shrinks, but by less than a quarter (text without repeats: random characters, base64, keys) has
#   only its alphabet to give: the whole body is Huffman-coded alone (no search for repeats), which saves as much
#   there at about a third of the time;
# - otherwise (ordinary text, JSON, anything with repeats) the whole body is compressed at zlib's fastest level,
#   which on chat-like text keeps nearly all of level 6's gain at well under half its time.
# The decision depends only on the body, so a retransmitted frame is sealed to the same bytes.
LEVEL = 1
COMPRESS_MIN_BYTES = 128
SAMPLE_BYTES = 2048
_WBITS = -15


def sealed_frame_limit(relay_frame_chars: int) -> int:
    """The most plaintext bytes of ``data`` in one frame whose sealed base64 fits ``relay_frame_chars`` characters,
    uncompressed, rounded down to a multiple of 4 (a piece of a base64 text cut there is base64 on its own)."""
    return ((relay_frame_chars // 4) * 3 - OVERHEAD_BYTES) // 4 * 4


def deflate(body: bytes) -> bytes | None:
    """``body`` compressed (raw DEFLATE), or None when compressing it does not save at least an eighth."""
    size = len(body)
    if size < COMPRESS_MIN_BYTES:
        return None
    strategy = zlib.Z_DEFAULT_STRATEGY
    if size > 2 * SAMPLE_BYTES:
        sample = len(zlib.compress(memoryview(body)[:SAMPLE_BYTES], LEVEL, _WBITS))
        if sample > SAMPLE_BYTES - SAMPLE_BYTES // 16:
            return None
        if sample > SAMPLE_BYTES - SAMPLE_BYTES // 4:
            strategy = zlib.Z_HUFFMAN_ONLY
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, _WBITS, 8, strategy)
    packed = compressor.compress(body) + compressor.flush()
    return packed if len(packed) <= size - size // 8 else None


def inflate(packed: bytes, limit: int) -> bytes:
    """The body ``packed`` (raw DEFLATE) stands for, refusing to produce more than ``limit`` bytes.

    Raises:
        ValueError: it would inflate past ``limit``, is not one complete DEFLATE stream, or has bytes after it.
    """
    inflater = zlib.decompressobj(_WBITS)
    try:
        # One byte of room past the limit: a body of exactly ``limit`` bytes then ends cleanly, a longer one shows.
        body = inflater.decompress(packed, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"its compressed data is damaged ({exc})") from None
    if len(body) > limit:
        raise ValueError(f"its compressed data would inflate past {limit:,} bytes, the most a frame holds")
    if not inflater.eof:
        raise ValueError("its compressed data ends early")
    if inflater.unused_data:
        raise ValueError("it has data after its compressed data")
    return body


def _binary_bytes(data: object) -> bytes:
    """The bytes of a binary frame's ``data``: the stream's bytes as they are (a fragment is a memoryview), else
    base64 text decoded and checked."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    return decode_base64(data)  # type: ignore[arg-type]


class FrameSealer:
    """Seals frames this device writes and opens frames the peer wrote, for one session.

    Args:
        keys: the session keys from the handshake.
        session_id, own_id, peer_id: bound into every frame's associated data.
        compress: compress frame bodies before sealing when that pays (``ManagerOptions.relay_compression``).
            Only what this side writes; frames from the peer are opened in either format.
        relay_frame_chars: the most characters of ``data`` in one stored frame (``ManagerOptions.relay_frame_bytes``):
            bounds how far a received compressed body may inflate (:func:`sealed_frame_limit`).
    """

    def __init__(
        self,
        keys: SessionKeys,
        *,
        session_id: str,
        own_id: str,
        peer_id: str,
        compress: bool = False,
        relay_frame_chars: int = 64 * 1024,
    ) -> None:
        self._send = ChaCha20Poly1305(keys.send)
        self._receive = ChaCha20Poly1305(keys.receive)
        ids = (session_id.encode(), own_id.encode(), peer_id.encode())
        self._out_prefix = b"\0".join((PROTOCOL, FRAME_FORMAT, *ids)) + b"\0"
        self._in_prefix = b"\0".join((PROTOCOL, FRAME_FORMAT, ids[0], ids[2], ids[1])) + b"\0"
        self.compress = compress
        limit = sealed_frame_limit(relay_frame_chars)
        # The most body bytes a frame of each kind holds: UTF-8 text up to the limit, binary its 3/4 (base64).
        self._max_text = limit
        self._max_binary = limit // 4 * 3
        self.counts = {"deflated": 0, "as_is": 0}

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
        if kind in _EMPTY_KINDS:
            plain = b""
        else:
            data = frame.get("data", "")
            body = _binary_bytes(data) if kind == "binary" else data.encode("utf-8")
            packed = deflate(body) if self.compress else None
            if packed is None:
                plain = bytes([AS_IS]) + body
                self.counts["as_is"] += 1
            else:
                plain = bytes([DEFLATED]) + packed
                self.counts["deflated"] += 1
        return self.seal_plaintext(kind, seq, plain, confirm=confirm, more=more)

    def seal_plaintext(
        self, kind: str, seq: int, plain: bytes, *, confirm: bool = False, more: bool = False
    ) -> dict[str, Any]:
        """The stored frame whose plaintext is exactly ``plain`` (its format byte included): what :meth:`seal`
        builds, and what a test writes to play a peer that holds the session key."""
        sealed = self._send.encrypt(self._nonce(kind, seq), plain, self._ad(self._out_prefix, kind, seq, confirm, more))
        out: dict[str, Any] = {"kind": kind, "seq": seq, "data": base64.b64encode(sealed).decode("ascii")}
        if confirm:
            out["confirm"] = True
        if more:
            out["more"] = True
        return out

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The plain frame from its stored form (a binary frame's ``data`` is its bytes: nothing encodes them to
        base64 again, :func:`~core.protocol.records.frame_from_store` takes them as they are).

        Raises:
            ProtocolError: malformed, it fails authentication (forged, altered, replayed from elsewhere), or its
                compressed body is damaged or would inflate past what one frame holds.
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
        if kind not in _EMPTY_KINDS:
            body = self._body(kind, seq, plain)
            if kind == "binary":
                frame["data"] = body
            else:
                try:
                    frame["data"] = body.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError(f"Sealed {kind} frame {seq} is not UTF-8 text.") from None
        if confirm:
            frame["confirm"] = True
        if more:
            frame["more"] = True
        return frame

    def _body(self, kind: str, seq: int, plain: bytes) -> bytes:
        """The body of an authenticated plaintext: after its format byte, inflated if it says so (bounded)."""
        if not plain:
            raise ProtocolError(f"Sealed {kind} frame {seq} has no format byte; dropped.")
        limit = self._max_binary if kind == "binary" else self._max_text
        fmt = plain[0]
        if fmt == AS_IS:
            body = plain[1:]
        elif fmt == DEFLATED:
            try:
                body = inflate(plain[1:], limit)
            except ValueError as exc:
                raise ProtocolError(f"Sealed {kind} frame {seq} was dropped: {exc}.") from None
        else:
            raise ProtocolError(
                f"Sealed {kind} frame {seq} has an unknown format ({fmt}); the other device may run another "
                "version of peerchat. Dropped."
            )
        if len(body) > limit:
            raise ProtocolError(f"Sealed {kind} frame {seq} holds {len(body):,} bytes, over the {limit:,} a frame may hold.")
        return body

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
