"""The file-transfer protocol without I/O: binary frames, the sending and receiving state machines, a rate meter.

Every frame is one ``send_bytes`` message whose first byte is its type. The transfer layer owns all ``binary``
traffic on a connection; strings (``data``) are left to chat.

Control frames are the type byte followed by a JSON object that always names the transfer (``id``, 32 hex digits)::

    0x01 OFFER     {"v", "id", "chunk_size", "window", "part", "parts", "files": [[path, size, fingerprint], ...],
                    "folders": [path, ...]}      folders to create even when empty (optional)
    0x02 ACCEPT    {"id", "offsets": [bytes the receiver already has, per file]}
    0x03 DECLINE   {"id", "reason"}
    0x04 ACK       {"id", "file", "offset"}      the receiver wrote file[0:offset]
    0x05 VERIFIED  {"id", "file"}                the file's SHA-256 matched; it has its final name
    0x06 CANCEL    {"id", "kind", "message"}     either side ends the transfer; kind says why: cancelled,
                                                 disk, space, integrity, protocol, interrupted (resumable)
    0x07 REWIND    {"id", "file", "offset"}      a chunk went missing: send again from offset
    0x08 DIGEST    {"id", "file", "sha256"}      the SHA-256 of the whole file, sent after its last chunk
    0x09 HASHING   {"id", "file", "offset"}      the sender has hashed file[0:offset] (a resumed prefix, from its
                                                 disk): it is still there, however long a huge prefix takes

A chunk is the type byte 0x10, the transfer id as 16 raw bytes, the file index (u32, big-endian), the offset (u64)
and the payload, so file data crosses WebRTC without any encoding.

No byte waits for a hash. The offer names each file by a *fingerprint* (:func:`fingerprint`: the SHA-256 of its
size, modification time and first and last 64 KiB, two small reads whatever the size), which only serves to find a
partial file to resume; the sender hashes each file while it reads the chunks and sends its SHA-256 in a DIGEST
frame after the last one. The receiver hashes what it writes (after a resume, the part it already had first), and a
file gets its final name only when the two digests match. After a resume at offset N, each side hashes [0, N) from
its own disk while the chunks from N already move (and then, from disk, what moved meanwhile, until its hash catches
up), so a resumed file is verified whole, and a file changed under the same fingerprint fails integrity.

Version 2 (this one) replaced version 1's SHA-256 in the offer by the fingerprint and added DIGEST and HASHING. A
receiver declines an offer of any other version with a reason saying which device to update, so the sender fails
at once instead of waiting for an answer; a version 1 receiver cannot read a version 2 offer and reports a protocol
error saying to update peerchat, without answering.

An offer too large for one frame (thousands of files) is split into ``parts`` frames that arrive in order. An offer
holds at least one file or folder; an offer of only (empty) folders ends as soon as it is accepted.

The flow: the sender offers; the receiver accepts with the offsets it already has (resume) or declines; the sender
streams chunks with at most ``window`` chunks read or unacknowledged, file after file, each file's DIGEST after its
last chunk; the receiver acknowledges every ``window // 2`` chunks and at the end of each file, and once it has
every byte and the digest, compares, renames the file and says VERIFIED. The sender is done when every file is
verified. A chunk that arrives past a gap makes the receiver ask once for a REWIND; duplicates are ignored.

The machines take messages (and the results of the I/O they asked for) and return actions: :class:`SendMessage`,
:class:`ReadChunk`, :class:`HashFile`, :class:`WriteChunk`, :class:`VerifyFile`, :class:`FileDone`,
:class:`Finished`, :class:`Failed`. ``core.files.transfers`` performs them.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

from ..errors import (
    DiskError,
    InsufficientSpaceError,
    IntegrityError,
    PeerchatError,
    ProtocolError,
    TransferCancelledError,
    TransferDeclinedError,
    TransferError,
    TransferInterruptedError,
)

PROTOCOL_VERSION = 2

OFFER = 0x01
ACCEPT = 0x02
DECLINE = 0x03
ACK = 0x04
VERIFIED = 0x05
CANCEL = 0x06
REWIND = 0x07
DIGEST = 0x08
HASHING = 0x09
CHUNK = 0x10

_CHUNK_HEADER = struct.Struct(">B16sIQ")
CHUNK_HEADER_SIZE = _CHUNK_HEADER.size

MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_WINDOW = 1024
MAX_FILES = 1_000_000
MAX_PATH_CHARS = 4096
MAX_FILE_SIZE = 2**62
MAX_TEXT_CHARS = 2000

CancelKind = Literal["cancelled", "disk", "space", "integrity", "protocol", "interrupted"]
_CANCEL_KINDS = ("cancelled", "disk", "space", "integrity", "protocol", "interrupted")

_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")  # a SHA-256, and a fingerprint, in hex

NO_REASON = "no reason given"  # the reason a decline without one carries on the wire

# How much of each end of a file its fingerprint covers.
FINGERPRINT_BLOCK = 64 * 1024


def fingerprint(size: int, mtime_ns: int, head: bytes, tail: bytes) -> str:
    """A file's resume key (hex): the SHA-256 of its ``size``, its modification time in nanoseconds and its first
    and last :data:`FINGERPRINT_BLOCK` bytes (``head``, ``tail``; the same bytes twice for a small file).

    It costs two small reads whatever the file's size, and it changes when the file is rewritten, appended to or
    touched; it is not a digest of the content. A file changed in its middle with its modification time put back
    keeps its fingerprint: a resume then goes ahead, and the whole file's SHA-256 after the last chunk fails it.
    """
    digest = hashlib.sha256(b"peerchat-fingerprint-v2\0")
    digest.update(f"{size}:{mtime_ns}:{len(head)}:{len(tail)}\0".encode())
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()


def new_transfer_id() -> str:
    """A fresh random transfer id (32 lowercase hex digits)."""
    return uuid.uuid4().hex


# --- messages ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One offered file: its relative ``path`` with ``/`` separators, its ``size`` and its ``fingerprint`` (hex,
    :func:`fingerprint`), the key a receiver finds a partial copy by. Its SHA-256 follows its last chunk."""

    path: str
    size: int
    fingerprint: str


