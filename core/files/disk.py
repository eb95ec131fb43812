"""The disk side of file transfers, without the protocol: safe names for what arrives, the walk over what is sent,
``.part`` files and the records that let a transfer resume, free space, and the hashing done in worker threads.

Everything here is plain functions and small classes that :mod:`core.files.transfers` calls, most of them in a worker
thread (``asyncio.to_thread``); ``_PartFile`` and ``_SourceFile`` wrap one open file for the event loop, each call one
worker-thread hop. Nothing here knows the connection or the protocol's messages.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import stat
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DiskError, InsufficientSpaceError, ProtocolError
from .protocol import (
    FINGERPRINT_BLOCK,
    FileHasher,
    Offer,
    fingerprint,
)

log = logging.getLogger(__name__)

SIDECAR_PREFIX = ".peerchat-"
SIDECAR_SUFFIX = ".transfer"
PART_SUFFIX = ".part"
TMP_SUFFIX = ".tmp"
_OWN_SUFFIXES = (PART_SUFFIX, TMP_SUFFIX)
MAX_NAME_BYTES = 200
MAX_DEPTH = 32
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


# What a file being sent must still be when its digest goes: (size, modification time, status-change time), in ns.
# A write moves the status-change time even when the modification time is put back afterwards (``os.utime``, or a
# tool copying times), which the modification time alone would miss; on Windows it is the creation time, which a
# write leaves alone.
Stamp = tuple[int, int, int]


def _stamp(st: os.stat_result) -> Stamp:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _fingerprint_of(path: Path) -> tuple[str, Stamp]:
    """The file's fingerprint (:func:`core.files.protocol.fingerprint`) and its stamp (size, modification and
    status-change times): one open, one fstat and two reads of at most 64 KiB whatever the file's size."""
    fd = _open_regular(path)
    try:
        st = os.fstat(fd)
        head = _read_at(fd, 0, FINGERPRINT_BLOCK)
        tail = _read_at(fd, max(0, st.st_size - FINGERPRINT_BLOCK), FINGERPRINT_BLOCK)
    finally:
        os.close(fd)
    return fingerprint(st.st_size, st.st_mtime_ns, head, tail), _stamp(st)


class _Stopped(Exception):
    """The transfer ended while a worker thread was hashing: nobody wants the digest."""


class _SourceChanged(Exception):
    """The file is not what was offered: shorter, written to, or with other times (:data:`Stamp`)."""


# A resumed prefix (or a whole file the receiver already has) is hashed from disk in steps of this many bytes; on the
# sender each is followed by a HASHING note, so that the receiver's idle time-out never ends a transfer that is busy
# hashing after its last chunk.
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


def _digest_if_complete(fd: int, hasher: FileHasher, stamp: Stamp) -> str | None:
    """The file's SHA-256 once every byte is hashed, after checking that it still has the ``stamp`` it was offered
    with: the digest must be of the file that was offered, not of one written to meanwhile."""
    if not hasher.complete:
        return None
    if _stamp(os.fstat(fd)) != stamp:
        raise _SourceChanged
    return hasher.hexdigest()


def _read_and_hash(fd: int, hasher: FileHasher, stamp: Stamp, offset: int, size: int,
                   stopped: Callable[[], bool]) -> tuple[bytes, str | None]:
    """ONE worker-thread call per chunk: read ``size`` bytes at ``offset`` (which the running hash reached: see
    :class:`_CatchUp`), add them to the file's running hash and return them with the file's SHA-256 if that
    completed it."""
    data = _read_at(fd, offset, size)
    if len(data) != size:
        return data, None  # the file shrank: the machine fails the transfer
    hasher.update(offset, data)
    return data, _digest_if_complete(fd, hasher, stamp)


def _disk_error(action: str, path: Path | str, exc: OSError) -> DiskError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"The disk is full while {action} {path}. Free some space and send the files again.")
    verb = {"reading": "read", "writing": "write", "preparing": "prepare", "saving": "save"}.get(action, action)
    return DiskError(f"Could not {verb} {path}: {exc.strerror or exc}.")


