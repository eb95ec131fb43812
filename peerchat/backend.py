"""Connects the app and the headless commands to core: the relay, the firebase_admin app and the manager.

- :class:`Backend` turns :class:`~peerchat.config.Settings` into a started ``FirebasePeerConnectionManager``. On the
  embedded relay it uses an emulator already answering on 127.0.0.1:9000 or starts one in this process, and a
  watchdog restarts it (or says clearly that the relay is gone) if it goes away.
- :func:`open_session` gives a new connection its file transfers and an :class:`EventTap` that listens to both from
  the moment the connection exists and buffers their events until the app has a place to show them, so nothing that
  arrives while a dialog is open is lost (:class:`SessionLink` holds the three).
- :func:`describe_error` turns an exception into one line a person can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

from core import IceServer, ManagerOptions, PeerchatError, PeerConnection, PeerConnectionManager, PeerInfo
from core.events import (
    CLOSED,
    DATA,
    INCOMING_TRANSFER,
    LATENCY,
    LINK_CHANGED,
    PROTOCOL_ERROR,
    RECOVERED,
    SLOW,
    TRANSFER_FAILED,
    TRANSFER_FILE_DONE,
    TRANSFER_FINISHED,
    TRANSFER_PROGRESS,
    UPGRADE_FAILED,
)

from .config import Settings
from .rules import RulesMissingError, rules_file

log = logging.getLogger(__name__)

CONNECTION_EVENTS = (DATA, LATENCY, SLOW, RECOVERED, LINK_CHANGED, UPGRADE_FAILED, PROTOCOL_ERROR, CLOSED)
TRANSFER_EVENTS = (INCOMING_TRANSFER, TRANSFER_PROGRESS, TRANSFER_FILE_DONE, TRANSFER_FINISHED, TRANSFER_FAILED,
                   PROTOCOL_ERROR)


class RelayGoneError(PeerchatError):
    """The relay is not answering. Start it again (``peerchat emulator``) or check --emulator / --database-url."""


def ice_servers_of(settings: Settings) -> tuple[IceServer, ...]:
    """The settings' STUN and TURN URLs as core's ICE servers (TURN ones with the user name and password)."""
    return tuple(
        IceServer(url) if url.startswith("stun:") else IceServer(url, settings.ice_username, settings.ice_credential)
        for url in settings.ice_servers
    )


def describe_error(what: str, error: BaseException) -> str:
    """``"Connecting to laptop failed: <reason>. <what to do>"``: core's messages are for people, so use them."""
    text = str(error).strip()
    hint = (type(error).__doc__ or "").strip().splitlines()[0] if isinstance(error, PeerchatError) else ""
    if not text:
        text = hint or type(error).__name__
    elif hint and hint not in text and hint.split(". ")[0].rstrip(".") not in text:
        # The class's advice, unless the message already says it (then once is enough).
        text = f"{text.rstrip('.')}. {hint}"
    if not isinstance(error, PeerchatError | OSError | LookupError | ValueError):
        text = f"unexpected {type(error).__name__}: {text}"
    return f"{what} failed: {text}"


class EventTap:
    """Forwards events as ``(name, payload)``, buffering them until :meth:`attach` is called."""

    def __init__(self, emitter: AsyncIOEventEmitter | None = None, names: tuple[str, ...] = CONNECTION_EVENTS) -> None:
        self._buffer: list[tuple[str, Any]] = []
        self._target: Callable[[str, Any], None] | None = None
        self._handlers: list[tuple[AsyncIOEventEmitter, str, Callable[[Any], None]]] = []
        if emitter is not None:
            self.listen(emitter, names)

    def listen(self, emitter: AsyncIOEventEmitter, names: tuple[str, ...]) -> None:
        """Also forward ``names`` from ``emitter``."""
        for name in names:
            handler = self._make_handler(name)
            emitter.on(name, handler)
            self._handlers.append((emitter, name, handler))

    def _make_handler(self, name: str) -> Callable[[Any], None]:
        def handler(payload: Any) -> None:
            if self._target is None:
                self._buffer.append((name, payload))
            else:
                self._target(name, payload)

        return handler

    def attach(self, target: Callable[[str, Any], None]) -> None:
        """Deliver what was buffered, then every later event, to ``target``."""
        buffered, self._buffer = self._buffer, []
        self._target = target
        for name, payload in buffered:
            target(name, payload)

    def close(self) -> None:
        for emitter, name, handler in self._handlers:
            with contextlib.suppress(KeyError, ValueError):
                emitter.remove_listener(name, handler)
        self._handlers.clear()
        self._target = None
        self._buffer.clear()