@dataclass(frozen=True)
class Offer:
    """What the sender offers: ``files``, and ``folders`` (relative paths, ``/`` separators) the receiver creates so
    that a directory arrives as it was sent, empty folders included."""

    id: str
    files: tuple[FileEntry, ...]
    chunk_size: int
    window: int
    folders: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class OfferPart:
    """One frame of an offer; :class:`OfferAssembler` joins the parts into an :class:`Offer`."""

    id: str
    files: tuple[FileEntry, ...]
    chunk_size: int
    window: int
    part: int
    parts: int
    folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accept:
    id: str
    offsets: tuple[int, ...]


@dataclass(frozen=True)
class Decline:
    id: str
    reason: str


@dataclass(frozen=True)
class Ack:
    id: str
    file: int
    offset: int


@dataclass(frozen=True)
class Verified:
    id: str
    file: int


@dataclass(frozen=True)
class Cancel:
    id: str
    kind: CancelKind
    message: str


@dataclass(frozen=True)
class Rewind:
    id: str
    file: int
    offset: int


@dataclass(frozen=True)
class Digest:
    """The SHA-256 (hex) of the whole of file ``file``, sent after its last chunk."""

    id: str
    file: int
    sha256: str


@dataclass(frozen=True)
class Hashing:
    """The sender hashed file ``file`` up to ``offset`` (a resume's prefix, from its disk, while chunks move)."""

    id: str
    file: int
    offset: int


@dataclass(frozen=True)
class ForeignOffer:
    """An offer in another version of this protocol (``version``, as the sender wrote it): declined, saying why."""

    id: str
    version: object

    @property
    def newer(self) -> bool:
        """Whether the sender speaks a newer version than this device."""
        return type(self.version) is int and self.version > PROTOCOL_VERSION

    def error(self) -> ProtocolError:
        """What this (the receiving) device tells its person."""
        which = "this device" if self.newer else "the other device"
        return ProtocolError(f"The other device offered files in file-transfer protocol version {self.version!r:.20}, "
                             f"and this device speaks version {PROTOCOL_VERSION}: update peerchat on {which}.")

    def decline_reason(self) -> str:
        """The reason sent back, as the sending device shows it ("The other device declined the files (...)")."""
        which = "the other device" if self.newer else "this device"
        return (f"it speaks file-transfer protocol version {PROTOCOL_VERSION}, and this device offered them in version "
                f"{self.version!r:.20}: update peerchat on {which}")


@dataclass(frozen=True)
class Chunk:
    id: str
    file: int
    offset: int
    data: bytes | memoryview  # a received chunk is a view into its frame: the payload is never copied


TransferMessage = (OfferPart | ForeignOffer | Accept | Decline | Ack | Verified | Cancel | Rewind | Digest | Hashing
                   | Chunk)


# --- encoding ---------------------------------------------------------------------------------------------------


