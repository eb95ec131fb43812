"""File transfers over a :class:`~core.peer.PeerConnection`: :class:`FileTransfers`, :class:`Transfer`,
:class:`IncomingOffer`, and the file-system side (safe names, .part files, resume state, free space).

``FileTransfers(connection, download_dir=...)`` owns every ``binary`` message of the connection
(``core.files.protocol`` describes the protocol); strings stay free for chat. ``await transfers.send_files(paths)``
offers files and folders and returns a :class:`Transfer`; the other side gets an ``incoming_transfer`` event whose
offer it accepts or declines. Both sides get ``transfer_progress``, ``transfer_file_done``, ``transfer_finished``
and ``transfer_failed`` events (see ``core.events``) and can ``await transfer.wait()`` or ``await
transfer.cancel()``.

On the wire, each chunk is one ``send_bytes`` message of at most one relay frame (``max_frame_bytes``: 48 KiB,
whose base64 is the 64 KiB the relay's rules allow), on either link: a frame first written over WebRTC can be
written again over the relay after a fallback. Over WebRTC the connection sends it as one binary data-channel
message, without base64 (``core.protocol.linkframes``). On a connection that keeps call order, up to
``DEFAULT_SEND_CONCURRENCY`` chunks are handed to it at once, so the relay writes several in each database update.

Nothing is hashed before the offer: it names each file by its fingerprint (size, modification time, first and last
64 KiB: two small reads), so the first chunk leaves as soon as the offer is accepted, whatever the size. The sender
hashes each file in the same worker-thread call that reads its chunks, and sends the SHA-256 after the last one;
before that it checks that the file's size and modification time are still those it offered (a file written to
while it was sent fails integrity, on both sides).

On disk, the receiver creates ``<name>.part`` (exclusively: never over an existing file), hashes while it writes,
and renames it to ``<name>`` only when its SHA-256 matches the sender's. Once data arrived, a small record,
``.peerchat-<id>.transfer``, holds the offer id, each file's fingerprint, the offset confirmed to the sender, and
which ``.part`` file the transfer created (its device and inode). When the same files are offered again, on this
connection or a new one (same transfer id, or the same fingerprint and size), the receiver hashes what it has and
answers with those offsets, and the sender continues there (hashing [0, N) from its disk in steps of 256 MiB, each
announced by a HASHING note so the receiver's idle time-out does not fire). A record is honoured only for the
``.part`` file it names that is still the one its transfer created; received names can never be mistaken for the
receiver's own files (``.peerchat-...``, ``.part`` and ``.tmp`` names are renamed on arrival); records older than
``ManagerOptions.resume_max_age`` are swept with the partial files they created (when ``FileTransfers`` starts on a
download folder, and before each accept).

A hostile or broken sender is bounded (``ManagerOptions``): at most ``max_pending_offers`` offers being received
or waiting for an answer (one more is declined, saying why), an offer whose parts stop coming is dropped after
``offer_idle_timeout``, an accepted transfer through which nothing arrives stops after ``transfer_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyee.asyncio import AsyncIOEventEmitter

from .. import events as ev
from .._tasks import emit_safely
from ..errors import (
    DiskError,
    InsufficientSpaceError,
    IntegrityError,
    PeerchatError,
    ProtocolError,
    TransferCancelledError,
    TransferInterruptedError,
)
from ..options import ManagerOptions
from ..peer import PeerConnection
from .protocol import (
    CHUNK,
    CHUNK_HEADER_SIZE,
    DIGEST,
    FINGERPRINT_BLOCK,
    Action,
    Cancel,
    Decline,
    Failed,
    FileDone,
    MAX_WINDOW,
    FileEntry,
    FileHasher,
    Finished,
    ForeignOffer,
    HashFile,
    TransferMessage,
    Offer,
    OfferAssembler,
    OfferPart,
    RateMeter,
    ReadChunk,
    ReceiveMachine,
    SendMessage,
    SendMachine,
    VerifyFile,
    WriteChunk,
    decode_message,
    encode_message,
    encode_offer,
    fingerprint,
    new_transfer_id,
)

log = logging.getLogger(__name__)

# aiortc's SCTP transport refuses messages over 64 KiB, so a WebRTC frame is a 64 KiB binary message.
WEBRTC_FRAME_BYTES = 64 * 1024
DEFAULT_WINDOW = 32
# The data a transfer keeps in flight (read ahead or not yet acknowledged) on a direct link, whatever the chunk
# size: 32 chunks of 48 KiB (1.5 MiB) left the direct link idle between acknowledgements (about 30 against 100 MiB/s
# on loopback); 8 MiB keeps it busy and bounds memory. On slower links the chunk window stays: what is in flight
# queues ahead of chat, and WebRTC drains 8 MiB in seconds (chat round trips near 1 s against 0.3 s, measured).
DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024
# A direct link carries a message of any size (the connection splits it into frames and the receiving side joins
# their bytes without decoding anything): chunks of 1 MiB there cost a twentieth of the per-chunk work (thread
# hops, frames of the transfer protocol) of 48 KiB ones. A transfer that falls back to the relay goes on with
# chunks of one relay frame.
DIRECT_CHUNK_BYTES = 1024 * 1024
MIN_WINDOW = 4
# send_bytes calls in progress at once on a connection that numbers each message when its call starts (core's
# connections): the relay then writes several chunks per database update instead of one round trip per chunk.
DEFAULT_SEND_CONCURRENCY = 8
SIDECAR_PREFIX = ".peerchat-"
SIDECAR_SUFFIX = ".transfer"
PART_SUFFIX = ".part"
TMP_SUFFIX = ".tmp"
_OWN_SUFFIXES = (PART_SUFFIX, TMP_SUFFIX)
MAX_NAME_BYTES = 200
MAX_DEPTH = 32
_SIDECAR_INTERVAL = 0.5
_now = time.monotonic  # the clock of offer time-outs (tests replace it)
# Records say which .part file their transfer created (device and inode); older ones, without it, are not honoured.
# Version 3 keys files by fingerprint; version 2 records (keyed by SHA-256) match no offer and are only swept.
RECORD_VERSION = 3
_MAX_RECORD_BYTES = 64 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)

# --- names ------------------------------------------------------------------------------------------------------

_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789\u00b9\u00b2\u00b3"}
_FORBIDDEN = str.maketrans({c: "_" for c in '<>:"|?*'})
_INVISIBLE = {"\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
              "\u2069", "\ufeff"}


def _cut(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore")


def _not_ours(name: str) -> str:
    """``name`` renamed if it is one the receiver uses for itself: its records (``.peerchat-...``, any case) and
    its ``.part`` and ``.tmp`` files. Their first or last dot becomes ``_``, so a received file can never be taken
    for the receiver's own bookkeeping (or a received folder hold it)."""
    if name.casefold().startswith(SIDECAR_PREFIX):
        name = "_" + name[1:]
    stem, dot, ext = name.rpartition(".")
    if dot and f".{ext}".casefold() in _OWN_SUFFIXES:
        name = f"{stem}_{ext}"
    return name


def _safe_component(raw: str) -> str:
    name = "".join(c for c in raw if unicodedata.category(c) != "Cc" and c not in _INVISIBLE)
    name = name.translate(_FORBIDDEN).strip().rstrip(". ")
    if name in ("", ".", ".."):
        return ""
    if name.split(".")[0].strip().upper() in _RESERVED:
        name = "_" + name
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode()) <= 16:
            name = _cut(stem, MAX_NAME_BYTES - len(ext.encode()) - 1).rstrip(". ") + "." + ext
        else:
            name = _cut(name, MAX_NAME_BYTES).rstrip(". ")
    return _not_ours(name)


