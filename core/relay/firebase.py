"""The one seam between `core` and the blocking firebase-admin SDK: async calls, watched listeners, mapped errors.

Nothing above this module imports ``firebase_admin`` or ``requests``. :class:`Database` runs every SDK call in its
own small thread pool (so a slow relay cannot starve the event loop's default executor) and maps SDK and
``requests`` errors to :mod:`core.errors` at this boundary (:func:`map_error`).

Listening. ``firebase_admin.db.Reference.listen()`` has three weaknesses for a long-lived connection:

- its thread dies silently when a reconnect fails (the server restarted or the network is down), and nobody is told;
- it drops ``keep-alive`` events before the callback, so a caller cannot tell a quiet stream from a dead one, and
  without a read time-out a half-open TCP connection hangs it forever;
- it reads the stream one character at a time through ``iter_content(decode_unicode=True)``, which costs a Python
  loop iteration per byte: far too slow for 16 KiB relay messages.

So :class:`Listener` reuses the SDK's own pieces (the authorised listener session, URL and query parameters of a
``Reference``, and ``_sseclient.Event.parse``) but reads the stream itself: whole network reads, a socket read
time-out, and a ``last_activity`` clock that every event, keep-alives included, moves forward. A watchdog task
resubscribes (with back-off) when the reader thread ended (error, EOF) or the stream was silent longer than
``silence_timeout``. Each (re)subscription starts with a ``put`` at ``/`` holding the whole value, so consumers
treat that event as a full reset. Events reach the consumer on the event loop (``call_soon_threadsafe``); events
from an abandoned subscription are dropped.

:func:`apply_event` folds SSE events into a local copy of the listened value (a mirror); it has no I/O.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import functools
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import firebase_admin
import requests
from firebase_admin import _sseclient, db
from firebase_admin import exceptions as fb_exc

from ..errors import PeerchatError, PermissionDeniedError, RelayError, RelayUnavailableError

log = logging.getLogger(__name__)

EventHandler = Callable[[str, str, Any], None]
"""``handler(kind, path, data)``: kind is "put" or "patch", path is relative to the listened location ("/" ...)."""

_END_OF_EVENT = re.compile(r"\r\n\r\n|\r\r|\n\n")


# ------------------------------------------------------------------------------------------------------ errors
def describe_failure(exc: BaseException) -> str:
    """Why ``exc`` happened, in a few words for a person: the operating system's reason behind a failed connection
    ("connection refused", "the host name is not known"), never a connection pool's repr or a whole HTML page."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return "the host name is not known"
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno).lower()
        # requests wraps urllib3's MaxRetryError, whose ``reason`` wraps the socket's error.
        nested = [error.__cause__, error.__context__, getattr(error, "reason", None), *getattr(error, "args", ())]
        stack.extend(item for item in nested if isinstance(item, BaseException))
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    text = " ".join((str(exc) or type(exc).__name__).split())
    if re.search(r"<\s*(html|!doctype|body)", text, re.IGNORECASE):
        return "the server answered with a web page: it is not a Realtime Database"
    text = re.sub(r"HTTPS?ConnectionPool\([^)]*\)(: )?", "", text)
    return text if len(text) <= 300 else text[:299] + "…"


def map_error(exc: BaseException, what: str) -> PeerchatError:
    """The :mod:`core.errors` class for an SDK or ``requests`` error raised while doing ``what``."""
    detail = describe_failure(exc)
    if isinstance(exc, PeerchatError):
        return exc
    if isinstance(exc, fb_exc.UnauthenticatedError | fb_exc.PermissionDeniedError):
        return PermissionDeniedError(
            f"The database refused to {what} ({detail}). Check that the user id matches the deployed security rules."
        )
    if isinstance(exc, fb_exc.UnavailableError | fb_exc.DeadlineExceededError | fb_exc.InternalError):
        return RelayUnavailableError(
            f"The database could not be reached to {what} ({detail}). Check the network and the database URL."
        )
    if isinstance(exc, requests.ConnectionError | requests.Timeout | OSError):
        return RelayUnavailableError(
            f"The database could not be reached to {what} ({detail}). Check the network and the database URL."
        )
    if isinstance(exc, fb_exc.FirebaseError | requests.RequestException):
        return RelayError(f"The database failed to {what}: {detail}")
    return RelayError(f"Unexpected failure while trying to {what}: {detail}")


def _should_map(exc: BaseException) -> bool:
    return isinstance(exc, fb_exc.FirebaseError | requests.RequestException | OSError)