def _control(kind: int, body: dict) -> bytes:
    return bytes([kind]) + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def encode_message(message: TransferMessage) -> bytes:
    """The frame for one message (an :class:`Offer` goes through :func:`encode_offer`)."""
    match message:
        case Chunk(id=tid, file=file, offset=offset, data=data):
            return _CHUNK_HEADER.pack(CHUNK, bytes.fromhex(tid), file, offset) + data
        case Accept(id=tid, offsets=offsets):
            return _control(ACCEPT, {"id": tid, "offsets": list(offsets)})
        case Decline(id=tid, reason=reason):
            return _control(DECLINE, {"id": tid, "reason": reason[:MAX_TEXT_CHARS]})
        case Ack(id=tid, file=file, offset=offset):
            return _control(ACK, {"id": tid, "file": file, "offset": offset})
        case Verified(id=tid, file=file):
            return _control(VERIFIED, {"id": tid, "file": file})
        case Cancel(id=tid, kind=kind, message=text):
            return _control(CANCEL, {"id": tid, "kind": kind, "message": text[:MAX_TEXT_CHARS]})
        case Rewind(id=tid, file=file, offset=offset):
            return _control(REWIND, {"id": tid, "file": file, "offset": offset})
        case Digest(id=tid, file=file, sha256=sha256):
            return _control(DIGEST, {"id": tid, "file": file, "sha256": sha256})
        case Hashing(id=tid, file=file, offset=offset):
            return _control(HASHING, {"id": tid, "file": file, "offset": offset})
        case OfferPart():
            return _offer_frame(message.id, message.files, message.chunk_size, message.window, message.part,
                                message.parts, message.folders)
    raise TypeError(f"not a transfer message: {message!r}")


def _offer_frame(tid: str, files: tuple[FileEntry, ...], chunk_size: int, window: int, part: int,
                 parts: int, folders: tuple[str, ...] = ()) -> bytes:
    body: dict = {"v": PROTOCOL_VERSION, "id": tid, "chunk_size": chunk_size, "window": window, "part": part,
                  "parts": parts, "files": [[f.path, f.size, f.fingerprint] for f in files]}
    if folders:  # omitted when empty
        body["folders"] = list(folders)
    return _control(OFFER, body)


def encode_offer(offer: Offer, *, max_frame: int) -> list[bytes]:
    """The offer as one or more frames, each at most ``max_frame`` bytes (files first, then folders)."""
    overhead = len(_offer_frame(offer.id, (), offer.chunk_size, offer.window, 999_999, 999_999, ("",)))
    groups: list[tuple[list[FileEntry], list[str]]] = [([], [])]
    used = overhead
    items = [(f.path, [f.path, f.size, f.fingerprint], f) for f in offer.files] + [(d, d, d) for d in offer.folders]
    for name, encoded, item in items:
        size = len(json.dumps(encoded, ensure_ascii=False).encode()) + 1
        if overhead + size > max_frame:
            raise ValueError(f"the name {name!r} is too long to offer over this link")
        if used + size > max_frame and (groups[-1][0] or groups[-1][1]):
            groups.append(([], []))
            used = overhead
        if isinstance(item, FileEntry):
            groups[-1][0].append(item)
        else:
            groups[-1][1].append(item)
        used += size
    return [_offer_frame(offer.id, tuple(g), offer.chunk_size, offer.window, i, len(groups), tuple(d))
            for i, (g, d) in enumerate(groups)]


def _int(body: dict, key: str, low: int, high: int) -> int:
    value = body.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"The other device sent a transfer frame with a bad {key.replace('_', ' ')}: {value!r}.")
    return value


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"The other device sent a transfer frame with a bad {key}: {value!r}.")
    return value[:MAX_TEXT_CHARS]


def _decode_file(item: object) -> FileEntry:
    if not (isinstance(item, list) and len(item) == 3):
        raise ProtocolError(f"The other device offered a file described as {item!r:.200}; expected [path, size, "
                            f"fingerprint].")
    path, size, key = item
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS:
        raise ProtocolError(f"The other device offered a file with a bad path: {path!r:.100}.")
    if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
        raise ProtocolError(f"The other device offered {path!r:.100} with a bad size: {size!r}.")
    if not isinstance(key, str) or not _SHA256.fullmatch(key):
        raise ProtocolError(f"The other device offered {path!r:.100} with a bad fingerprint: {key!r:.80}.")
    return FileEntry(path=path, size=size, fingerprint=key)


