"""The conversation history: every message and file that went to or came from each device, in SQLite.

One database file per device of this user (``history-<device id>.sqlite3`` in the data directory), written with
the standard library's :mod:`sqlite3`. :class:`History` is synchronous and thread-safe (one connection behind a
lock), so the app calls it through ``asyncio.to_thread`` and the tests call it directly. ``History(None)`` keeps
everything in memory only: that is what "history off" means (the offline queue then lasts until the app quits).

An entry's ``status`` is its delivery mark:

- outgoing text: ``queued`` (waiting for the device or for the link) -> ``sent`` (handed to the link) ->
  ``delivered`` (the other device's application confirmed it) or ``failed`` (the person may retry it);
- incoming text and files: ``received``;
- files: ``delivered`` / ``received`` when verified, ``failed`` otherwise, with ``path`` where the file was read
  from or saved to.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

Direction = Literal["out", "in"]
Kind = Literal["text", "file"]
Status = Literal["queued", "sent", "delivered", "failed", "received"]

T = TypeVar("T")

STATUSES: tuple[str, ...] = ("queued", "sent", "delivered", "failed", "received")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id   TEXT NOT NULL,
    label     TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
    kind      TEXT NOT NULL CHECK (kind IN ('text', 'file')),
    body      TEXT NOT NULL,
    path      TEXT,
    size      INTEGER,
    status    TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'failed', 'received')),
    at        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_peer ON entries (peer_id, id);
"""


class HistoryError(Exception):
    """The conversation history cannot be opened or written. Check the data directory's permissions and free
    space, or turn history off (--no-history)."""


@dataclass(frozen=True)
class Entry:
    """One message or file in a conversation."""

    id: int
    peer_id: str
    label: str  # the device's label when the entry was written
    direction: Direction
    kind: Kind
    body: str  # the text, or the file's name
    status: Status
    at: float  # a time.time() value
    path: str | None = None  # a file: where it was read from (out) or saved to (in)
    size: int | None = None  # a file's size in bytes