@dataclass
class SessionLink:
    """One session's connection, its file transfers and the tap that has heard both since the connection opened."""

    connection: PeerConnection
    transfers: Any  # core.files.FileTransfers
    tap: EventTap

    async def close(self) -> None:
        """Stop the transfers (a receiver keeps what a resume needs) and disconnect. Safe to call twice."""
        self.tap.close()
        try:
            await self.transfers.close()
        finally:
            if not self.connection.is_closed:
                await self.connection.disconnect()


def open_session(connection: PeerConnection, download_dir: Path) -> SessionLink:
    """Attach file transfers and a tap to a new connection. Call it as soon as the connection exists (no await
    between), so that no message or file offer can arrive unheard."""
    from core import FileTransfers

    transfers = FileTransfers(connection, download_dir=download_dir)
    tap = EventTap(connection.events, CONNECTION_EVENTS)
    tap.listen(transfers.events, TRANSFER_EVENTS)
    return SessionLink(connection, transfers, tap)


def load_relay_machinery() -> None:
    """Import what connecting needs (firebase-admin, aiortc, core's manager and file transfers); run in a thread."""
    import importlib

    for module in ("firebase_admin", "firebase_admin.credentials", "core.manager", "core.files"):
        importlib.import_module(module)


@dataclass(frozen=True)
class RelayProbe:
    """What answers at an emulator's address: ``ok`` when it is a Realtime Database; otherwise ``what`` says in
    words what is there ("nothing answers (connection refused)", "an HTTP server that is not a Realtime Database
    (HTTP 404, text/html)")."""

    ok: bool
    what: str

    def problem(self, host: str, port: int) -> str:
        """One line: what is at host:port instead of a database."""
        return f"{self.what} at {host}:{port}"


async def probe_relay(host: str, port: int, *, timeout: float = 2.0) -> RelayProbe:
    """Ask host:port for a shallow read, as a Realtime Database answers it: JSON (``null``, an object, or an error
    object such as "Permission denied"). Anything else (an HTML page, no HTTP at all, no answer) is not one."""
    import aiohttp  # loads with the relay, not for `peerchat --help`

    url = f"http://{host}:{port}/.json?ns=peerchat&shallow=true"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(url) as response:
                kind = response.content_type or "no content type"
                server = response.headers.get("Server")
                body = await response.content.read(4096)
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        if isinstance(error, socket.gaierror):
            reason = f"the host name is not known: {error.strerror}"
        elif error is not None and error.errno:
            reason = os.strerror(error.errno)
        else:
            reason = str(error or exc)
        return RelayProbe(False, f"nothing answers ({(reason or 'no connection').lower()})")
    except (aiohttp.ClientResponseError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
        return RelayProbe(False, "something that does not speak HTTP answers")
    except asyncio.TimeoutError:
        return RelayProbe(False, f"nothing answers within {timeout:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return RelayProbe(False, f"nothing answers ({type(exc).__name__}: {exc})".rstrip(": )") + ")")
    if kind == "application/json":
        try:
            json.loads(body or b"null")
        except ValueError:
            pass
        else:
            return RelayProbe(True, "a Realtime Database")
    by = f", {server}" if server else ""
    return RelayProbe(False, f"an HTTP server that is not a Realtime Database (HTTP {response.status}, {kind}{by})")