def _decode_folders(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_FILES:
        raise ProtocolError(f"The other device sent an offer whose folder list is not a list of at most {MAX_FILES} "
                            f"paths: {value!r:.100}.")
    for path in value:
        if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS:
            raise ProtocolError(f"The other device offered a folder with a bad path: {path!r:.100}.")
    return tuple(value)


def decode_message(frame: bytes) -> TransferMessage:
    """The message in one frame. Raises :class:`ProtocolError` saying what is wrong with a malformed one."""
    if not frame:
        raise ProtocolError("The other device sent an empty transfer frame.")
    kind = frame[0]
    if kind == CHUNK:
        if len(frame) < CHUNK_HEADER_SIZE:
            raise ProtocolError(f"The other device sent a chunk header of {len(frame)} bytes; it must have "
                                f"{CHUNK_HEADER_SIZE}.")
        _, raw_id, file, offset = _CHUNK_HEADER.unpack_from(frame)
        return Chunk(id=raw_id.hex(), file=file, offset=offset, data=memoryview(frame)[CHUNK_HEADER_SIZE:])
    if kind not in (OFFER, ACCEPT, DECLINE, ACK, VERIFIED, CANCEL, REWIND, DIGEST, HASHING):
        raise ProtocolError(f"The other device sent an unknown frame type 0x{kind:02x}.")
    try:
        body = json.loads(bytes(frame[1:]).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"The other device sent a transfer frame that is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise ProtocolError("The other device sent a transfer frame whose body is not a JSON object.")
    tid = body.get("id")
    if not isinstance(tid, str) or not _ID.fullmatch(tid):
        raise ProtocolError(f"The other device sent a transfer frame with a bad transfer id: {tid!r:.80}.")
    if kind == OFFER:
        if body.get("v") != PROTOCOL_VERSION:
            return ForeignOffer(id=tid, version=body.get("v"))
        files = body.get("files")
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise ProtocolError("The other device sent an offer without a valid file list.")
        parts = _int(body, "parts", 1, MAX_FILES)
        return OfferPart(id=tid, files=tuple(_decode_file(f) for f in files),
                         chunk_size=_int(body, "chunk_size", 1, MAX_CHUNK_SIZE),
                         window=_int(body, "window", 1, MAX_WINDOW), part=_int(body, "part", 0, parts - 1),
                         parts=parts, folders=_decode_folders(body.get("folders")))
    if kind == ACCEPT:
        offsets = body.get("offsets")
        if not isinstance(offsets, list) or not all(type(o) is int and 0 <= o <= MAX_FILE_SIZE for o in offsets):
            raise ProtocolError(f"The other device accepted with bad offsets: {offsets!r:.100}.")
        return Accept(id=tid, offsets=tuple(offsets))
    if kind == DECLINE:
        return Decline(id=tid, reason=_text(body, "reason"))
    if kind == CANCEL:
        cancel_kind = body.get("kind")
        if cancel_kind not in _CANCEL_KINDS:
            raise ProtocolError(f"The other device cancelled with an unknown kind: {cancel_kind!r:.40}.")
        return Cancel(id=tid, kind=cancel_kind, message=_text(body, "message"))
    file = _int(body, "file", 0, MAX_FILES)
    if kind == VERIFIED:
        return Verified(id=tid, file=file)
    if kind == DIGEST:
        sha256 = body.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ProtocolError(f"The other device sent a bad SHA-256 for file {file}: {sha256!r:.80}.")
        return Digest(id=tid, file=file, sha256=sha256)
    offset = _int(body, "offset", 0, MAX_FILE_SIZE)
    if kind == HASHING:
        return Hashing(id=tid, file=file, offset=offset)
    return Ack(id=tid, file=file, offset=offset) if kind == ACK else Rewind(id=tid, file=file, offset=offset)


class OfferAssembler:
    """Joins the parts of offers (arriving in order) into whole :class:`Offer` values.

    ``feed`` takes the time a part arrived (any clock); ``expire`` drops the offers whose last part is older.
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[OfferPart]] = {}
        self._last_part: dict[str, float] = {}

    def __len__(self) -> int:
        """How many offers are waiting for more parts."""
        return len(self._pending)

    def __contains__(self, transfer_id: object) -> bool:
        return transfer_id in self._pending

    def expire(self, before: float) -> list[str]:
        """Drop the offers whose last part arrived before ``before``; returns their ids."""
        stale = [tid for tid, when in self._last_part.items() if when < before]
        for tid in stale:
            self.discard(tid)
        return stale

    def feed(self, part: OfferPart, now: float = 0.0) -> Offer | None:
        """The whole offer once its last part arrived, else None. Raises ProtocolError on parts out of order."""
        self._last_part.pop(part.id, None)
        got = self._pending.get(part.id, [])
        first = got[0] if got else part
        if part.part != len(got) or (part.parts, part.chunk_size, part.window) != (
                first.parts, first.chunk_size, first.window):
            self._pending.pop(part.id, None)
            raise ProtocolError(f"The other device sent part {part.part} of an offer out of order.")
        got.append(part)
        if sum(len(p.files) for p in got) > MAX_FILES or sum(len(p.folders) for p in got) > MAX_FILES:
            self._pending.pop(part.id, None)
            raise ProtocolError(f"The other device offered too many files or folders (at most {MAX_FILES} of each).")
        if len(got) < part.parts:
            self._pending[part.id] = got
            self._last_part[part.id] = now
            return None
        self._pending.pop(part.id, None)
        if not any(p.files or p.folders for p in got):
            raise ProtocolError("The other device sent an offer with no files or folders in it.")
        return Offer(id=part.id, files=tuple(f for p in got for f in p.files), chunk_size=part.chunk_size,
                     window=part.window, folders=tuple(d for p in got for d in p.folders))

    def discard(self, transfer_id: str) -> None:
        self._pending.pop(transfer_id, None)
        self._last_part.pop(transfer_id, None)


# --- actions ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendMessage:
    data: bytes


@dataclass(frozen=True)
class ReadChunk:
    """Read ``size`` bytes of file ``file`` at ``offset`` and give them to :meth:`SendMachine.chunk_read`."""

    file: int
    offset: int
    size: int
    generation: int = 0


@dataclass(frozen=True)
class HashFile:
    """File ``file`` has nothing left to send (it is empty, or the receiver has all of it): hash it whole and give
    its SHA-256 to :meth:`SendMachine.file_hashed`."""

    file: int


@dataclass(frozen=True)
class WriteChunk:
    """Write ``data`` at ``offset`` of file ``file``'s .part (and hash it), then call ``chunk_written``."""

    file: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class VerifyFile:
    """Every byte of ``file`` is written and the sender's digest is here: compare the SHA-256 of what was written
    with ``sha256``, rename the file, then call ``file_verified``."""

    file: int
    sha256: str


@dataclass(frozen=True)
class FileDone:
    file: int


@dataclass(frozen=True)
class Finished:
    pass


@dataclass(frozen=True)
class Failed:
    error: PeerchatError


Action = SendMessage | ReadChunk | HashFile | WriteChunk | VerifyFile | FileDone | Finished | Failed

_KIND_OF_ERROR: tuple[tuple[type[PeerchatError], CancelKind], ...] = (
    (InsufficientSpaceError, "space"), (IntegrityError, "integrity"), (DiskError, "disk"),
    (ProtocolError, "protocol"), (TransferInterruptedError, "interrupted"),
)


def _kind_of(error: PeerchatError) -> CancelKind:
    for cls, kind in _KIND_OF_ERROR:
        if isinstance(error, cls):
            return kind
    return "cancelled"


def _error_from_peer(cancel: Cancel) -> PeerchatError:
    text = cancel.message or "no reason given"
    match cancel.kind:
        case "space":
            return InsufficientSpaceError(f"The other device has not enough free space: {text}")
        case "integrity":
            return IntegrityError(f"The file did not arrive intact: {text}")
        case "disk":
            return DiskError(f"The other device could not read or write the files: {text}")
        case "protocol":
            return ProtocolError(f"The other device stopped the transfer after a protocol error: {text}")
        case "interrupted":
            return TransferInterruptedError(f"The other device stopped the transfer for now: {text}")
    return TransferCancelledError(text)


class _Machine:
    """What both sides share: the offer, the end state, cancelling and failing."""

    role = ""

    def __init__(self, offer: Offer) -> None:
        self.offer = offer
        self.id = offer.id
        self.error: PeerchatError | None = None
        self.finished = False

    @property
    def ended(self) -> bool:
        return self.finished or self.error is not None

    def _end(self, error: PeerchatError, *, tell_peer: bool) -> list[Action]:
        if self.ended:
            return []
        self.error = error
        actions: list[Action] = []
        if tell_peer:
            actions.append(SendMessage(encode_message(Cancel(id=self.id, kind=_kind_of(error), message=str(error)))))
        actions.append(Failed(error))
        return actions

    def cancel(self) -> list[Action]:
        """This side cancels: the peer is told."""
        return self._end(TransferCancelledError(f"The {self.role} cancelled the transfer."), tell_peer=True)

    def fail(self, error: PeerchatError) -> list[Action]:
        """A local failure (a disk error, a bad hash, a protocol error) ends the transfer; the peer is told."""
        return self._end(error, tell_peer=True)

    def interrupt(self) -> list[Action]:
        """This side stops without cancelling (it is shutting down): the peer keeps what a resume needs."""
        return self._end(TransferInterruptedError(
            "The transfer stopped before it finished. Send the files again to continue where it stopped."),
            tell_peer=True)

    def connection_lost(self) -> list[Action]:
        """The connection closed: the transfer is interrupted and can be resumed on a new connection."""
        return self._end(TransferInterruptedError(
            "The connection closed during the transfer. Send the files again to continue where it stopped."),
            tell_peer=False)

    def _protocol(self, text: str) -> list[Action]:
        return self.fail(ProtocolError(f"The other device broke the transfer protocol: {text}"))

    def _on_cancel(self, cancel: Cancel) -> list[Action]:
        return self._end(_error_from_peer(cancel), tell_peer=False)


class SendMachine(_Machine):
    """The sending side of one transfer: which bytes to read next, what is in flight, when it is done."""

    role = "sender"

    def __init__(self, offer: Offer) -> None:
        super().__init__(offer)
        n = len(offer.files)
        self.accepted = False
        self.acked = [0] * n
        self._next = [0] * n
        self._sent = [0] * n
        self._in_flight: deque[tuple[int, int]] = deque()  # (file, end offset) of chunks read or unacknowledged
        self._verified = [False] * n
        self._digest_sent = [False] * n
        self._generation = 0
        self.start_offsets: tuple[int, ...] = (0,) * n

    @property
    def bytes_done(self) -> int:
        """Bytes the receiver has confirmed writing (including what it had before a resume)."""
        return sum(self.acked)

    @property
    def files_done(self) -> int:
        return sum(self._verified)

    def next_reads(self, max_chunk: int) -> list[ReadChunk]:
        """The reads that fit in the window now, each at most ``max_chunk`` (and the offer's chunk size) bytes."""
        if not self.accepted or self.ended:
            return []
        size_limit = max(1, min(max_chunk, self.offer.chunk_size))
        reads = []
        for index, f in enumerate(self.offer.files):
            while self._next[index] < f.size and len(self._in_flight) < self.offer.window:
                offset = self._next[index]
                size = min(size_limit, f.size - offset)
                self._next[index] = offset + size
                self._in_flight.append((index, offset + size))
                reads.append(ReadChunk(file=index, offset=offset, size=size, generation=self._generation))
            if len(self._in_flight) >= self.offer.window:
                break
        return reads

    def chunk_read(self, read: ReadChunk, data: bytes) -> list[Action]:
        """The bytes of a :class:`ReadChunk`: returns the chunk frame to send (nothing if it became stale)."""
        if self.ended or read.generation != self._generation:
            return []
        if len(data) != read.size:
            return self.fail(IntegrityError(
                f"{self.offer.files[read.file].path} changed while it was being sent (expected {read.size} bytes at "
                f"offset {read.offset}, read {len(data)}). Send it again."))
        self._sent[read.file] = max(self._sent[read.file], read.offset + read.size)
        return [SendMessage(encode_message(Chunk(id=self.id, file=read.file, offset=read.offset, data=data)))]

    def hashing(self, file: int, offset: int) -> list[Action]:
        """The I/O hashed file ``file`` up to ``offset`` from disk (a long resumed prefix, in steps): tell the
        receiver, whose idle time-out would otherwise end a transfer through which nothing arrives meanwhile."""
        if self.ended:
            return []
        return [SendMessage(encode_message(Hashing(id=self.id, file=file, offset=offset)))]

    def file_hashed(self, file: int, sha256: str) -> list[Action]:
        """The SHA-256 (hex) of all of file ``file``, hashed while its chunks were read (and, after a resume, the part
        the receiver had, from disk first) or for a :class:`HashFile`: returns the DIGEST frame, once per file.

        The I/O calls it right after the :meth:`chunk_read` of the file's last bytes, so the digest follows them."""
        if self.ended or not 0 <= file < len(self.offer.files) or self._digest_sent[file]:
            return []
        self._digest_sent[file] = True
        return [SendMessage(encode_message(Digest(id=self.id, file=file, sha256=sha256)))]

    def handle(self, message: TransferMessage) -> list[Action]:
        if self.ended:
            return []
        files = self.offer.files
        match message:
            case Accept(offsets=offsets) if not self.accepted:
                if len(offsets) != len(files) or any(o > f.size for o, f in zip(offsets, files)):
                    return self._protocol(f"it accepted with offsets {list(offsets)[:10]} that do not fit the offer")
                self.accepted = True
                self.start_offsets = tuple(offsets)
                self.acked = list(offsets)
                self._next = list(offsets)
                self._sent = list(offsets)
                if not files:  # only folders: the receiver created them before accepting
                    self.finished = True
                    return [Finished()]
                # Files with no bytes left to send still need their digest.
                return [HashFile(i) for i, f in enumerate(files) if offsets[i] == f.size]
            case Decline(reason=reason):
                said = f" ({reason})" if reason and reason != NO_REASON else ""
                return self._end(TransferDeclinedError(f"The other device declined the files{said}."),
                                 tell_peer=False)
            case Cancel():
                return self._on_cancel(message)
            case Ack(file=file, offset=offset) if self.accepted:
                if file >= len(files) or offset > self._sent[file]:
                    return self._protocol(f"it acknowledged file {file} up to {offset}, which was never sent")
                self.acked[file] = max(self.acked[file], offset)
                self._in_flight = deque(x for x in self._in_flight if x[0] != file or x[1] > offset)
                return []
            case Verified(file=file) if self.accepted:
                if file >= len(files) or self.acked[file] != files[file].size:
                    return self._protocol(f"it verified file {file} before receiving all of it")
                if not self._digest_sent[file]:
                    return self._protocol(f"it verified file {file} before its SHA-256 was sent")
                if self._verified[file]:
                    return []
                self._verified[file] = True
                actions: list[Action] = [FileDone(file)]
                if all(self._verified):
                    self.finished = True
                    actions.append(Finished())
                return actions
            case Rewind(file=file, offset=offset) if self.accepted:
                if file >= len(files) or offset > self._next[file]:
                    return self._protocol(f"it asked to rewind file {file} to {offset}, past what was sent")
                # Reads not yet sent become stale; what was sent of the other files stays in flight.
                self._generation += 1
                self._next = list(self._sent)
                self._next[file] = offset
                self._in_flight = deque(x for x in self._in_flight if x[1] <= self._next[x[0]])
                return []
        return self._protocol(f"a {type(message).__name__} message is not expected by the sender now")


class ReceiveMachine(_Machine):
    """The receiving side of one transfer: accepting, checking each chunk, acknowledging, verifying."""

    role = "receiver"

    def __init__(self, offer: Offer) -> None:
        super().__init__(offer)
        n = len(offer.files)
        self.accepted = False
        self._expected = [0] * n  # the next offset wanted per file (chunks handed out for writing)
        self._written = [0] * n
        self._confirmed = [0] * n
        self._since_ack = 0
        self._rewind_asked: dict[int, int] = {}
        self._verified = [False] * n
        self._digests: list[str | None] = [None] * n  # the sender's SHA-256 of each file, once it came
        self._verify_asked = [False] * n
        self._ack_every = max(1, offer.window // 2)
        self.start_offsets: tuple[int, ...] = (0,) * n

    @property
    def written(self) -> tuple[int, ...]:
        return tuple(self._written)

    @property
    def confirmed(self) -> tuple[int, ...]:
        """Per file, the offset up to which the sender was told the data is written (what a resume starts from)."""
        return tuple(self._confirmed)

    @property
    def bytes_done(self) -> int:
        return sum(self._written)

    @property
    def files_done(self) -> int:
        return sum(self._verified)

    def accept(self, offsets: tuple[int, ...]) -> list[Action]:
        """Accept, already having ``offsets`` bytes of each file. Each file is verified once all its bytes are
        written and its digest arrived (also one this side already had whole, and an empty one)."""
        if self.accepted or self.ended:
            return []
        files = self.offer.files
        if len(offsets) != len(files) or any(not 0 <= o <= f.size for o, f in zip(offsets, files)):
            raise ValueError(f"offsets {offsets!r} do not fit the offer")
        self.accepted = True
        self.start_offsets = tuple(offsets)
        self._expected = list(offsets)
        self._written = list(offsets)
        self._confirmed = list(offsets)
        actions: list[Action] = [SendMessage(encode_message(Accept(id=self.id, offsets=tuple(offsets))))]
        if not files:  # only folders, already created
            self.finished = True
            actions.append(Finished())
        return actions

    def decline(self, reason: str = "") -> list[Action]:
        if self.accepted or self.ended:
            return []
        said = f" ({reason})" if reason else ""
        reason = reason or NO_REASON
        self.error = TransferDeclinedError(f"You declined the files{said}.")
        return [SendMessage(encode_message(Decline(id=self.id, reason=reason))), Failed(self.error)]

    def handle(self, message: TransferMessage) -> list[Action]:
        if self.ended:
            return []
        files = self.offer.files
        match message:
            case Cancel():
                return self._on_cancel(message)
            case Chunk(file=file, offset=offset, data=data) if self.accepted:
                if file >= len(files):
                    return self._protocol(f"it sent a chunk of file {file}; the offer has {len(files)} files")
                if not 0 < len(data) <= self.offer.chunk_size:
                    return self._protocol(f"it sent a chunk of {len(data)} bytes; the offer allows 1 to "
                                          f"{self.offer.chunk_size}")
                expected = self._expected[file]
                if offset < expected:
                    return []  # a duplicate of what was already written (after a rewind)
                if offset > expected:
                    if self._rewind_asked.get(file) == expected:
                        return []
                    self._rewind_asked[file] = expected
                    return [SendMessage(encode_message(Rewind(id=self.id, file=file, offset=expected)))]
                if offset + len(data) > files[file].size:
                    return self._protocol(f"it sent bytes past the end of {files[file].path}")
                self._rewind_asked.pop(file, None)
                self._expected[file] = offset + len(data)
                return [WriteChunk(file=file, offset=offset, data=data)]
            case Digest(file=file, sha256=sha256) if self.accepted:
                if file >= len(files):
                    return self._protocol(f"it sent the SHA-256 of file {file}; the offer has {len(files)} files")
                known = self._digests[file]
                if known is not None:
                    if known != sha256:
                        return self._protocol(f"it sent two different SHA-256 for {files[file].path}")
                    return []
                self._digests[file] = sha256
                return self._maybe_verify(file)
            case Hashing(file=file, offset=offset) if self.accepted:
                if file >= len(files) or offset > files[file].size:
                    return self._protocol(f"it said it hashed file {file} up to {offset}, which does not fit the offer")
                return []  # the sender is busy, not gone
        return self._protocol(f"a {type(message).__name__} message is not expected by the receiver now")

    def chunk_written(self, write: WriteChunk) -> list[Action]:
        """The chunk of a :class:`WriteChunk` is on disk (and hashed)."""
        if self.ended:
            return []
        file = write.file
        self._written[file] = write.offset + len(write.data)
        self._since_ack += 1
        complete = self._written[file] == self.offer.files[file].size
        actions: list[Action] = []
        if complete or self._since_ack >= self._ack_every:
            actions += self._ack(file)
        if complete:
            actions += self._maybe_verify(file)
        return actions

    def _maybe_verify(self, file: int) -> list[Action]:
        """Verify ``file`` once every byte is written and its digest is here (in whichever order they came)."""
        sha256 = self._digests[file]
        if (self._verify_asked[file] or sha256 is None
                or self._written[file] != self.offer.files[file].size):
            return []
        self._verify_asked[file] = True
        return [VerifyFile(file, sha256)]

    def _ack(self, file: int) -> list[Action]:
        self._since_ack = 0
        self._confirmed[file] = self._written[file]
        return [SendMessage(encode_message(Ack(id=self.id, file=file, offset=self._written[file])))]

    def file_verified(self, file: int) -> list[Action]:
        """The file's SHA-256 matched and it has its final name."""
        if self.ended or self._verified[file]:
            return []
        self._verified[file] = True
        actions: list[Action] = [SendMessage(encode_message(Verified(id=self.id, file=file))), FileDone(file)]
        if all(self._verified):
            self.finished = True
            actions.append(Finished())
        return actions


# --- the running hash of a file -------------------------------------------------------------------------------------


class FileHasher:
    """The SHA-256 of one file being sent or received, taken strictly in order.

    Bytes come in order, except after a REWIND (bytes already hashed: skipped) and after a resume from offset N
    (the bytes before N are on disk): :meth:`gap` says which bytes must be hashed from disk before those at an
    offset, so the digest always covers the whole file. No I/O here: the caller reads, in its worker thread.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hashed = 0  # bytes [0, hashed) are in the digest
        self._digest = hashlib.sha256()

    @property
    def complete(self) -> bool:
        return self.hashed >= self.size

    def gap(self, offset: int) -> tuple[int, int] | None:
        """The bytes [start, end) to hash from disk before a chunk at ``offset``, or None when there are none."""
        return (self.hashed, offset) if offset > self.hashed else None

    def update(self, offset: int, data: bytes | memoryview) -> None:
        """Add the bytes ``data`` read at ``offset``; the part already hashed is skipped. Raises ValueError for
        bytes past a gap (hash :meth:`gap` first)."""
        if offset > self.hashed:
            raise ValueError(f"bytes at {offset} come after a gap: only {self.hashed} are hashed")
        end = offset + len(data)
        if end > self.hashed:
            self._digest.update(memoryview(data)[self.hashed - offset:])
            self.hashed = end

    def hexdigest(self) -> str:
        """The SHA-256 of the whole file (hex). Raises ValueError before every byte was hashed."""
        if not self.complete:
            raise ValueError(f"only {self.hashed} of {self.size} bytes are hashed")
        return self._digest.hexdigest()


# --- progress ---------------------------------------------------------------------------------------------------


class RateMeter:
    """Transfer rate (bytes/s over the last few seconds) and time left, from (time, bytes done) samples.

    Bytes present before the start (a resume) count as done but not towards the rate.
    """

    def __init__(self, total: int, start: float, initial: int = 0, span: float = 5.0) -> None:
        self.total = total
        self.span = span
        self._samples: deque[tuple[float, int]] = deque([(start, initial)])

    def update(self, now: float, done: int) -> tuple[float, float | None]:
        """Returns (rate in bytes per second, seconds left or None while the rate is unknown)."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.span:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        left = self.total - done
        if left <= 0:
            return rate, 0.0
        return rate, (left / rate if rate > 0 else None)


__all__ = [
    "CHUNK_HEADER_SIZE", "FINGERPRINT_BLOCK", "PROTOCOL_VERSION", "Accept", "Ack", "Action", "Cancel", "CancelKind",
    "Chunk", "Decline", "Digest", "Failed", "FileDone", "FileEntry", "FileHasher", "Finished", "ForeignOffer",
    "HashFile", "Hashing", "TransferMessage", "Offer", "OfferAssembler", "OfferPart", "RateMeter", "ReadChunk",
    "ReceiveMachine", "Rewind", "SendMessage", "SendMachine", "TransferError", "Verified", "VerifyFile", "WriteChunk",
    "decode_message", "encode_message", "encode_offer", "fingerprint", "new_transfer_id",
]