class _PartFile:
    """A file being received, written and hashed off the event loop: ONE thread hop per chunk (``write`` and the
    SHA-256 update together; hashlib releases the GIL for large data, so the loop keeps running). ``flush`` and
    ``close`` are awaited like aiofiles'."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def write_and_hash(self, data: bytes | memoryview, hasher: FileHasher | None, offset: int) -> None:
        """Write ``data`` (which goes at ``offset``) and add it to ``hasher``; with no hasher (a catch-up will hash
        it from the file), write it through to the file so that it can be read back."""
        await asyncio.to_thread(_write_and_hash, self._file, data, hasher, offset)

    async def flush(self) -> None:
        await asyncio.to_thread(self._file.flush)

    async def close(self) -> None:
        await asyncio.to_thread(self._file.close)


def _write_and_hash(file: Any, data: bytes | memoryview, hasher: FileHasher | None, offset: int) -> None:
    file.write(data)
    if hasher is None:
        file.flush()
    else:
        hasher.update(offset, data)


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

    async def read_and_hash(self, hasher: FileHasher, stamp: Stamp, offset: int, size: int,
                            stopped: Callable[[], bool]) -> tuple[bytes, str | None]:
        return await asyncio.to_thread(_read_and_hash, self._fd, hasher, stamp, offset, size, stopped)

    async def close(self) -> None:
        os.close(self._fd)


class _CatchUp:
    """Hashes from disk the bytes of one file that a transfer handled (sent, or written) before the file's running
    hash reached them: a resumed prefix, and whatever moved meanwhile. So a resumed transfer moves its first byte at
    once, and the file still ends verified whole.

    The transfer hashes a chunk as it handles it only when :meth:`reached` says the hash is there and no catch-up
    runs; otherwise it handles the chunk unhashed and calls :meth:`handled`, and the catch-up (worker threads, in
    steps of ``_HASH_STEP``) reads those bytes back from disk, until the hash reaches everything handled. Everything
    here runs on the event loop, and each worker-thread job has the hasher to itself.

    ``on_step(hashed)`` hears the end of each step (the sender tells the receiver it is busy, not gone);
    ``on_error(exc)`` hears what stopped it (``_SourceChanged``, ``OSError``); with a ``stamp`` (the file's
    :data:`Stamp` when it was offered), ``on_digest(sha256)`` hears the digest once the whole file is hashed.
    """

    def __init__(self, path: Path, hasher: FileHasher, *, stamp: Stamp | None = None,
                 on_step: Callable[[int], None] | None = None, on_digest: Callable[[str], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self.hasher = hasher
        self._path = path
        self._stamp = stamp
        self._on_step, self._on_digest, self._on_error = on_step, on_digest, on_error
        self._stopped = stopped
        self._closing = False
        self._fd: int | None = None
        self._seen = 0
        self._task: asyncio.Task[None] | None = None
        self._digest_given = False
        self.error: BaseException | None = None

    def reached(self, offset: int) -> bool:
        """Whether bytes at ``offset`` are to be hashed as they are handled (nothing before them is left)."""
        return self._task is None and self.error is None and offset <= self.hasher.hashed

    def handled(self, end: int) -> None:
        """Bytes up to ``end`` were handled; those not hashed yet are hashed from disk (starts the catch-up)."""
        self._seen = max(self._seen, end)
        digest_due = self._stamp is not None and self.hasher.complete and not self._digest_given  # an empty file
        if (self._task is None and self.error is None and not self._closing
                and (self.hasher.hashed < self._seen or digest_due)):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> None:
        """Until everything handled is hashed.

        Raises:
            what stopped the catch-up: ``_SourceChanged`` (the file is shorter than what was handled), ``OSError``.
        """
        while self._task is not None:
            await asyncio.shield(self._task)
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop (a step in a worker thread ends at its next MiB) and close the file."""
        self._closing = True
        if self._task is not None:
            await asyncio.wait({self._task})
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _stop(self) -> bool:
        return self._closing or self._stopped()

    async def _run(self) -> None:
        try:
            if self._fd is None:
                self._fd = await asyncio.to_thread(_open_regular, self._path)
            while self.hasher.hashed < self._seen and not self._stop():
                end = min(self.hasher.hashed + _HASH_STEP, self._seen)
                await asyncio.to_thread(_hash_range, self._fd, self.hasher, end, self._stop)
                if self._on_step is not None and not self._stop():
                    self._on_step(self.hasher.hashed)
            if self.hasher.complete and self._stamp is not None and not self._digest_given and not self._stop():
                digest = await asyncio.to_thread(_digest_if_complete, self._fd, self.hasher, self._stamp)
                self._digest_given = digest is not None
                if digest is not None and self._on_digest is not None:
                    self._on_digest(digest)
        except _Stopped:
            pass
        except (OSError, _SourceChanged) as exc:
            self.error = exc
            if self._on_error is not None:
                self._on_error(exc)
        finally:
            self._task = None


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
                  ) -> tuple[list[tuple[Path, Path]], list[int], list[Path], list[tuple[int, int] | None]]:
    """Where each offered file goes and how much of it is already here (resume); the offered folders, created; the
    identity of each partial file reused (None for a new one). What is already here is hashed alongside the
    transfer (:class:`_CatchUp`), not before it.

    Records older than ``resume_max_age`` are swept first (:func:`sweep_stale_records`). Partial files are found
    through records: the same transfer id first, then any with the same fingerprint and size; a record is honoured
    only for the partial file its transfer created (same device and inode, a regular file with one name). Raises
    InsufficientSpaceError (before touching anything) if the rest of the files does not fit. A reused partial
    file is cut back to its confirmed offset.
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
    for (target, part, offset), identity in zip(plan, identities):
        target.parent.mkdir(parents=True, exist_ok=True)
        if identity is not None:
            fd, _ = _open_part(part, identity, offset)  # raises unless it is still the file the record created
            os.close(fd)
    # Partial files adopted from another transfer's sidecar now belong to this one.
    for sidecar, (state, items) in adopted.items():
        if state.get("id") == offer.id:
            continue
        rest = [item for item in state["files"] if all(item is not a for a in items)]
        if any(not item.get("done") for item in rest):
            _write_json(sidecar, {**state, "files": rest})
        else:
            sidecar.unlink(missing_ok=True)
    return [(t, p) for t, p, _ in plan], [o for _, _, o in plan], folders, identities