class History:
    """The conversations of this device. ``History(path)`` opens (or creates) the database at ``path``;
    ``History(None)`` keeps them in memory only.

    Raises:
        HistoryError: the file cannot be opened or is not a peerchat history.
    """

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL" if path is not None else "PRAGMA journal_mode=MEMORY")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise HistoryError(f"the history file {path} has schema {version}, newer than this peerchat "
                                   f"({SCHEMA_VERSION}); update peerchat or move the file away")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"cannot open the history file {path}: {exc}. Move it away (peerchat starts a new "
                               "one) or turn history off with --no-history") from exc
        except OSError as exc:
            raise HistoryError(f"cannot create the history folder {path.parent if path else ''}: "
                               f"{exc.strerror or exc}") from exc

    @property
    def persistent(self) -> bool:
        """True when the history is kept on disk (False: history is off)."""
        return self.path is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ---------------------------------------------------------------------------------------------

    def add(self, peer_id: str, label: str, direction: Direction, kind: Kind, body: str, status: Status, *,
            path: str | None = None, size: int | None = None, at: float | None = None) -> Entry:
        """Append one entry to the conversation with ``peer_id``; returns it with its id."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        at = self._clock() if at is None else at
        with self._lock:
            cursor = self._execute(
                "INSERT INTO entries (peer_id, label, direction, kind, body, path, size, status, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (peer_id, label, direction, kind, body, path, size, status, at))
            entry_id = cursor.lastrowid
        assert entry_id is not None
        return Entry(entry_id, peer_id, label, direction, kind, body, status, at, path, size)

    def set_status(self, entry_id: int, status: Status, *, path: str | None = None) -> None:
        """Change an entry's delivery mark (and, for a file, where it ended up)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        with self._lock:
            if path is None:
                self._execute("UPDATE entries SET status = ? WHERE id = ?", (status, entry_id))
            else:
                self._execute("UPDATE entries SET status = ?, path = ? WHERE id = ?", (status, path, entry_id))

    def clear(self) -> int:
        """Forget every conversation (queued messages too); returns how many entries went."""
        with self._lock:
            count = self._execute("DELETE FROM entries").rowcount
            self._execute("DELETE FROM sqlite_sequence WHERE name = 'entries'")
        if self.path is not None:
            with self._lock:
                self._execute("VACUUM")
        return count

    # --- reading ---------------------------------------------------------------------------------------------

    def page(self, peer_id: str, *, before: int | None = None, limit: int = 50) -> list[Entry]:
        """The conversation with ``peer_id``: the ``limit`` entries just before entry id ``before`` (the newest
        when None), oldest first. Pass the first entry's id as ``before`` to load the page before it."""
        with self._lock:
            rows = self._execute(
                "SELECT * FROM entries WHERE peer_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (peer_id, before if before is not None else 2**62, limit)).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def queued(self, peer_id: str | None = None) -> list[Entry]:
        """Outgoing texts still waiting to be sent, oldest first (for one device, or all)."""
        query = "SELECT * FROM entries WHERE status = 'queued'"
        params: tuple[str, ...] = ()
        if peer_id is not None:
            query += " AND peer_id = ?"
            params = (peer_id,)
        with self._lock:
            rows = self._execute(query + " ORDER BY id", params).fetchall()
        return [_entry(row) for row in rows]

    def search(self, text: str, *, limit: int = 30) -> list[Entry]:
        """Entries of every conversation whose text or file name contains ``text`` (case-insensitive for ASCII),
        newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = self._execute(
                "SELECT * FROM entries WHERE body LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?",
                (pattern, limit)).fetchall()
        return [_entry(row) for row in rows]

    def conversations(self) -> list[tuple[str, str, float]]:
        """``(peer_id, latest label, time of the last entry)`` of every conversation, the latest first."""
        with self._lock:
            rows = self._execute(
                "SELECT peer_id, label, at FROM entries WHERE id IN (SELECT MAX(id) FROM entries GROUP BY peer_id) "
                "ORDER BY at DESC").fetchall()
        return [(peer_id, label, at) for peer_id, label, at in rows]

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise HistoryError(f"the history {self.path or '(in memory)'} could not be written or read: {exc}. "
                               "Check free space and permissions, or turn history off with --no-history") from exc


def _entry(row: tuple[object, ...]) -> Entry:
    entry_id, peer_id, label, direction, kind, body, path, size, status, at = row
    return Entry(int(entry_id), str(peer_id), str(label), direction, kind, str(body), status,  # type: ignore[arg-type]
                 float(at), path, size)  # type: ignore[arg-type]


def history_file(data_dir: Path, device_id: str) -> Path:
    """Where the history of the device ``device_id`` lives in ``data_dir``."""
    return data_dir / f"history-{device_id}.sqlite3"


class AsyncHistory:
    """:class:`History` for the event loop: every call runs in one worker thread, in the order it was made, so an
    entry's status change never overtakes the entry."""

    def __init__(self, history: History) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.history = history
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._closed = False

    @property
    def persistent(self) -> bool:
        return self.history.persistent

    async def _call(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        import asyncio
        import functools

        if self._closed:
            raise HistoryError("the history is closed (peerchat is quitting)")
        return await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                functools.partial(method, *args, **kwargs))

    async def add(self, peer_id: str, label: str, direction: Direction, kind: Kind, body: str, status: Status,
                  **kwargs: object) -> Entry:
        return await self._call(self.history.add, peer_id, label, direction, kind, body, status, **kwargs)

    async def set_status(self, entry_id: int, status: Status, *, path: str | None = None) -> None:
        await self._call(self.history.set_status, entry_id, status, path=path)

    async def page(self, peer_id: str, *, before: int | None = None, limit: int = 50) -> list[Entry]:
        return await self._call(self.history.page, peer_id, before=before, limit=limit)

    async def queued(self, peer_id: str | None = None) -> list[Entry]:
        return await self._call(self.history.queued, peer_id)

    async def search(self, text: str, *, limit: int = 30) -> list[Entry]:
        return await self._call(self.history.search, text, limit=limit)

    async def conversations(self) -> list[tuple[str, str, float]]:
        return await self._call(self.history.conversations)

    async def clear(self) -> int:
        return await self._call(self.history.clear)

    async def close(self) -> None:
        """Close the database after the calls made before this one; later calls raise HistoryError."""
        if self._closed:
            return
        await self._call(self.history.close)
        self._closed = True
        self._executor.shutdown(wait=False)