def safe_relative_path(offered: str) -> tuple[str, ...]:
    """The parts of a safe relative path for a name offered by the peer.

    Drops absolute roots, ``.`` and ``..``; treats ``/`` and ``\\`` as separators; removes control and bidi
    characters; replaces ``<>:"|?*``; strips trailing dots and spaces; prefixes reserved device names (CON, NUL,
    COM1, ... with any extension) with ``_``; cuts each part to 200 UTF-8 bytes keeping its extension; renames
    names the receiver keeps for itself (``.peerchat-...`` becomes ``_peerchat-...``, ``x.part`` and ``x.tmp``
    become ``x_part`` and ``x_tmp``). Raises :class:`ProtocolError` for paths nested deeper than 32 folders.
    """
    text = unicodedata.normalize("NFC", offered)
    parts = tuple(p for p in (_safe_component(c) for c in text.replace("\\", "/").split("/")) if p)
    if len(parts) > MAX_DEPTH:
        raise ProtocolError(f"The other device offered a file nested {len(parts)} folders deep; at most "
                            f"{MAX_DEPTH} are accepted.")
    return parts or ("unnamed",)


def _with_suffix(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def unique_target(download_dir: Path, parts: tuple[str, ...], taken: set[Path]) -> Path:
    """A path for ``parts`` under ``download_dir`` that names no existing file, .part file or ``taken`` path.

    Adds " (1)", " (2)", ... before the extension. Raises :class:`ProtocolError` if a symlinked folder would lead
    outside ``download_dir``. The chosen path is added to ``taken``.
    """
    base = download_dir.resolve()
    folder = base.joinpath(*parts[:-1])
    if not folder.resolve().is_relative_to(base):
        raise ProtocolError(f"The offered path {'/'.join(parts)!r} would be saved outside the download folder.")
    name = parts[-1]
    for n in range(100_000):
        candidate = folder / (_with_suffix(name, n) if n else name)
        part = candidate.with_name(candidate.name + PART_SUFFIX)
        if candidate not in taken and not os.path.lexists(candidate) and not os.path.lexists(part):
            taken.add(candidate)
            return candidate
    raise DiskError(f"There are too many files named like {name!r} in {folder}.")


def folder_target(download_dir: Path, offered: str) -> Path:
    """Where a folder offered by the peer is created: its name made safe like a file's (:func:`safe_relative_path`),
    under ``download_dir``. An existing folder of that name is used as it is, as it is for files sent inside a
    folder (their own names get the " (n)" suffix). Raises :class:`ProtocolError` if a symlinked folder would lead
    outside ``download_dir``."""
    base = download_dir.resolve()
    folder = base.joinpath(*safe_relative_path(offered))
    if not folder.resolve().is_relative_to(base):
        raise ProtocolError(f"The offered folder {offered!r:.200} would be created outside the download folder.")
    return folder


def _what_is(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


@dataclass
class SendTree:
    """What :func:`walk_tree` found: ``files`` (path, offered name), every ``folders`` name (empty ones included,
    parents before children) and ``skipped``, one note per entry left out and why."""

    files: list[tuple[Path, str]]
    folders: list[str]
    skipped: list[str]


def walk_tree(paths: Iterable[str | os.PathLike[str]]) -> SendTree:
    """The files and folders to send for ``paths``, walked in name order, each with its relative name
    (``folder/sub/file``) as offered.

    A path given directly may be a symbolic link to a file or folder (the user chose it). Inside a folder, symbolic
    links (to files or folders) and special files (named pipes, sockets, devices) are skipped with a note in
    ``skipped``: a link may lead outside what was chosen, and reading a named pipe would wait forever. Raises
    :class:`DiskError` for a missing path or one that is neither a regular file nor a folder.
    """
    tree = SendTree([], [], [])
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            tree.files.append((path, path.name))
        elif path.is_dir():
            root_name = path.resolve().name or "folder"

            def unreadable(exc: OSError) -> None:
                tree.skipped.append(f"{exc.filename}: could not be read ({exc.strerror or exc}), not sent.")

            for folder, dirs, names in os.walk(path, onerror=unreadable):
                rel = Path(folder).relative_to(path)
                tree.folders.append("/".join((root_name, *rel.parts)))
                for name in sorted(dirs):
                    if os.path.islink(os.path.join(folder, name)):
                        dirs.remove(name)
                        names.append(name)  # reported below, with the files
                dirs.sort()
                for name in sorted(names):
                    file = Path(folder) / name
                    try:
                        mode = file.lstat().st_mode
                    except OSError as exc:
                        tree.skipped.append(f"{file}: could not be read ({exc.strerror or exc}), not sent.")
                        continue
                    if stat.S_ISREG(mode):
                        tree.files.append((file, "/".join((root_name, *rel.parts, name))))
                    else:
                        tree.skipped.append(f"{file}: {_what_is(mode)}, not sent.")
        elif path.exists():
            raise DiskError(f"{path} is {_what_is(path.stat().st_mode)}, not a regular file or folder: only files "
                            f"and folders can be sent.")
        else:
            raise DiskError(f"{path} is missing or is not a regular file or folder.")
    for note in tree.skipped:
        log.info("skipped while sending: %s", note)
    return tree


def walk_paths(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """The files to send for ``paths``, each with its relative name as offered (:func:`walk_tree` without the
    folders and notes). Raises :class:`DiskError` for a missing path."""
    return walk_tree(paths).files


def free_space(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (tests replace this to simulate a full disk)."""
    return shutil.disk_usage(path).free


def _open_regular(path: Path) -> int:
    """A file descriptor for reading ``path``, opened without waiting (a named pipe put in place of a file would
    block ``open`` forever); raises OSError unless it is a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"it is {_what_is(mode)}, not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sha256_of(path: Path, limit: int) -> Any:
    """The running SHA-256 of the first ``limit`` bytes of ``path`` (a resumed partial file)."""
    digest = hashlib.sha256()
    left = limit
    with open(_open_regular(path), "rb") as f:
        while left > 0:
            block = f.read(min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest


def _fingerprint_of(path: Path) -> tuple[str, int, int]:
    """The file's fingerprint (:func:`core.files.protocol.fingerprint`), size and modification time (ns): one open,
    one fstat and two reads of at most 64 KiB whatever the file's size."""
    fd = _open_regular(path)
    try:
        st = os.fstat(fd)
        head = _read_at(fd, 0, FINGERPRINT_BLOCK)
        tail = _read_at(fd, max(0, st.st_size - FINGERPRINT_BLOCK), FINGERPRINT_BLOCK)
    finally:
        os.close(fd)
    return fingerprint(st.st_size, st.st_mtime_ns, head, tail), st.st_size, st.st_mtime_ns


class _Stopped(Exception):
    """The transfer ended while a worker thread was hashing: nobody wants the digest."""


class _SourceChanged(Exception):
    """The file's size or modification time is not what was offered."""


# A resumed prefix (or a whole file the receiver already has) is hashed from disk in steps of this many bytes, each
# followed by a HASHING note, so that the receiver's idle time-out never ends a transfer that is busy hashing.
_HASH_STEP = 256 * 1024 * 1024


def _hash_range(fd: int, hasher: FileHasher, end: int, stopped: Callable[[], bool]) -> None:
    """Hash the file from ``hasher.hashed`` to ``end`` from disk, 1 MiB at a time (a resumed prefix, an empty file
    or one the receiver already has whole). Raises _Stopped once ``stopped()``, _SourceChanged if the file is short."""
    while hasher.hashed < end:
        if stopped():
            raise _Stopped
        block = _read_at(fd, hasher.hashed, min(1 << 20, end - hasher.hashed))
        if not block:
            raise _SourceChanged
        hasher.update(hasher.hashed, block)


def _digest_if_complete(fd: int, hasher: FileHasher, stamp: tuple[int, int]) -> str | None:
    """The file's SHA-256 once every byte is hashed, after checking that its size and modification time are still
    ``stamp``: the digest must be of the file that was offered, not of one written to meanwhile."""
    if not hasher.complete:
        return None
    st = os.fstat(fd)
    if (st.st_size, st.st_mtime_ns) != stamp:
        raise _SourceChanged
    return hasher.hexdigest()


def _read_and_hash(fd: int, hasher: FileHasher, stamp: tuple[int, int], offset: int, size: int,
                   stopped: Callable[[], bool]) -> tuple[bytes, str | None]:
    """ONE worker-thread call per chunk: read ``size`` bytes at ``offset``, add them to the file's running hash
    (after hashing any bytes before them not hashed yet: a resume's prefix) and return them with the file's SHA-256
    if that completed it."""
    gap = hasher.gap(offset)
    if gap is not None:
        _hash_range(fd, hasher, gap[1], stopped)
    data = _read_at(fd, offset, size)
    if len(data) != size:
        return data, None  # the file shrank: the machine fails the transfer
    hasher.update(offset, data)
    return data, _digest_if_complete(fd, hasher, stamp)


def _hash_whole(fd: int, hasher: FileHasher, stamp: tuple[int, int], stopped: Callable[[], bool]) -> str:
    _hash_range(fd, hasher, hasher.size, stopped)
    digest = _digest_if_complete(fd, hasher, stamp)
    assert digest is not None
    return digest


def _disk_error(action: str, path: Path | str, exc: OSError) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"The disk is full while {action} {path}. Free some space and send the files again.")
    verb = {"reading": "read", "writing": "write", "preparing": "prepare", "saving": "save"}.get(action, action)
    return DiskError(f"Could not {verb} {path}: {exc.strerror or exc}.")


def max_frame_bytes(connection: PeerConnection, options: ManagerOptions) -> int:
    """The largest ``send_bytes`` message the connection accepts now.

    A connection states it as :attr:`~core.peer.PeerConnection.max_bytes_message`. When it does not (None), one
    relay frame's worth applies whatever the transport: ``options.relay_frame_bytes`` characters of base64, so
    three quarters of that in bytes (never more than a whole message may hold, ``options.max_message_bytes``).
    """
    limit = connection.max_bytes_message
    if limit is not None and limit > CHUNK_HEADER_SIZE:
        return limit
    return min(WEBRTC_FRAME_BYTES, options.relay_frame_bytes // 4 * 3, options.max_message_bytes)


def max_chunk_payload(connection: PeerConnection, options: ManagerOptions) -> int:
    """The largest chunk of file data that fits one frame on the connection now."""
    return max_frame_bytes(connection, options) - CHUNK_HEADER_SIZE


# --- event payloads (names in core.events) -----------------------------------------------------------------------

TransferDirection = Literal["send", "receive"]


@dataclass(frozen=True)
class IncomingTransfer:
    """The peer offers files. ``offer.accept(download_dir)`` or ``offer.decline(reason)``; if this side already has
    part of them from an interrupted transfer and resumes by itself, ``offer.transfer`` is already running."""

    offer: IncomingOffer


@dataclass(frozen=True)
class TransferProgress:
    """``bytes_done`` of ``bytes_total`` (confirmed by the receiver when sending); ``rate`` in bytes per second over
    the last seconds; ``eta`` in seconds, or None while the rate is unknown."""

    transfer: Transfer
    direction: TransferDirection
    bytes_done: int
    bytes_total: int
    rate: float
    eta: float | None
    files_done: int
    files_total: int


@dataclass(frozen=True)
class TransferFileDone:
    """File ``path`` (as offered, relative) arrived intact; ``saved_to`` is where the receiver stored it."""

    transfer: Transfer
    direction: TransferDirection
    path: str
    saved_to: str | None


@dataclass(frozen=True)
class TransferFinished:
    transfer: Transfer
    direction: TransferDirection
    bytes_total: int


@dataclass(frozen=True)
class TransferFailed:
    """``error`` is a TransferError (declined, cancelled, integrity, space, disk, interrupted) or a ProtocolError."""

    transfer: Transfer
    direction: TransferDirection
    error: BaseException


# --- sending queue ----------------------------------------------------------------------------------------------


class _Outbox:
    """Frames waiting for ``send_bytes``: control frames first, then one chunk per transfer in turn (fairness)."""

    def __init__(self) -> None:
        self._control: deque[tuple[str, bytes]] = deque()
        self._chunks: dict[str, deque[bytes]] = {}
        self._turn: deque[str] = deque()
        self._ready = asyncio.Event()

    def control(self, transfer_id: str, frame: bytes) -> None:
        self._control.append((transfer_id, frame))
        self._ready.set()

    def chunk(self, transfer_id: str, frame: bytes) -> None:
        if transfer_id not in self._chunks:
            self._chunks[transfer_id] = deque()
            self._turn.append(transfer_id)
        self._chunks[transfer_id].append(frame)
        self._ready.set()

    def drop(self, transfer_id: str) -> None:
        self._chunks.pop(transfer_id, None)
        if transfer_id in self._turn:
            self._turn.remove(transfer_id)

    async def get(self) -> tuple[str, bytes]:
        while True:
            if self._control:
                return self._control.popleft()
            while self._turn:
                tid = self._turn.popleft()
                queue = self._chunks[tid]
                frame = queue.popleft()
                if queue:
                    self._turn.append(tid)
                else:
                    del self._chunks[tid]
                return tid, frame
            self._ready.clear()
            await self._ready.wait()


# --- transfers --------------------------------------------------------------------------------------------------


class TransferState(enum.Enum):
    OFFERED = "offered"
    ACTIVE = "active"
    FINISHED = "finished"
    FAILED = "failed"


_WAKE = object()


class _PartFile:
    """A file being received, written and hashed off the event loop: ONE thread hop per chunk (``write`` and the
    SHA-256 update together; hashlib releases the GIL for large data, so the loop keeps running). ``flush`` and
    ``close`` are awaited like aiofiles'."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def write_and_hash(self, data: bytes | memoryview, digest: Any) -> None:
        await asyncio.to_thread(_write_and_hash, self._file, data, digest)

    async def flush(self) -> None:
        await asyncio.to_thread(self._file.flush)

    async def close(self) -> None:
        await asyncio.to_thread(self._file.close)


def _write_and_hash(file: Any, data: bytes | memoryview, digest: Any) -> None:
    file.write(data)
    digest.update(data)


def _read_at(fd: int, offset: int, size: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: no pread
    return os.read(fd, size)


class _SourceFile:
    """A file being sent: each chunk read at its offset and hashed with ONE thread hop (``os.pread``, no seek)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def read(self, offset: int, size: int) -> bytes:
        return await asyncio.to_thread(_read_at, self._fd, offset, size)

    async def read_and_hash(self, hasher: FileHasher, stamp: tuple[int, int], offset: int, size: int,
                            stopped: Callable[[], bool]) -> tuple[bytes, str | None]:
        return await asyncio.to_thread(_read_and_hash, self._fd, hasher, stamp, offset, size, stopped)

    async def hash_up_to(self, hasher: FileHasher, end: int, stopped: Callable[[], bool]) -> None:
        await asyncio.to_thread(_hash_range, self._fd, hasher, end, stopped)

    async def hash_to_end(self, hasher: FileHasher, stamp: tuple[int, int], stopped: Callable[[], bool]) -> str:
        return await asyncio.to_thread(_hash_whole, self._fd, hasher, stamp, stopped)

    async def close(self) -> None:
        os.close(self._fd)


@dataclass
class _Incoming:
    """The receiver's side of one file: where it goes and how far it is."""

    target: Path
    part: Path
    digest: Any = None
    handle: Any = None
    # (device, inode) of the .part file this transfer created (or adopted from its own record); None until then.
    identity: tuple[int, int] | None = None


class Transfer:
    """One transfer (a set of files) seen from this side: ``direction`` is "send" or "receive".

    ``await wait()`` returns when every file arrived intact, or raises the transfer's error; ``await cancel()``
    stops it on both sides.
    """

    def __init__(self, owner: FileTransfers, machine: SendMachine | ReceiveMachine,
                 sources: list[Path] | None = None) -> None:
        self._owner = owner
        self._machine = machine
        self.id = machine.id
        self.offer = machine.offer
        self.direction: TransferDirection = "send" if isinstance(machine, SendMachine) else "receive"
        self.state = TransferState.OFFERED
        self.error: PeerchatError | None = None
        self.saved_to: list[Path | None] = [None] * len(self.offer.files)
        self.folders_created: list[Path] = []  # the receiver's folders for ``offer.folders``, once accepted
        self.skipped: tuple[str, ...] = ()  # the sender's notes on what it left out (symbolic links, named pipes)
        self.bytes_sent = 0  # file bytes handed to the connection in chunks by this side (0 when receiving)
        self._sources = sources or []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done.add_done_callback(lambda f: f.exception())  # failures need not be awaited
        self._task: asyncio.Task[None] | None = None
        self._meter: RateMeter | None = None
        self._last_progress = 0.0
        self._last_bytes = -1

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.offer.files

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders offered (relative names), empty ones included."""
        return self.offer.folders

    @property
    def bytes_total(self) -> int:
        return self.offer.total_bytes

    @property
    def bytes_done(self) -> int:
        return self._machine.bytes_done

    @property
    def resumed_bytes(self) -> int:
        """Bytes the receiver already had when this transfer started (not sent again)."""
        return sum(self._machine.start_offsets)

    async def wait(self) -> None:
        await asyncio.shield(self._done)

    async def cancel(self) -> None:
        """Cancel on both sides (does nothing once it ended)."""
        self._apply_sync(self._machine.cancel())

    def __repr__(self) -> str:
        return f"<Transfer {self.id[:8]} {self.direction} {self.state.value} {self.bytes_done}/{self.bytes_total}>"

    # -- actions that need no I/O

    def _apply_sync(self, actions: list[Action]) -> None:
        for action in actions:
            self._apply_one_sync(action)

    def _apply_one_sync(self, action: Action) -> None:
        match action:
            case SendMessage(data=data):
                if data[0] in (CHUNK, DIGEST):  # a file's digest queues behind its chunks
                    self._owner._outbox.chunk(self.id, data)
                else:
                    self._owner._outbox.control(self.id, data)
            case FileDone(file=file):
                saved = self.saved_to[file]
                self._owner._emit(ev.TRANSFER_FILE_DONE, TransferFileDone(
                    self, self.direction, self.offer.files[file].path, str(saved) if saved else None))
                self._progress(force=True)
            case Finished():
                self.state = TransferState.FINISHED
                self._progress(force=True)
                self._owner._ended(self)
                if not self._done.done():
                    self._done.set_result(None)
                self._inbox.put_nowait(_WAKE)
                self._owner._emit(ev.TRANSFER_FINISHED, TransferFinished(self, self.direction, self.bytes_total))
            case Failed(error=error):
                self.state = TransferState.FAILED
                self.error = error
                self._owner._outbox.drop(self.id)
                self._owner._ended(self)
                if not self._done.done():
                    self._done.set_exception(error)
                self._inbox.put_nowait(_WAKE)
                self._owner._emit(ev.TRANSFER_FAILED, TransferFailed(self, self.direction, error))
            case _:
                raise AssertionError(f"{action!r} needs I/O")

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        done = self.bytes_done
        if self._meter is None:
            self._meter = RateMeter(self.bytes_total, now, done)
        if not force and (done == self._last_bytes or now - self._last_progress < self._owner.progress_interval):
            return
        rate, eta = self._meter.update(now, done)
        self._last_progress, self._last_bytes = now, done
        self._owner._emit(ev.TRANSFER_PROGRESS, TransferProgress(
            self, self.direction, done, self.bytes_total, rate, eta, self._machine.files_done,
            len(self.offer.files)))


class _Sending(Transfer):
    _machine: SendMachine

    def __init__(self, owner: FileTransfers, machine: SendMachine, sources: list[Path],
                 stamps: list[tuple[int, int]]) -> None:
        super().__init__(owner, machine, sources)
        self._stamps = stamps  # (size, modification time in ns) of each file when it was offered
        # The running hash of each file being read, made on its first read and dropped with its digest (an offer may
        # hold a million files); a file read again after a rewind, once its digest was sent, is not hashed again.
        self._hashers: dict[int, FileHasher] = {}
        self._digested: set[int] = set()
        self._to_hash: deque[int] = deque()  # files to hash whole (HashFile)

    def _hasher(self, file: int) -> FileHasher:
        hasher = self._hashers.get(file)
        if hasher is None:
            hasher = self._hashers[file] = FileHasher(self.offer.files[file].size)
        return hasher

    def _digest_taken(self, file: int) -> None:
        self._hashers.pop(file, None)
        self._digested.add(file)

    def _stopped(self) -> bool:
        """Whether the transfer ended (read from the worker threads that hash, to stop early)."""
        return self._machine.ended

    def _apply_sending(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, HashFile):
                self._to_hash.append(action.file)
            else:
                self._apply_one_sync(action)

    async def _run(self) -> None:
        handles: dict[int, Any] = {}
        try:
            while not self._machine.ended:
                while self._to_hash and not self._machine.ended:
                    await self._hash_whole(self._to_hash.popleft())
                for read in self._machine.next_reads(self._owner._max_chunk()):
                    result = await self._read(handles, read)
                    if result is None:
                        break
                    data, digest = result
                    self._apply_sync(self._machine.chunk_read(read, data))
                    if digest is not None and read.file not in self._digested:
                        self._digest_taken(read.file)
                        self._apply_sync(self._machine.file_hashed(read.file, digest))
                if self._machine.ended:
                    break
                message = await self._inbox.get()
                if message is not _WAKE:
                    self._apply_sending(self._machine.handle(message))
                    if self.state is TransferState.OFFERED and self._machine.accepted:
                        self.state = TransferState.ACTIVE
                        self._meter = RateMeter(self.bytes_total, time.monotonic(), self.bytes_done)
                    self._progress()
        finally:
            for handle in handles.values():
                await handle.close()

    def _changed(self, file: int) -> None:
        self._apply_sync(self._machine.fail(IntegrityError(
            f"{self.offer.files[file].path} changed while it was being sent (its size or modification time is not "
            f"what was offered). Send it again.")))

    async def _read(self, handles: dict[int, Any], read: ReadChunk) -> tuple[bytes, str | None] | None:
        path = self._sources[read.file]
        try:
            handle = handles.get(read.file)
            if handle is None:
                handle = handles[read.file] = _SourceFile(await asyncio.to_thread(_open_regular, path))
            if read.file in self._digested:  # read again after a rewind: its digest was sent already
                result = (await handle.read(read.offset, read.size), None)
            else:
                await self._hash_gap(handle, read.file, read.offset)
                result = await handle.read_and_hash(self._hasher(read.file), self._stamps[read.file], read.offset,
                                                    read.size, self._stopped)
            if read.offset + read.size >= self.offer.files[read.file].size:
                await handles.pop(read.file).close()
            return result
        except _Stopped:
            return None
        except _SourceChanged:
            self._changed(read.file)
            return None
        except OSError as exc:
            self._apply_sync(self._machine.fail(_disk_error("reading", path, exc)))
            return None

    async def _hash_gap(self, handle: _SourceFile, file: int, end: int) -> None:
        """Hash file ``file`` from disk up to ``end`` (a resumed prefix) in steps, telling the receiver after each."""
        hasher = self._hasher(file)
        while end - hasher.hashed > _HASH_STEP and not self._machine.ended:
            await handle.hash_up_to(hasher, hasher.hashed + _HASH_STEP, self._stopped)
            self._apply_sync(self._machine.hashing(file, hasher.hashed))

    async def _hash_whole(self, file: int) -> None:
        """The digest of a file with nothing left to send: empty, or the receiver has all of it (a resume)."""
        path = self._sources[file]
        try:
            handle = _SourceFile(await asyncio.to_thread(_open_regular, path))
            try:
                await self._hash_gap(handle, file, self.offer.files[file].size)
                digest = await handle.hash_to_end(self._hasher(file), self._stamps[file], self._stopped)
            finally:
                await handle.close()
        except _Stopped:
            return
        except _SourceChanged:
            self._changed(file)
            return
        except OSError as exc:
            self._apply_sync(self._machine.fail(_disk_error("reading", path, exc)))
            return
        self._digest_taken(file)
        self._apply_sync(self._machine.file_hashed(file, digest))


class _Receiving(Transfer):
    _machine: ReceiveMachine

    def __init__(self, owner: FileTransfers, machine: ReceiveMachine) -> None:
        super().__init__(owner, machine)
        self._pending: deque[Action] = deque()
        self.download_dir: Path | None = None
        self._files: list[_Incoming] = []
        self._sidecar: Path | None = None
        self._sidecar_written = 0.0

    async def _accept(self, download_dir: Path) -> None:
        download_dir = Path(download_dir)
        try:
            download_dir.mkdir(parents=True, exist_ok=True)
            plan = await asyncio.to_thread(_plan_receive, download_dir, self.offer, self._owner.options.resume_max_age)
        except OSError as exc:
            error = _disk_error("preparing", download_dir, exc)
            self._apply_sync(self._machine.fail(error))
            raise error from exc
        except (ProtocolError, InsufficientSpaceError, DiskError) as exc:
            self._apply_sync(self._machine.fail(exc))
            raise
        files, offsets, digests, folders, identities = plan
        self.download_dir = download_dir
        self.folders_created = folders
        self._files = [_Incoming(target, part, digest, identity=identity)
                       for (target, part), digest, identity in zip(files, digests, identities)]
        self._sidecar = download_dir / f"{SIDECAR_PREFIX}{self.id}{SIDECAR_SUFFIX}"
        self.state = TransferState.ACTIVE
        actions = self._machine.accept(tuple(offsets))
        await self._write_sidecar(force=True)
        self._meter = RateMeter(self.bytes_total, time.monotonic(), self.bytes_done)
        self._pending.extend(actions)
        self._inbox.put_nowait(_WAKE)

    async def _run(self) -> None:
        try:
            while not self._machine.ended or self._pending:
                while self._pending:
                    await self._apply(self._pending.popleft())
                if self._machine.ended:
                    break
                message = await self._next_message()
                if message is not _WAKE:
                    self._pending.extend(self._machine.handle(message))
        finally:
            await self._close_files()
            await self._clean_up()

    async def _next_message(self) -> Any:
        """The next message; once accepted, at most ``transfer_idle_timeout`` is waited for it, then the transfer
        stops as interrupted (a peer that accepted nothing more must not hold it, and its files, forever)."""
        if not self._machine.accepted:
            return await self._inbox.get()  # a person answers the offer: no time limit
        idle = self._owner.options.transfer_idle_timeout
        try:
            async with asyncio.timeout(idle):
                return await self._inbox.get()
        except TimeoutError:
            self._pending.extend(self._machine.fail(TransferInterruptedError(
                f"Nothing arrived for {idle:g} s: the transfer stopped. Send the files again to continue where it "
                f"stopped.")))
            return _WAKE

    async def _apply(self, action: Action) -> None:
        match action:
            case WriteChunk() | VerifyFile() if self._machine.ended:
                pass
            case WriteChunk():
                await self._write(action)
            case VerifyFile(file=file, sha256=sha256):
                await self._verify(file, sha256)
            case _:
                self._apply_one_sync(action)

    async def _write(self, write: WriteChunk) -> None:
        incoming = self._files[write.file]
        try:
            if incoming.handle is None:
                fd, incoming.identity = await asyncio.to_thread(_open_part, incoming.part, incoming.identity,
                                                                 write.offset)
                incoming.handle = _PartFile(os.fdopen(fd, "wb"))
            await incoming.handle.write_and_hash(write.data, incoming.digest)
        except OSError as exc:
            self._pending.extend(self._machine.fail(_disk_error("writing", incoming.part, exc)))
            return
        actions = self._machine.chunk_written(write)
        self._pending.extend(actions)
        if any(isinstance(a, SendMessage) for a in actions):
            await self._write_sidecar(force=any(isinstance(a, VerifyFile) for a in actions))
        self._progress()

    async def _verify(self, file: int, sha256: str) -> None:
        incoming = self._files[file]
        entry = self.offer.files[file]
        try:
            if incoming.handle is not None:
                await incoming.handle.close()
                incoming.handle = None
            if incoming.identity is None:  # an empty file: nothing was written
                incoming.part.parent.mkdir(parents=True, exist_ok=True)
                fd, incoming.identity = await asyncio.to_thread(_open_part, incoming.part, None, 0)
                os.close(fd)
            if incoming.digest.hexdigest() != sha256:
                await asyncio.to_thread(_remove_own_part, incoming.part, incoming.identity)
                self._pending.extend(self._machine.fail(IntegrityError(
                    f"{entry.path} arrived damaged (its SHA-256 did not match the sender's): the partial data was "
                    f"deleted. Send it again.")))
                return
            target = await asyncio.to_thread(_claim, incoming.part, incoming.target, self.download_dir)
        except OSError as exc:
            self._pending.extend(self._machine.fail(_disk_error("saving", incoming.target, exc)))
            return
        self.saved_to[file] = target
        self._pending.extend(self._machine.file_verified(file))
        await self._write_sidecar(force=True)

    async def _close_files(self) -> None:
        for incoming in self._files:
            if incoming.handle is not None:
                try:
                    await incoming.handle.close()
                except OSError:
                    pass
                incoming.handle = None

    async def _clean_up(self) -> None:
        """Keep what a resume needs after an interruption or a disk error; delete partial data otherwise."""
        if self._sidecar is None:
            return
        keep = isinstance(self.error, TransferInterruptedError | DiskError) and not isinstance(
            self.error, InsufficientSpaceError)
        try:
            if keep:  # the files are closed, so everything written is on disk: resume from there
                if await self._write_sidecar(force=True, offsets=self._machine.written) or self._sidecar.exists():
                    return  # (an earlier record, with smaller offsets, still serves if this one failed)
            # Without a record nothing could resume the partial files: they go too.
            if not self._machine.finished:
                for file, incoming in enumerate(self._files):
                    if self.saved_to[file] is None:
                        await asyncio.to_thread(_remove_own_part, incoming.part, incoming.identity)
            self._sidecar.unlink(missing_ok=True)
        except OSError:
            pass

    async def _write_sidecar(self, *, force: bool = False, offsets: tuple[int, ...] | None = None) -> bool:
        """Record the offsets a resume may start from (by default those confirmed to the sender, after a flush).
        False if the record could not be written."""
        now = time.monotonic()
        if self._sidecar is None or (not force and now - self._sidecar_written < _SIDECAR_INTERVAL):
            return True
        self._sidecar_written = now
        for incoming in self._files:
            if incoming.handle is not None:
                await incoming.handle.flush()
        # Only files whose .part this transfer created are recorded, each with that file's identity: nothing is
        # written before data arrives, and a record can never point at a file this transfer did not create.
        items = []
        for f, i, confirmed, saved in zip(self.offer.files, self._files, offsets or self._machine.confirmed,
                                          self.saved_to):
            if saved is None and i.identity is None:
                continue
            item = {"path": f.path, "size": f.size, "fingerprint": f.fingerprint, "confirmed": confirmed,
                    "part": os.path.relpath(i.part, self.download_dir),
                    "target": os.path.relpath(i.target, self.download_dir), "done": saved is not None}
            if saved is None:
                item["part_id"] = list(i.identity)
            items.append(item)
        if not any(not item["done"] for item in items):
            return True
        state = {"v": RECORD_VERSION, "id": self.id, "files": items}
        try:
            await asyncio.to_thread(_write_json, self._sidecar, state)
        except OSError:
            return False  # without a record the transfer works; only a later resume starts from zero
        return True


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _write_record_bytes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_json(path: Path, state: dict) -> None:
    """Write a record whole (a temporary file renamed over it); on any failure the temporary file is removed."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _BINARY, 0o600)
        try:
            _write_record_bytes(fd, json.dumps(state).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def _open_part(part: Path, identity: tuple[int, int] | None, offset: int) -> tuple[int, tuple[int, int]]:
    """A file descriptor to write ``part`` from ``offset``, and the file's (device, inode).

    Without an ``identity`` the file is created, and must not exist (``FileExistsError`` otherwise: whatever is
    there is left alone). With one, it is reopened only if it is still that regular file (never through a
    symbolic link), and cut back to ``offset``.
    """
    if identity is None:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o666)
    else:
        fd = os.open(part, os.O_WRONLY | _NOFOLLOW | _BINARY)
    try:
        st = os.fstat(fd)
        if identity is not None and not _is_own_part(st, identity):
            raise OSError(errno.EEXIST, "it is no longer the partial file this transfer created", str(part))
        if identity is not None:
            os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd, (st.st_dev, st.st_ino)


def _is_own_part(st: os.stat_result, identity: tuple[int, int]) -> bool:
    """Whether ``st`` is the partial file with ``identity``: a regular file with that device and inode, and no
    other name (a finished file was linked to its final name, which a partial file never is)."""
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == tuple(identity) and st.st_nlink == 1


def _remove_own_part(part: Path, identity: tuple[int, int] | None) -> None:
    """Delete ``part`` if it is the partial file with ``identity``; anything else there is left alone."""
    if identity is None:
        return
    try:
        if _is_own_part(os.lstat(part), identity):
            part.unlink()
    except OSError:
        pass


def _claim(part: Path, target: Path, download_dir: Path | None) -> Path:
    """Rename ``part`` to ``target``, or to a free " (n)" name if something appeared there meanwhile."""
    while True:
        try:
            os.link(part, target)  # fails if target exists: never overwrite
        except FileExistsError:
            parts = target.relative_to(download_dir.resolve()).parts if download_dir else (target.name,)
            target = unique_target(download_dir or target.parent, parts, set())
            continue
        except OSError:
            if target.exists():
                target = unique_target(download_dir or target.parent, (target.name,), set())
                continue
            os.replace(part, target)
            return target
        part.unlink()
        return target


def _read_record(path: Path) -> dict | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            state = json.loads(f.read(_MAX_RECORD_BYTES))
    except (OSError, ValueError):
        return None
    if isinstance(state, dict) and isinstance(state.get("files"), list):
        return state
    return None


def _load_sidecars(download_dir: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in download_dir.glob(f"{SIDECAR_PREFIX}*{SIDECAR_SUFFIX}"):
        state = _read_record(path)
        if state is not None:
            found.append((path, state))
    return found


def _own_part(download_dir: Path, item: object) -> tuple[Path, os.stat_result, tuple[int, int], int] | None:
    """The partial file a record's ``item`` names, if it is still the one its transfer created: (path, its stat,
    its identity, the confirmed offset). None for anything else: an item without identity (written by an older
    version), a path outside ``download_dir`` or not ending in ``.part``, a symbolic link, another file."""
    if not isinstance(item, dict) or item.get("done"):
        return None
    identity, rel, confirmed = item.get("part_id"), item.get("part"), item.get("confirmed")
    if not (isinstance(identity, list) and len(identity) == 2 and all(type(n) is int for n in identity)
            and isinstance(rel, str) and type(confirmed) is int and confirmed >= 0):
        return None
    relative = Path(rel)
    if relative.is_absolute() or ".." in relative.parts or not relative.name.endswith(PART_SUFFIX):
        return None
    try:
        folder = (download_dir / relative).parent.resolve()
        if not folder.is_relative_to(download_dir.resolve()):
            return None
        part = folder / relative.name
        st = os.lstat(part)
    except OSError:
        return None
    if not _is_own_part(st, (identity[0], identity[1])):
        return None
    return part, st, (identity[0], identity[1]), confirmed


def _has_resumable_record(download_dir: Path, transfer_id: str, max_age: float) -> bool:
    """Whether ``download_dir`` holds this transfer's record, younger than ``max_age`` seconds, with at least one
    partial file it created."""
    record = download_dir / f"{SIDECAR_PREFIX}{transfer_id}{SIDECAR_SUFFIX}"
    try:
        if os.lstat(record).st_mtime < time.time() - max_age:
            return False
    except OSError:
        return False
    state = _read_record(record)
    return state is not None and state.get("id") == transfer_id and any(
        _own_part(download_dir, item) is not None for item in state["files"])


def sweep_stale_records(download_dir: Path, max_age: float, now: float | None = None) -> None:
    """Delete this side's records older than ``max_age`` seconds (by modification time), the partial files they
    created, and leftover temporary records. Files the records do not prove to be theirs are left alone."""
    cutoff = (time.time() if now is None else now) - max_age
    try:
        paths = list(download_dir.glob(f"{SIDECAR_PREFIX}*"))
    except OSError:
        return
    for path in paths:
        if not path.name.endswith((SIDECAR_SUFFIX, SIDECAR_SUFFIX + TMP_SUFFIX)):
            continue
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                continue
            state = _read_record(path) if path.name.endswith(SIDECAR_SUFFIX) else None
            for item in state["files"] if state else ():
                own = _own_part(download_dir, item)
                if own is not None:
                    _remove_own_part(own[0], own[2])
            path.unlink()
        except OSError:
            continue


def _plan_receive(download_dir: Path, offer: Offer, resume_max_age: float | None = None
                  ) -> tuple[list[tuple[Path, Path]], list[int], list[Any], list[Path], list[tuple[int, int] | None]]:
    """Where each offered file goes, how much of it is already here (resume) and its hash so far; the offered
    folders, created; the identity of each partial file reused (None for a new one).

    Records older than ``resume_max_age`` are swept first (:func:`sweep_stale_records`). Partial files are found
    through records: the same transfer id first, then any with the same fingerprint and size; a record is honoured
    only for the partial file its transfer created (same device and inode, a regular file with one name). Raises
    InsufficientSpaceError (before touching anything) if the rest of the files does not fit. A reused partial
    file is cut back to its confirmed offset and hashed again.
    """
    base = download_dir.resolve()
    if resume_max_age is not None:
        sweep_stale_records(download_dir, resume_max_age)
    sidecars = _load_sidecars(download_dir)
    sidecars.sort(key=lambda item: item[1].get("id") != offer.id)
    candidates: dict[tuple[Any, Any], list[tuple[Path, dict, dict]]] = {}
    for path, state in sidecars:
        for item in state["files"]:
            if isinstance(item, dict) and not item.get("done"):
                candidates.setdefault((item.get("fingerprint"), item.get("size")), []).append((path, state, item))
    taken: set[Path] = set()
    plan: list[tuple[Path, Path, int]] = []
    identities: list[tuple[int, int] | None] = []
    adopted: dict[Path, tuple[dict, list[dict]]] = {}
    for entry in offer.files:
        found = None
        identity = None
        for candidate in candidates.get((entry.fingerprint, entry.size), []):
            sidecar, state, item = candidate
            own = _own_part(download_dir, item)
            target_name = item.get("target")
            if own is None or not isinstance(target_name, str):
                continue
            part, st, identity, confirmed = own
            target = (download_dir / target_name).resolve()
            if (target.with_name(target.name + PART_SUFFIX) == part and target not in taken
                    and not os.path.lexists(target) and confirmed <= entry.size):
                found = (target, part, min(confirmed, st.st_size))
                taken.add(target)
                adopted.setdefault(sidecar, (state, []))[1].append(item)
                candidates[(entry.fingerprint, entry.size)].remove(candidate)
                break
            identity = None
        if found is None:
            target = unique_target(download_dir, safe_relative_path(entry.path), taken)
            found = (target, target.with_name(target.name + PART_SUFFIX), 0)
        plan.append(found)
        identities.append(identity)
    folders = list(dict.fromkeys(folder_target(download_dir, name) for name in offer.folders))
    for folder in folders:
        for step in (folder, *folder.parents):
            if step == base:
                break
            if os.path.lexists(step) and not step.is_dir():
                raise DiskError(f"The folder {folder} cannot be created: a file named {step.name!r} is already "
                                f"there. Move it or choose another download folder.")
    needed = sum(e.size - offset for e, (_, _, offset) in zip(offer.files, plan))
    free = free_space(download_dir)
    if needed > free:
        raise InsufficientSpaceError(
            f"The files need {_size(needed)} but {download_dir} has only {_size(free)} free. Free some space or "
            f"choose another folder.")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    digests = []
    for (target, part, offset), identity in zip(plan, identities):
        target.parent.mkdir(parents=True, exist_ok=True)
        if identity is not None:
            fd, _ = _open_part(part, identity, offset)  # raises unless it is still the file the record created
            os.close(fd)
            digests.append(_sha256_of(part, offset))
        else:
            digests.append(hashlib.sha256())
    # Partial files adopted from another transfer's sidecar now belong to this one.
    for sidecar, (state, items) in adopted.items():
        if state.get("id") == offer.id:
            continue
        rest = [item for item in state["files"] if all(item is not a for a in items)]
        if any(not item.get("done") for item in rest):
            _write_json(sidecar, {**state, "files": rest})
        else:
            sidecar.unlink(missing_ok=True)
    return [(t, p) for t, p, _ in plan], [o for _, _, o in plan], digests, folders, identities


class IncomingOffer:
    """Files the peer offers: ``files`` (relative names, sizes, fingerprints), ``folders`` (to create, even empty),
    ``total_bytes``.

    ``await accept(download_dir)`` returns the running :class:`Transfer` (resuming whatever part of these files is
    already in that folder), or raises InsufficientSpaceError / DiskError; ``await decline(reason)`` refuses them.
    """

    def __init__(self, transfer: _Receiving) -> None:
        self._transfer = transfer
        self.id = transfer.id
        self.files = transfer.offer.files
        self.folders = transfer.offer.folders
        self.total_bytes = transfer.offer.total_bytes
        self._accepting = asyncio.Lock()

    @property
    def transfer(self) -> Transfer | None:
        """The transfer once accepted, else None."""
        return self._transfer if self._transfer._machine.accepted else None

    async def accept(self, download_dir: str | os.PathLike[str] | None = None) -> Transfer:
        folder = download_dir if download_dir is not None else self._transfer._owner.download_dir
        if folder is None:
            raise ValueError("accept() needs a download folder (or FileTransfers(download_dir=...)).")
        async with self._accepting:
            if self._transfer._machine.ended:
                raise self._transfer.error or TransferCancelledError("This offer is no longer valid.")
            if not self._transfer._machine.accepted:
                await self._transfer._accept(Path(folder))
        return self._transfer

    async def decline(self, reason: str = "") -> None:
        self._transfer._apply_sync(self._transfer._machine.decline(reason))


class FileTransfers:
    """Sends and receives files over one connection, alongside chat. Use it as ``async with`` or call ``close()``.

    Args:
        connection: any PeerConnection; this object owns its ``binary`` frames from now on.
        download_dir: the default folder for accepted files; if set, an offer that continues an interrupted
            transfer into it (same id, partial data there) is accepted by itself (``offer.transfer`` is set).
        options: for the relay's message size limit.
        chunk_size: the largest chunk offered (default: what a WebRTC frame carries, or ``DIRECT_CHUNK_BYTES`` when
            a direct link carries the connection); each chunk sent is also limited by the link that carries it at
            that moment.
        window: chunks in flight per transfer (read ahead or not yet acknowledged); None: ``DEFAULT_WINDOW``, or on a
            connection carried by a direct link as many chunks as fit ``window_bytes`` (at least ``MIN_WINDOW``).
        window_bytes: the bytes in flight per transfer offered over a direct link, when ``window`` is None.
        progress_interval: at most one progress event per transfer per this many seconds (plus one at the end).
        send_concurrency: ``send_bytes`` calls in progress at once. The connection must keep the order in which
            calls start (core's relay connection numbers a message when its call starts, on either link).
            1 sends strictly one frame after another. Default: ``DEFAULT_SEND_CONCURRENCY`` on a connection that
            declares :attr:`~core.peer.PeerConnection.keeps_call_order`, 1 on any other.
    """

    def __init__(self, connection: PeerConnection, *, download_dir: str | os.PathLike[str] | None = None,
                 options: ManagerOptions | None = None, chunk_size: int | None = None, window: int | None = None,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, progress_interval: float = 0.25,
                 send_concurrency: int | None = None) -> None:
        self.connection = connection
        self.download_dir = Path(download_dir) if download_dir is not None else None
        self.options = options or ManagerOptions()
        self.chunk_size = chunk_size or WEBRTC_FRAME_BYTES - CHUNK_HEADER_SIZE
        self._chunk_size_given = chunk_size is not None
        if window is not None and not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1 to {MAX_WINDOW} chunks, not {window}")
        if window_bytes < 1:
            raise ValueError(f"window_bytes must be at least 1, not {window_bytes}")
        self.window = window
        self.window_bytes = window_bytes
        self.progress_interval = progress_interval
        if send_concurrency is None:
            send_concurrency = DEFAULT_SEND_CONCURRENCY if connection.keeps_call_order else 1
        if send_concurrency < 1:
            raise ValueError(f"send_concurrency must be at least 1, not {send_concurrency}")
        self.send_concurrency = send_concurrency
        self.events = AsyncIOEventEmitter()
        self.transfers: dict[str, Transfer] = {}
        self._finished_ids: deque[str] = deque(maxlen=1000)
        self._assembler = OfferAssembler()
        self._refused: deque[str] = deque(maxlen=1000)  # offers declined for lack of room or dropped part way
        self._outbox = _Outbox()
        self._closed = False
        self._pump = asyncio.get_running_loop().create_task(self._send_loop())
        connection.events.on(ev.BINARY, self._on_binary)
        connection.events.on(ev.CLOSED, self._on_closed)
        self._sweep = self._start_sweep()

    async def __aenter__(self) -> FileTransfers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send_files(self, paths: Iterable[str | os.PathLike[str]], *,
                         transfer_id: str | None = None,
                         on_prepare: Callable[[int, int], None] | None = None) -> Transfer:
        """Offer ``paths`` (files and folders). Returns once offered; ``await transfer.wait()`` for the end.

        Every folder is offered too, so empty ones arrive. Symbolic links and special files inside a folder are not
        sent; ``transfer.skipped`` has a note for each.

        Nothing is hashed before the offer: each file is named by its fingerprint (two reads of at most 64 KiB),
        hashed while it is sent and verified by the receiver at its end. Pass the ``id`` of an interrupted transfer
        as ``transfer_id`` to continue it (the receiver also recognises the same files by their fingerprint and
        size). Raises DiskError if a path cannot be read.

        ``on_prepare(done, total)`` is called with the bytes of the files fingerprinted so far (quick, but many files
        take a moment); cancelling this call stops it.
        """
        if self._closed or self.connection.is_closed:
            raise TransferInterruptedError("The connection is closed: connect again before sending files.")
        tree = await asyncio.to_thread(walk_tree, paths)
        found = tree.files
        if not found and not tree.folders:
            skipped = f" (skipped: {' '.join(tree.skipped[:5])})" if tree.skipped else ""
            raise DiskError(f"There are no files to send in the chosen paths{skipped}.")
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def report(done: int, total: int) -> None:
            if on_prepare is not None and not stop.is_set():
                try:
                    on_prepare(done, total)
                except Exception:  # a progress display must not break the transfer
                    log.exception("on_prepare failed")

        def prepare() -> list[tuple[str, int, int]] | None:
            total = sum(path.stat().st_size for path, _ in found)
            done = 0
            prints = []
            for path, _ in found:
                if stop.is_set():
                    return None
                key, size, mtime_ns = _fingerprint_of(path)
                prints.append((key, size, mtime_ns))
                done += size
                loop.call_soon_threadsafe(report, done, max(total, done))
            return prints

        try:
            prints = await asyncio.to_thread(prepare)
        except OSError as exc:
            raise _disk_error("reading", exc.filename or "a file", exc) from exc
        except asyncio.CancelledError:
            stop.set()  # the preparing thread stops before its next file
            raise
        assert prints is not None
        if self._closed or self.connection.is_closed:  # it closed while the files were read: nobody would answer
            raise TransferInterruptedError("The connection closed before the files were offered: connect again.")
        tid = transfer_id or new_transfer_id()
        if tid in self.transfers and not self.transfers[tid]._machine.ended:
            raise ValueError(f"transfer {tid} is already running")
        files = tuple(FileEntry(path=rel, size=size, fingerprint=key)
                      for (_, rel), (key, size, _) in zip(found, prints))
        offer = Offer(id=tid, files=files, chunk_size=self._offered_chunk_size(), window=self._window(),
                      folders=tuple(tree.folders))
        frames = encode_offer(offer, max_frame=max_frame_bytes(self.connection, self.options))
        transfer = _Sending(self, SendMachine(offer), [path for path, _ in found],
                            [(size, mtime_ns) for _, size, mtime_ns in prints])
        transfer.skipped = tuple(tree.skipped)
        self.transfers[tid] = transfer
        for frame in frames:
            self._outbox.control(tid, frame)
        transfer._task = asyncio.get_running_loop().create_task(transfer._run())
        return transfer

    async def close(self) -> None:
        """Stop: running transfers end as interrupted on both sides (a receiver keeps what a resume needs)."""
        already = self._closed
        self._closed = True
        goodbyes: list[bytes] = []
        if not already and not self.connection.is_closed:
            for transfer in list(self.transfers.values()):
                actions = transfer._machine.interrupt()
                goodbyes += [a.data for a in actions if isinstance(a, SendMessage)]
                transfer._apply_sync([a for a in actions if not isinstance(a, SendMessage)])
        for event, handler in ((ev.BINARY, self._on_binary), (ev.CLOSED, self._on_closed)):
            if handler in self.connection.events.listeners(event):
                self.connection.events.remove_listener(event, handler)
        self._interrupt_all()
        self._pump.cancel()
        for frame in goodbyes:  # best effort: the peer otherwise learns it when the connection closes
            try:
                await asyncio.wait_for(self.connection.send_bytes(frame), 2.0)
            except (PeerchatError, OSError, TimeoutError):
                break
        tasks = [t._task for t in list(self.transfers.values()) if t._task is not None]
        await asyncio.gather(*tasks, self._pump, self._sweep, return_exceptions=True)

    # -- internals

    def _start_sweep(self) -> asyncio.Future[None]:
        """Sweep the download folder's stale records (:func:`sweep_stale_records`) in a thread, once."""
        if self.download_dir is None or not self.download_dir.is_dir():
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return asyncio.ensure_future(asyncio.to_thread(sweep_stale_records, self.download_dir,
                                                       self.options.resume_max_age))

    def _max_chunk(self) -> int:
        if self.connection.transport == "direct":
            return min(DIRECT_CHUNK_BYTES, self.options.max_message_bytes) - CHUNK_HEADER_SIZE
        return max_chunk_payload(self.connection, self.options)

    def _offered_chunk_size(self) -> int:
        """The largest chunk a new transfer may carry: ``chunk_size``, or a direct link's larger chunk."""
        if self._chunk_size_given or self.connection.transport != "direct":
            return self.chunk_size
        return max(self.chunk_size, self._max_chunk())

    def _window(self) -> int:
        """Chunks in flight for a new transfer: ``window``, or on a direct link as many as ``window_bytes`` holds."""
        if self.window is not None:
            return self.window
        if self.connection.transport != "direct":
            return DEFAULT_WINDOW
        chunk = min(self._offered_chunk_size(), self._max_chunk())
        return max(MIN_WINDOW, min(MAX_WINDOW, self.window_bytes // max(1, chunk)))

    def _emit(self, event: str, payload: object) -> None:
        emit_safely(self.events, event, payload)

    def _ended(self, transfer: Transfer) -> None:
        self._finished_ids.append(transfer.id)

    def _interrupt_all(self) -> None:
        for transfer in list(self.transfers.values()):
            transfer._apply_sync(transfer._machine.connection_lost())

    def _on_closed(self, _event: object = None) -> None:
        self._closed = True
        self._interrupt_all()
        self._pump.cancel()

    def _protocol_error(self, error: ProtocolError) -> None:
        self._emit(ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))

    def _on_binary(self, event: ev.BinaryData) -> None:
        try:
            message = decode_message(event.data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if isinstance(message, OfferPart):
            self._on_offer_part(message)
            return
        if isinstance(message, ForeignOffer):
            # Another version of the protocol: say so here, and decline so that the sender fails at once saying
            # which device to update, instead of waiting for an answer (or sending files this side cannot check).
            if message.id not in self._refused:
                self._refused.append(message.id)
                self._protocol_error(message.error())
                self._outbox.control(message.id, encode_message(Decline(id=message.id,
                                                                        reason=message.decline_reason())))
            return
        transfer = self.transfers.get(message.id)
        if transfer is None or transfer._machine.ended:
            if transfer is None and message.id not in self._finished_ids and not isinstance(message, Cancel):
                self._protocol_error(ProtocolError(
                    f"The other device sent a {type(message).__name__} for an unknown transfer."))
            return
        if transfer._inbox.qsize() > 4 * transfer.offer.window + 16:
            transfer._apply_sync(transfer._machine.fail(ProtocolError(
                "The other device sent far more chunks than the transfer window allows.")))
            return
        transfer._inbox.put_nowait(message)

    def _on_offer_part(self, part: OfferPart) -> None:
        existing = self.transfers.get(part.id)
        if existing is not None and not existing._machine.ended:
            self._protocol_error(ProtocolError("The other device offered a transfer that is already running."))
            return
        now = _now()
        idle = self.options.offer_idle_timeout
        for stale in self._assembler.expire(now - idle):
            self._refused.append(stale)
            self._protocol_error(ProtocolError(
                f"The other device stopped sending the parts of an offer ({stale[:8]}); gave up on it after {idle:g} s "
                f"without a part."))
        if part.id in self._refused:
            if part.part > 0:
                return  # the rest of an offer already refused or dropped
            self._refused.remove(part.id)  # offered again from the start
        if part.id not in self._assembler:  # a new offer: is there room for it?
            waiting = len(self._assembler) + sum(
                1 for t in self.transfers.values()
                if t.direction == "receive" and not t._machine.accepted and not t._machine.ended)
            limit = self.options.max_pending_offers
            if waiting >= limit:
                self._refused.append(part.id)
                log.warning("declined an offer: %d offers are already waiting", waiting)
                self._outbox.control(part.id, encode_message(Decline(id=part.id, reason=(
                    f"too many offers at once: {waiting} offers are waiting for an answer or for their remaining "
                    f"parts (at most {limit}). Send the files again once those are answered."))))
                return
        try:
            offer = self._assembler.feed(part, now)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if offer is None:
            return
        transfer = _Receiving(self, ReceiveMachine(offer))
        self.transfers[offer.id] = transfer
        transfer._task = asyncio.get_running_loop().create_task(transfer._run())
        incoming = IncomingOffer(transfer)
        if self.download_dir is not None and _has_resumable_record(self.download_dir, offer.id,
                                                                   self.options.resume_max_age):
            asyncio.get_running_loop().create_task(self._auto_resume(incoming))
        else:
            self._emit(ev.INCOMING_TRANSFER, IncomingTransfer(incoming))

    async def _auto_resume(self, incoming: IncomingOffer) -> None:
        try:
            await incoming.accept(self.download_dir)
        except PeerchatError:
            pass  # the transfer_failed event says why
        self._emit(ev.INCOMING_TRANSFER, IncomingTransfer(incoming))

    async def _send_loop(self) -> None:
        # Up to send_concurrency send_bytes calls run at once, started in queue order: connections number a frame
        # when the call starts (the relay then writes several frames per database update), so order is kept.
        slots = asyncio.Semaphore(self.send_concurrency)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        try:
            while True:
                tid, frame = await self._outbox.get()
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(self._send_frame(tid, frame))
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in running:
                task.cancel()

    async def _send_frame(self, tid: str, frame: bytes) -> None:
        try:
            await self.connection.send_bytes(frame)
            if frame[0] == CHUNK and (sent := self.transfers.get(tid)) is not None:
                sent.bytes_sent += len(frame) - CHUNK_HEADER_SIZE
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the link ends the transfers it carried
            if self.connection.is_closed:
                self._interrupt_all()
                return
            transfer = self.transfers.get(tid)
            if transfer is not None:
                error = exc if isinstance(exc, PeerchatError) else TransferInterruptedError(
                    f"Sending over the connection failed: {exc}")
                transfer._apply_sync(transfer._machine._end(error, tell_peer=False))


__all__ = [
    "FileTransfers", "IncomingOffer", "SendTree", "Transfer", "TransferState", "folder_target", "free_space",
    "max_chunk_payload", "max_frame_bytes", "safe_relative_path", "unique_target", "walk_paths", "walk_tree",
]
