"""File transfers over a :class:`~core.peer.PeerConnection`: :class:`FileTransfers`, :class:`Transfer`,
:class:`IncomingOffer`; the file-system side they drive (safe names, .part files, resume records, free space, hashing in
worker threads) is :mod:`core.files.disk`.

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
before that it checks that the file's size, modification time and status-change time are still those it offered
(a file written to while it was sent fails integrity, on both sides, even if its modification time was put back).

On disk, the receiver creates ``<name>.part`` (exclusively: never over an existing file), hashes while it writes,
and renames it to ``<name>`` only when its SHA-256 matches the sender's. Once data arrived, a small record,
``.peerchat-<id>.transfer``, holds the offer id, each file's fingerprint, the offset confirmed to the sender, and
which ``.part`` file the transfer created (its device and inode). When the same files are offered again, on this
connection or a new one (same transfer id, or the same fingerprint and size), the receiver answers with the offsets
it has and the sender continues there at once: each side hashes [0, N) from its own disk meanwhile (a catch-up, in
steps of 256 MiB, each announced by the sender in a HASHING note so the receiver's idle time-out does not fire). A
record is honoured only for the ``.part`` file it names that is still the one its transfer created; received names
can never be mistaken for the receiver's own files (``.peerchat-...``, ``.part`` and ``.tmp`` names are renamed on
arrival); records older than ``ManagerOptions.resume_max_age`` are swept with the partial files they created (when
``FileTransfers`` starts on a download folder, and before each accept).

A hostile or broken sender is bounded (``ManagerOptions``): at most ``max_pending_offers`` offers being received
or waiting for an answer (one more is declined, saying why), an offer whose parts stop coming is dropped after
``offer_idle_timeout``, an accepted transfer through which nothing arrives stops after ``transfer_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
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
    new_transfer_id,
)
from .disk import (
    RECORD_VERSION,
    SIDECAR_PREFIX,
    SIDECAR_SUFFIX,
    SendTree,
    Stamp,
    _CatchUp,
    _PartFile,
    _SourceChanged,
    _SourceFile,
    _Stopped,
    _claim,
    _disk_error,
    _fingerprint_of,
    _has_resumable_record,
    _open_part,
    _open_regular,
    _plan_receive,
    _remove_own_part,
    _write_json,
    folder_target,
    free_space,
    safe_relative_path,
    sweep_stale_records,
    unique_target,
    walk_paths,
    walk_tree,
)

log = logging.getLogger(__name__)

# aiortc's SCTP transport refuses messages over 64 KiB, so a WebRTC frame is a 64 KiB binary message.
WEBRTC_FRAME_BYTES = 64 * 1024
DEFAULT_WINDOW = 32
# The data a transfer keeps in flight (read ahead or not yet acknowledged) on a direct link, whatever the chunk
# size: 32 chunks of 48 KiB (1.5 MiB) left the direct link idle between acknowledgements (about 30 against 100 MiB/s
# on loopback). 16 MiB moved 1 GiB at 196-252 MiB/s against 210-213 with 8 MiB (three runs each, same hour, 2
# cores), for 6 MiB more peak memory per side; 32 MiB gained nothing more. On slower links the chunk window stays:
# what is in flight queues ahead of chat, and WebRTC drains 8 MiB in seconds (chat round trips near 1 s against
# 0.3 s, measured).
DEFAULT_WINDOW_BYTES = 16 * 1024 * 1024
# A direct link carries a message of any size (the connection splits it into frames and the receiving side joins
# their bytes without decoding anything): chunks of 1 MiB there cost a twentieth of the per-chunk work (thread
# hops, frames of the transfer protocol) of 48 KiB ones. A transfer that falls back to the relay goes on with
# chunks of one relay frame.
DIRECT_CHUNK_BYTES = 1024 * 1024
MIN_WINDOW = 4
# send_bytes calls in progress at once on a connection that numbers each message when its call starts (core's
# connections): the relay then writes several chunks per database update instead of one round trip per chunk.
DEFAULT_SEND_CONCURRENCY = 8
_SIDECAR_INTERVAL = 0.5
_now = time.monotonic  # the clock of offer time-outs (tests replace it)


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


@dataclass
class _Incoming:
    """The receiver's side of one file: where it goes and how far it is."""

    target: Path
    part: Path
    hasher: _CatchUp
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
                 stamps: list[Stamp]) -> None:
        super().__init__(owner, machine, sources)
        self._stamps = stamps  # what each file was when it was offered (size, modification and change times)
        # The running hash of each file being read, made on its first read and dropped with its digest (an offer may
        # hold a million files); a file read again after a rewind, once its digest was sent, is not hashed again.
        # Each with what a catch-up hashes from disk: a resumed prefix (or a whole file the receiver has), while the
        # chunks after it already move.
        self._hashers: dict[int, _CatchUp] = {}
        self._digested: set[int] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def _hasher(self, file: int) -> _CatchUp:
        hasher = self._hashers.get(file)
        if hasher is None:
            hasher = self._hashers[file] = _CatchUp(
                self._sources[file], FileHasher(self.offer.files[file].size), stamp=self._stamps[file],
                on_step=lambda hashed: self._apply_sync(self._machine.hashing(file, hashed)),
                on_digest=lambda digest: self._hashed(file, digest),
                on_error=lambda exc: self._read_failed(file, exc), stopped=self._stopped)
        return hasher

    def _hashed(self, file: int, digest: str) -> None:
        """Every byte of ``file`` is hashed: its digest goes after its chunks (once)."""
        if file in self._digested:
            return
        self._digested.add(file)
        hasher = self._hashers.pop(file, None)
        if hasher is not None:  # its file closes once a step still under way ends
            closing = asyncio.get_running_loop().create_task(hasher.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._apply_sync(self._machine.file_hashed(file, digest))

    def _stopped(self) -> bool:
        """Whether the transfer ended (read from the worker threads that hash, to stop early)."""
        return self._machine.ended

    def _apply_sending(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, HashFile):  # nothing to send (empty, or the receiver has it all): hash it whole
                self._hasher(action.file).handled(self.offer.files[action.file].size)
            else:
                self._apply_one_sync(action)

    async def _run(self) -> None:
        handles: dict[int, Any] = {}
        try:
            while not self._machine.ended:
                for read in self._machine.next_reads(self._owner._max_chunk()):
                    result = await self._read(handles, read)
                    if result is None:
                        break
                    data, digest = result
                    self._apply_sync(self._machine.chunk_read(read, data))
                    if digest is not None:
                        self._hashed(read.file, digest)
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
            for hasher in self._hashers.values():
                await hasher.close()
            if self._closing:
                await asyncio.wait(self._closing)

    def _changed(self, file: int) -> None:
        self._apply_sync(self._machine.fail(IntegrityError(
            f"{self.offer.files[file].path} changed while it was being sent (it was written to, or its size or times "
            f"are not what was offered). Send it again.")))

    async def _read(self, handles: dict[int, Any], read: ReadChunk) -> tuple[bytes, str | None] | None:
        path = self._sources[read.file]
        try:
            handle = handles.get(read.file)
            if handle is None:
                handle = handles[read.file] = _SourceFile(await asyncio.to_thread(_open_regular, path))
            hasher = None if read.file in self._digested else self._hasher(read.file)
            if hasher is not None and hasher.reached(read.offset):  # hashed as it is read
                result = await handle.read_and_hash(hasher.hasher, self._stamps[read.file], read.offset, read.size,
                                                    self._stopped)
            else:
                # Read again after a rewind once its digest went, or ahead of the hash (a resume): a catch-up hashes
                # it from disk meanwhile. A short read fails the transfer (chunk_read).
                result = (await handle.read(read.offset, read.size), None)
                if hasher is not None and len(result[0]) == read.size:
                    hasher.handled(read.offset + read.size)
            if read.offset + read.size >= self.offer.files[read.file].size:
                await handles.pop(read.file).close()
            return result
        except _Stopped:
            return None
        except (_SourceChanged, OSError) as exc:
            self._read_failed(read.file, exc)
            return None

    def _read_failed(self, file: int, exc: BaseException) -> None:
        if isinstance(exc, _SourceChanged):
            self._changed(file)
        elif isinstance(exc, OSError):
            self._apply_sync(self._machine.fail(_disk_error("reading", self._sources[file], exc)))


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
        files, offsets, folders, identities = plan
        self.download_dir = download_dir
        self.folders_created = folders
        self._files = [self._incoming(index, target, part, identity)
                       for index, ((target, part), identity) in enumerate(zip(files, identities))]
        self._sidecar = download_dir / f"{SIDECAR_PREFIX}{self.id}{SIDECAR_SUFFIX}"
        self.state = TransferState.ACTIVE
        actions = self._machine.accept(tuple(offsets))
        await self._write_sidecar(force=True)
        self._meter = RateMeter(self.bytes_total, time.monotonic(), self.bytes_done)
        self._pending.extend(actions)
        self._inbox.put_nowait(_WAKE)
        for incoming, offset in zip(self._files, offsets):
            if offset:  # what is already here is hashed from disk while the rest arrives
                incoming.hasher.handled(offset)

    def _incoming(self, index: int, target: Path, part: Path, identity: tuple[int, int] | None) -> _Incoming:
        def failed(exc: BaseException) -> None:
            error = (_disk_error("reading", part, exc) if isinstance(exc, OSError) else IntegrityError(
                f"{self.offer.files[index].path}: the partial file {part} is shorter than what was written to it. "
                f"Send it again."))
            self._pending.extend(self._machine.fail(error))
            self._inbox.put_nowait(_WAKE)

        hasher = _CatchUp(part, FileHasher(self.offer.files[index].size), on_error=failed,
                          stopped=lambda: self._machine.ended)
        return _Incoming(target, part, hasher, identity=identity)

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
            hasher = incoming.hasher
            if hasher.reached(write.offset):
                await incoming.handle.write_and_hash(write.data, hasher.hasher, write.offset)
            else:  # ahead of the hash (a resume): written through, and hashed back from the file meanwhile
                await incoming.handle.write_and_hash(write.data, None, write.offset)
                hasher.handled(write.offset + len(write.data))
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
            try:
                await incoming.hasher.wait()  # what a catch-up still hashes from the file
            except (_SourceChanged, OSError):
                return  # the transfer failed, saying why
            await incoming.hasher.close()
            hasher = incoming.hasher.hasher
            if not hasher.complete or hasher.hexdigest() != sha256:
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
            await incoming.hasher.close()
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

        def prepare() -> list[tuple[str, Stamp]] | None:
            total = sum(path.stat().st_size for path, _ in found)
            done = 0
            prints = []
            for path, _ in found:
                if stop.is_set():
                    return None
                key, stamp = _fingerprint_of(path)
                prints.append((key, stamp))
                done += stamp[0]
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
        files = tuple(FileEntry(path=rel, size=stamp[0], fingerprint=key)
                      for (_, rel), (key, stamp) in zip(found, prints))
        offer = Offer(id=tid, files=files, chunk_size=self._offered_chunk_size(), window=self._window(),
                      folders=tuple(tree.folders))
        frames = encode_offer(offer, max_frame=max_frame_bytes(self.connection, self.options))
        transfer = _Sending(self, SendMachine(offer), [path for path, _ in found],
                            [stamp for _, stamp in prints])
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