# ------------------------------------------------------------------------------------------------------ mirror
def apply_event(tree: Any, kind: str, path: str, data: Any) -> Any:
    """Return ``tree`` (the listened value) after an SSE ``put`` or ``patch`` at ``path``; no I/O, no mutation."""
    parts = [p for p in path.split("/") if p]
    if kind == "put":
        return _set_in(tree, parts, data)
    if kind == "patch":
        if not isinstance(data, dict):
            return tree
        for key, value in data.items():
            tree = _set_in(tree, parts + [p for p in str(key).split("/") if p], value)
        return tree
    return tree


def _set_in(tree: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return _prune(value)
    node = dict(tree) if isinstance(tree, dict) else {}
    child = _set_in(node.get(parts[0]), parts[1:], value)
    if child is None:
        node.pop(parts[0], None)
    else:
        node[parts[0]] = child
    return node or None


def _prune(value: Any) -> Any:
    if isinstance(value, list):
        value = {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        out = {k: p for k, v in value.items() if (p := _prune(v)) is not None}
        return out or None
    return value


# ---------------------------------------------------------------------------------------------------- database
class Database:
    """Async access to one firebase-admin App's Realtime Database.

    Args:
        app: an initialised ``firebase_admin.App`` (None: the default app).
        silence_timeout: a listener that delivered nothing, keep-alives included, for this long is resubscribed.
        workers: threads for blocking SDK calls.
    """

    def __init__(self, app: firebase_admin.App | None = None, *, silence_timeout: float = 45.0, workers: int = 8) -> None:
        self._app = app if app is not None else firebase_admin.get_app()
        self.silence_timeout = silence_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="firebase")
        self._listeners: set[Listener] = set()
        self._closed = False

    def reference(self, path: str) -> db.Reference:
        return db.reference(path, app=self._app)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except Exception as exc:
            if _should_map(exc):
                raise map_error(exc, what) from exc
            raise

    async def get(self, path: str) -> Any:
        return await self._call(f"read {path}", self.reference(path).get)

    async def set(self, path: str, value: Any) -> None:
        await self._call(f"write {path}", self.reference(path).set, value)

    async def update(self, path: str, values: dict[str, Any]) -> None:
        await self._call(f"update {path}", self.reference(path).update, values)

    async def delete(self, path: str) -> None:
        await self._call(f"delete {path}", self.reference(path).delete)

    async def listen(
        self,
        path: str,
        handler: EventHandler,
        *,
        on_error: Callable[[PeerchatError], None] | None = None,
        on_subscribed: Callable[[], None] | None = None,
        silence_timeout: float | None = None,
    ) -> Listener:
        """Listen at ``path``; returns once subscribed (the first event, the whole value, follows).

        ``on_error`` is called with each failed resubscription, ``on_subscribed`` after each successful one.

        Raises:
            PermissionDeniedError, RelayUnavailableError: the first subscription failed.
        """
        listener = Listener(
            self, path, handler, on_error=on_error, on_subscribed=on_subscribed,
            silence_timeout=self.silence_timeout if silence_timeout is None else silence_timeout,
        )
        await listener.start()
        self._listeners.add(listener)
        return listener

    def _forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    async def close(self) -> None:
        """Close every listener and the thread pool. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for listener in list(self._listeners):
            await listener.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------- listener
class _Stream:
    """One SSE subscription: the HTTP response and a blocking event iterator over it (runs in the reader thread)."""

    def __init__(self, ref: db.Reference, read_timeout: float) -> None:
        client = ref._client  # the SDK's client for this app: base URL, ``ns`` and auth override parameters
        self.session = client.create_listener_session()
        url = client.base_url + ref._add_suffix()
        self.last_activity = time.monotonic()
        self.closed = False
        self.resp = self.session.get(
            url,
            params=dict(client.params),
            headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
            stream=True,
            timeout=(10.0, read_timeout),
        )
        try:
            self.resp.raise_for_status()
        except requests.HTTPError as exc:
            self.close()
            raise db._Client.handle_rtdb_error(exc) from exc
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""

    def events(self):
        """Yield ``(event_type, data_text)`` for every event, keep-alives included, until EOF (then return)."""
        scanned = 0  # no event ends before this index of the buffer (a large event spans many reads)
        while not self.closed:
            match = _END_OF_EVENT.search(self._buf, scanned)
            if match is None:
                chunk = self.resp.raw.read1(65536)
                if not chunk:
                    return
                self.last_activity = time.monotonic()
                scanned = max(0, len(self._buf) - 3)  # an end of event ("\r\n\r\n") may straddle two reads
                self._buf += self._decoder.decode(chunk)
                continue
            scanned = 0
            head, self._buf = self._buf[: match.start()], self._buf[match.end() :]
            self.last_activity = time.monotonic()
            event = _sseclient.Event.parse(head)
            yield event.event_type, event.data

    def close(self) -> None:
        self.closed = True
        # Closing a socket does not wake a thread blocked reading it on Linux; shutting it down does.
        sock = getattr(getattr(self.resp.raw, "_connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.resp.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may fail; it is being abandoned anyway
            pass
        try:
            self.session.close()
        except Exception:  # noqa: BLE001
            pass


class Listener:
    """A watched subscription at one path (see the module docstring). Create it with :meth:`Database.listen`."""

    def __init__(
        self,
        database: Database,
        path: str,
        handler: EventHandler,
        *,
        on_error: Callable[[PeerchatError], None] | None,
        silence_timeout: float,
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._db = database
        self._handler = handler
        self._on_error = on_error
        self._on_subscribed = on_subscribed
        self.silence_timeout = silence_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: _Stream | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        self.subscriptions = 0
        self.failures = 0

    @property
    def last_activity(self) -> float:
        return self._stream.last_activity if self._stream is not None else 0.0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._subscribe()
        self._watchdog = self._loop.create_task(self._watch(), name=f"listener-watchdog {self.path}")

    async def _subscribe(self) -> None:
        assert self._loop is not None
        ref = self._db.reference(self.path)
        try:
            stream = await self._loop.run_in_executor(
                self._db._executor, _Stream, ref, max(self.silence_timeout, 1.0)
            )
        except Exception as exc:
            if _should_map(exc):
                raise map_error(exc, f"listen at {self.path}") from exc
            raise
        if self._closed:
            stream.close()
            return
        self._generation += 1
        self._stream = stream
        self.subscriptions += 1
        self._thread = threading.Thread(
            target=self._read, args=(stream, self._generation), name=f"listener {self.path}", daemon=True
        )
        self._thread.start()

    def _read(self, stream: _Stream, generation: int) -> None:
        """The reader thread: parse events and hand them to the event loop; end quietly on any failure."""
        assert self._loop is not None
        try:
            for event_type, data in stream.events():
                if event_type in ("put", "patch"):
                    try:
                        payload = json.loads(data)
                        path, value = payload["path"], payload["data"]
                    except (ValueError, KeyError, TypeError):
                        log.warning("malformed event at %s ignored: %.200r", self.path, data)
                        continue
                    self._loop.call_soon_threadsafe(self._dispatch, generation, event_type, path, value)
                elif event_type in ("cancel", "auth_revoked"):
                    log.warning("listener at %s: server sent %s", self.path, event_type)
                    return
        except Exception as exc:  # noqa: BLE001 - a dead stream is the watchdog's business
            if not stream.closed:
                log.info("listener at %s ended: %s", self.path, exc)
        finally:
            stream.closed = True

    def _dispatch(self, generation: int, kind: str, path: str, data: Any) -> None:
        if generation != self._generation or self._closed:
            return
        try:
            self._handler(kind, path, data)
        except Exception:  # a consumer bug must not kill the listener
            log.exception("listener handler for %s failed", self.path)

    async def _watch(self) -> None:
        backoff = 0.1
        check = min(1.0, self.silence_timeout / 4)
        while not self._closed:
            await asyncio.sleep(check)
            stream = self._stream
            dead = stream is None or stream.closed
            silent = stream is not None and time.monotonic() - stream.last_activity > self.silence_timeout
            if not (dead or silent):
                backoff = 0.1
                continue
            log.info("listener at %s %s: resubscribing", self.path, "ended" if dead else "went silent")
            if stream is not None:
                stream.close()
            self._generation += 1  # drop anything the old stream still delivers
            while not self._closed:
                try:
                    await self._subscribe()
                except PeerchatError as exc:
                    self.failures += 1
                    if self._on_error is not None:
                        self._on_error(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                else:
                    if self._on_subscribed is not None and not self._closed:
                        self._on_subscribed()
                    break

    def kill_for_test(self) -> None:
        """Drop the current stream as a network failure would (the watchdog resubscribes)."""
        if self._stream is not None:
            self._stream.close()

    async def close(self) -> None:
        """Stop listening. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
        if self._stream is not None:
            self._stream.close()
        self._db._forget(self)