async def relay_answers(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """True when something at host:port answers like a Realtime Database (see :func:`probe_relay`)."""
    return (await probe_relay(host, port, timeout=timeout)).ok


class Backend:
    """The relay, the firebase_admin app and the manager for one device; ``async with Backend(settings)``.

    Args:
        settings: who and where (see :mod:`peerchat.config`).
        on_relay_status: called with ``(text, ok)`` when the relay goes away, comes back or is restarted.
        watch_interval: seconds between relay health checks (emulator modes only; 0 turns them off).
        options: the manager's options (default: core's, with ``webrtc``, the ICE servers and ``require_verified``
            from the settings); the settings' ``addresses``, ``direct`` and ``direct_timeout`` apply to them.
        accept: the manager's ``accept`` callable (None: every device whose key has not changed is accepted).
        embedded_at: where the embedded emulator lives (default 127.0.0.1:9000; tests use a free port).
        short_lived: a headless command: this device leaves no presence record behind when it stops.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_relay_status: Callable[[str, bool], None] | None = None,
        watch_interval: float = 3.0,
        options: ManagerOptions | None = None,
        embedded_at: tuple[str, int] | None = None,
        accept: Any = None,
        short_lived: bool = False,
    ) -> None:
        self.settings = settings
        self._address = settings.emulator_address if settings.mode != "embedded" or embedded_at is None \
            else embedded_at
        self._on_relay_status = on_relay_status or (lambda text, ok: None)
        self._watch_interval = watch_interval
        self._accept = accept
        options = options or ManagerOptions(webrtc=settings.webrtc, ice_servers=ice_servers_of(settings),
                                            require_verified=settings.require_verified)
        # The settings' link choices apply to given options too (addresses, the direct link and its time-out), and a
        # short-lived device (a headless command) removes its presence record when it stops: no one lists it after.
        self._options = dataclasses.replace(
            options,
            addresses=settings.addresses or options.addresses,
            direct=options.direct and settings.direct,
            direct_timeout=settings.direct_timeout or options.direct_timeout,
            leave_presence=options.leave_presence and not short_lived,
        )
        self._emulator: Any = None
        self._firebase_app: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self.manager: PeerConnectionManager | None = None

    @property
    def device(self) -> PeerInfo:
        return PeerInfo(self.settings.device_id, self.settings.label)

    @property
    def options(self) -> ManagerOptions:
        """The options the manager gets (its ICE servers among them)."""
        return self._options

    @property
    def emulator(self) -> Any:
        """The emulator this backend started in this process (emulator.Emulator), or None."""
        return self._emulator

    @property
    def relay_description(self) -> str:
        """Where the relay is, in words, as it is now: "embedded emulator HOST:PORT" only while this process runs
        it; the emulator of another peerchat on this machine is "emulator HOST:PORT (shared with another peerchat)"."""
        settings = self.settings
        if settings.relay_name or settings.mode != "embedded":
            return settings.describe_relay()
        host, port = self._address
        if self._emulator is not None:
            return f"embedded emulator {host}:{port}"
        return f"emulator {host}:{port} (shared with another peerchat)"

    @property
    def relay_address(self) -> tuple[str, int]:
        """The emulator's (host, port) in the emulator modes."""
        return self._address

    async def __aenter__(self) -> PeerConnectionManager:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> PeerConnectionManager:
        """Reach the relay (starting the embedded emulator if needed), then start the manager.

        Raises:
            RelayGoneError: the configured emulator does not answer.
            PeerchatError: the manager could not start (core's error says why).
        """
        settings = self.settings
        # firebase-admin, aiortc and the rest of core load in a thread meanwhile, so the app's screen stays live.
        loading = asyncio.ensure_future(asyncio.to_thread(load_relay_machinery))
        try:
            await self._reach_relay()
        finally:
            await loading
        self._firebase_app = self._init_firebase()
        from core import FileKeyStore, FirebasePeerConnectionManager, MemoryKeyStore

        # core's default upgrade: the direct link and WebRTC together, on the addresses the options name.
        folder = settings.key_store_dir
        keys = FileKeyStore(folder) if folder is not None else MemoryKeyStore()
        manager = FirebasePeerConnectionManager(
            settings.user, self.device, app=self._firebase_app, options=self._options, keys=keys, accept=self._accept,
        )
        try:
            await manager.start()
        except BaseException:
            await self._cleanup()
            raise
        self.manager = manager
        if settings.mode != "firebase" and self._watch_interval > 0:
            self._watchdog = asyncio.create_task(self._watch(), name="peerchat-relay-watchdog")
        return manager

    async def _reach_relay(self) -> None:
        """Make sure an emulator answers in the emulator modes (starting the embedded one if needed)."""
        settings = self.settings
        if settings.mode == "firebase":
            return
        host, port = self._address
        probe = await probe_relay(host, port)
        if probe.ok:
            return
        if settings.mode == "emulator":
            if probe.what.startswith("nothing"):
                why = probe.what.removeprefix("nothing answers ").strip("()")
                raise RelayGoneError(
                    f"no emulator answers at {host}:{port} ({why}). Start one with `peerchat emulator "
                    f"--port {port}` or fix --emulator / FIREBASE_DATABASE_EMULATOR_HOST"
                )
            raise RelayGoneError(f"{probe.problem(host, port)}. Point --emulator (or "
                                 "FIREBASE_DATABASE_EMULATOR_HOST) at a Realtime Database emulator")
        if not probe.what.startswith("nothing"):
            raise RelayGoneError(f"{probe.problem(host, port)}, where the embedded emulator should run. "
                                 "Stop that server, or run peerchat with --emulator HOST:PORT")
        await self._start_emulator()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self.manager is not None:
            manager, self.manager = self.manager, None
            with contextlib.suppress(PeerchatError):
                await manager.stop()
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._firebase_app is not None:
            import firebase_admin

            app, self._firebase_app = self._firebase_app, None
            await asyncio.to_thread(firebase_admin.delete_app, app)
        if self._emulator is not None:
            emulator, self._emulator = self._emulator, None
            await emulator.stop()

    def _init_firebase(self) -> Any:
        import firebase_admin
        from firebase_admin import credentials

        settings = self.settings
        credential = None
        if settings.mode == "firebase" and settings.credentials is not None:
            try:
                credential = credentials.Certificate(str(settings.credentials))
            except (ValueError, OSError) as exc:
                raise PeerchatError(
                    f"the credentials file {settings.credentials} is not a service-account JSON ({exc}). "
                    "Download one from the Firebase console: Project settings > Service accounts"
                ) from exc
        url = settings.relay_url
        if settings.mode != "firebase":
            host, port = self._address
            url = f"http://{host}:{port}?ns={settings.namespace}"
        options = {"databaseURL": url, "databaseAuthVariableOverride": {"uid": settings.user}}
        name = f"peerchat-{settings.device_id}-{uuid.uuid4().hex[:8]}"
        return firebase_admin.initialize_app(credential, options, name=name)

    async def _start_emulator(self) -> None:
        from emulator import Emulator

        host, port = self._address
        try:
            rules = rules_file()
        except RulesMissingError as exc:
            raise RelayGoneError(f"cannot start the embedded emulator: {exc}") from None
        emulator = Emulator(host=host, port=port, rules=rules)
        try:
            await emulator.start()
        except OSError as exc:
            raise RelayGoneError(
                f"cannot start the embedded emulator on {host}:{port} ({exc.strerror or exc}); something else "
                "holds the port. Stop it, or use --emulator HOST:PORT"
            ) from exc
        self._emulator = emulator

    async def _watch(self) -> None:
        """Check the relay now and then; restart the embedded emulator when it went away."""
        host, port = self._address
        healthy = True
        while True:
            await asyncio.sleep(self._watch_interval)
            if await relay_answers(host, port):
                if not healthy:
                    healthy = True
                    self._on_relay_status(f"The relay at {host}:{port} is back.", True)
                continue
            if healthy:
                healthy = False
                if self.settings.mode == "embedded":
                    try:
                        if self._emulator is not None:
                            await self._emulator.stop()
                            self._emulator = None
                        await self._start_emulator()
                    except (PeerchatError, OSError) as exc:
                        self._on_relay_status(f"The relay is gone and could not be restarted: {exc}", False)
                    else:
                        healthy = True
                        self._on_relay_status(f"The embedded emulator stopped; restarted it on {host}:{port}.", True)
                else:
                    self._on_relay_status(
                        f"The relay at {host}:{port} stopped answering. Restart it (peerchat emulator --port {port}).",
                        False,
                    )
