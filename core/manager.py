"""The top of ``core``: :class:`FirebasePeerConnectionManager`, which wires presence, the relay and the upgrade
together. With :mod:`core.links` it is the one place that knows :mod:`core.relay`, :mod:`core.webrtc` and
:mod:`core.direct`; everything below it is
handed what it needs (a connection gets the database, the options, its own id and a close callback).

How the data is laid out in the database is in :mod:`core.relay.connection` and ``docs/relay-layout.md``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pyee.asyncio import AsyncIOEventEmitter

from . import events as ev
from ._tasks import emit_safely
from .errors import (
    ClosedError,
    ConnectError,
    ConnectionDeclinedError,
    HandshakeError,
    PeerchatError,
    PeerKeyChangedError,
    PeerNotVerifiedError,
    PeerOfflineError,
    PeerTimeoutError,
    PeerVersionError,
)
from .link import Upgrader
from .options import ManagerOptions
from .peer import ConnectionRequest, DeviceStatus, PeerConnectionManager, PeerInfo
from .protocol.handshake import InitiatorHandshake, ResponderHandshake, SessionKeys, refusal, version_refusal
from .protocol.identity import Trust, comparison_code, fingerprint, key_text
from .protocol.negotiation import NegotiationIgnored, make_request, new_session_id, read_request
from .protocol.presence import PresenceView, RelayHealth, peer_from_record
from .protocol.sealing import FrameSealer
from .protocol.records import (
    heartbeat_record,
    negotiation_path,
    presence_path,
    session_path,
    valid_id,
    valid_label,
)
from .relay.connection import RelayConnection
from .relay.firebase import Database, Listener, apply_event
from .relay.heartbeat import Heartbeat
from .links import link_upgrader
from .trust.store import KeyStore, MemoryKeyStore

if TYPE_CHECKING:
    import firebase_admin

log = logging.getLogger(__name__)

AcceptCallback = Callable[[ConnectionRequest], "bool | Awaitable[bool]"]

_REFUSALS = {
    "key-changed": "{label} refused the session: it remembers another key for this device. If this device was "
    "reinstalled, forget it on {label} and try again.",
    "unverified": "{label} refused the session: it only accepts devices verified with the comparison code.",
    "busy": "{label} refused the session.",
    "outdated": "{label} refused the session: it runs a newer peerchat than this device. Update peerchat here.",
    "too-new": "{label} refused the session: it runs an older peerchat than this device. Update peerchat on "
               "{label}.",
    "refused": "{label} refused the session.",
}


class _MState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class FirebasePeerConnectionManager(PeerConnectionManager):
    # Seal relay frames (always; a subclass in benchmarks/relay.py turns it off to measure what sealing costs).
    _seal_relay = True

    """Presence and relay connections for one device of ``user_id``, through the Realtime Database.

    Args:
        user_id: the user (``auth.uid`` of the app; the rules only allow that user's data).
        device: this device (its id is the key under ``presence/{user_id}``).
        app: a firebase_admin App initialised with ``databaseAuthVariableOverride={'uid': user_id}``
            (None: the default app).
        options: time-outs and limits.
        accept: asked about every incoming session once its handshake proved the other device's key: a plain or
            async callable given a :class:`~core.peer.ConnectionRequest`, returning True (open it) or False
            (decline it). Nothing reaches the application before it said yes; if the other device gives up
            meanwhile, an async callable is cancelled. None: every device whose key has not changed is accepted.
        upgrader: run on every new connection before it is handed out. None (the default): the direct link and
            WebRTC tried together, :func:`core.links.link_upgrader` for ``options`` (a side with either turned off
            tells the other at once). Pass another upgrader to override it.
        keys: this device's identity and the devices it trusts. None: a :class:`~core.trust.store.MemoryKeyStore`
            (a new identity for this manager; nothing remembered after it). Apps pass a
            :class:`~core.trust.store.FileKeyStore`.

    Every session is end-to-end encrypted: a key exchange bound to both devices' identity keys
    (:mod:`core.protocol.handshake`) opens it, and every frame on the relay is sealed (:mod:`core.protocol.sealing`).
    """

    def __init__(
        self,
        user_id: str,
        device: PeerInfo,
        *,
        app: firebase_admin.App | None = None,
        options: ManagerOptions | None = None,
        accept: AcceptCallback | None = None,
        upgrader: Upgrader | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        if not valid_id(user_id):
            raise ValueError(f"invalid user id {user_id!r}: use 1-64 letters, digits or _ : @ + = ~ -")
        if not isinstance(device, PeerInfo) or not valid_id(device.id):
            raise ValueError(f"invalid device id {getattr(device, 'id', device)!r}")
        if not valid_label(device.label):
            raise ValueError(f"invalid device label {device.label!r}: 1 to 100 characters")
        self.events = AsyncIOEventEmitter()
        self.user_id = user_id
        self._device = device
        self._app = app
        self.options = options or ManagerOptions()
        if upgrader is None:
            upgrader = link_upgrader(self.options)
        self.upgrader: Upgrader = upgrader
        self.accept = accept
        self.keys: KeyStore = keys if keys is not None else MemoryKeyStore()
        self._identity = self.keys.identity()
        self._db: Database | None = None  # set by start()
        self._state = _MState.NEW
        self._view = PresenceView(device.id, self.options.heartbeat_interval * self.options.presence_misses)
        self._presence_tree: Any = None
        self._heartbeat: Heartbeat | None = None
        self._health = RelayHealth(failures=2)
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._connections: dict[str, RelayConnection] = {}
        self._seen_sessions: set[str] = set()
        self._offline_waiters: dict[str, list[asyncio.Future[None]]] = {}

    @property
    def device(self) -> PeerInfo:
        return self._device

    @property
    def connections(self) -> tuple[RelayConnection, ...]:
        return tuple(self._connections.values())

    @property
    def fingerprint(self) -> str:
        """This device's key fingerprint (what its other devices show for it)."""
        return self._identity.fingerprint

    @property
    def public_key(self) -> str:
        """This device's identity key, base64."""
        return self._identity.public_text

    def trust_of(self, device_id: str, key: str | None = None) -> Trust:
        """How far ``device_id`` is trusted when it presents ``key`` (None: the key its presence record shows):
        "verified", "trusted", "new" or "key-changed"."""
        if key is None:
            key = next((s.key for s in self._view.known if s.info.id == device_id), None)
            if key is None:
                known = self.keys.get(device_id)
                return "new" if known is None else ("verified" if known.verified else "trusted")
        return self.keys.trust(device_id, key)

    def comparison_code(self, key: str) -> str:
        """The code this device and the device with identity ``key`` both show (see ``verify_device``)."""
        return comparison_code(self._identity.public, key)

    def verify_device(self, device_id: str, key: str, label: str = "") -> None:
        """Mark ``device_id`` with ``key`` verified: a person saw the same comparison code on both devices.

        Raises:
            ValueError: another key is remembered for it (forget it first), or the id or key is malformed.
        """
        self.keys.verify(device_id, key, label)

    def forget_device(self, device_id: str) -> bool:
        """Forget the key remembered for ``device_id``; its next session is "new" again. False if none was."""
        return self.keys.forget(device_id)

    @property
    def relay_available(self) -> bool:
        """False from a ``relay_unavailable`` event until the following ``relay_restored``: this device's heartbeat
        writes or presence and negotiation subscriptions keep failing (the manager keeps retrying)."""
        return self._health.available

    @property
    def clock_offset(self) -> float | None:
        """Estimated server clock minus local clock, in seconds."""
        return self._view.offset

    # ---------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Announce this device and start listening.

        Raises:
            PermissionDeniedError: the rules refused (wrong user id or rules).
            RelayUnavailableError: the database cannot be reached.
            ClosedError: the manager was stopped (make a new one).
        """
        if self._state == _MState.STARTED:
            return
        if self._state == _MState.STOPPED:
            raise ClosedError("This manager was stopped; create a new one.")
        opts = self.options
        self._db = Database(self._app, silence_timeout=opts.listener_silence_timeout)
        try:
            self._heartbeat = Heartbeat(
                self._write_heartbeat, self._device.label, opts.heartbeat_interval,
                on_error=lambda exc: self._relay_failed("heartbeat", exc),
                on_success=lambda: self._relay_succeeded("heartbeat"),
                key=self._identity.public_text,
            )
            await self._heartbeat.beat()
            for source, path, handler in (
                ("presence listener", presence_path(self.user_id), self._on_presence),
                ("negotiation listener", negotiation_path(self.user_id, self._device.id), self._on_negotiation),
            ):
                self._listeners.append(await self._database().listen(
                    path, handler,
                    on_error=lambda exc, source=source: self._relay_failed(source, exc),
                    on_subscribed=lambda source=source: self._relay_succeeded(source),
                ))
        except BaseException:
            await self._database().close()
            raise
        self._heartbeat.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresh_presence(), name="presence-refresh"))
        self._state = _MState.STARTED

    async def stop(self) -> None:
        """Disconnect every connection, show this device offline at once, stop listening. Safe to call twice."""
        if self._state != _MState.STARTED:
            self._state = _MState.STOPPED
            return
        self._state = _MState.STOPPED
        await asyncio.gather(*(c.disconnect() for c in list(self._connections.values())), return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        for listener in self._listeners:
            await listener.close()
        try:
            if self.options.leave_presence:
                await self._database().set(
                    presence_path(self.user_id, self._device.id),
                    heartbeat_record(self._device.label, online=False, key=self._identity.public_text),
                )
            else:
                await self._database().delete(presence_path(self.user_id, self._device.id))
        except PeerchatError as exc:
            log.warning("could not mark this device offline: %s", exc)
        await self._database().close()

    def _check_started(self) -> None:
        if self._state != _MState.STARTED:
            raise ClosedError(
                "The connection manager is not running: call start() (or use `async with`) first."
                if self._state == _MState.NEW
                else "The connection manager was stopped; create a new one."
            )

    # ----------------------------------------------------------------------------------------- relay health
    def _relay_failed(self, source: str, error: BaseException) -> None:
        if self._state != _MState.STARTED:
            return
        down = self._health.failure(source, error, time.time())
        if down is not None:
            log.warning("relay unavailable: %s", down.reason)
            emit_safely(self.events, ev.RELAY_UNAVAILABLE, down)

    def _relay_succeeded(self, source: str) -> None:
        if self._state != _MState.STARTED:
            return
        up = self._health.success(source, time.time())
        if up is not None:
            log.info("relay restored after %.1f s", up.duration)
            emit_safely(self.events, ev.RELAY_RESTORED, up)

    # ------------------------------------------------------------------------------------------------ presence
    async def _write_heartbeat(self, record: dict[str, Any]) -> None:
        await self._database().set(presence_path(self.user_id, self._device.id), record)

    def _on_presence(self, kind: str, path: str, data: Any) -> None:
        self._presence_tree = apply_event(self._presence_tree, kind, path, data)
        if self._view.update(self._presence_tree, time.time()):
            self._peers_changed()

    async def _refresh_presence(self) -> None:
        interval = min(max(self.options.heartbeat_interval / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(interval)
            if self._view.refresh(time.time()):
                self._peers_changed()

    def _peers_changed(self) -> None:
        online = {p.id for p in self._view.online}
        for peer_id in [p for p in self._offline_waiters if p not in online]:
            for fut in self._offline_waiters.pop(peer_id):
                if not fut.done():
                    fut.set_result(None)
        emit_safely(self.events, ev.PEERS_CHANGED, ev.PeersChanged(self._view.online, self._view.known))

    async def get_online_peers(self) -> list[PeerInfo]:
        self._check_started()
        self._view.refresh(time.time())
        return list(self._view.online)

    async def get_known_peers(self) -> list[DeviceStatus]:
        """Every other device of this user with a presence record, online or not, sorted by id; ``last_seen`` is
        its last heartbeat on this machine's clock. Cheap: read from the live local view.

        Raises:
            ClosedError: the manager is not running.
        """
        self._check_started()
        self._view.refresh(time.time())
        return list(self._view.known)

    async def forget_peer(self, peer_id: str) -> None:
        """Remove the presence record of the offline device ``peer_id``, so that no device lists it any more (it
        appears again when it next comes online).

        Raises:
            ClosedError: the manager is not running.
            ConnectError: ``peer_id`` is this device or online now (only a device that is gone can be forgotten).
            RelayError: the relay refused or could not be reached.
        """
        self._check_started()
        self._view.refresh(time.time())
        if peer_id == self._device.id or any(peer.id == peer_id for peer in self._view.online):
            raise ConnectError(f"{peer_id} is online (or is this device): only an offline device can be forgotten.")
        await self._database().delete(presence_path(self.user_id, peer_id))  # the presence listener hears it

    async def _peer_for(self, device_id: str) -> PeerInfo:
        """The device ``device_id`` as presence names it. A device that connects right after coming online can
        be faster than its presence reaching this device's listener, so when the live view does not have it,
        its record is read once; its id stands in for the label only if that fails too."""
        peer = self._view.get(device_id)
        if peer is not None:
            return peer
        try:
            peer = peer_from_record(device_id, await self._database().get(presence_path(self.user_id, device_id)))
        except PeerchatError as exc:
            log.info("could not read the presence of %s: %s", device_id, exc)
        if peer is None:
            peer = next((s.info for s in self._view.known if s.info.id == device_id), None)
        return peer or PeerInfo(device_id, device_id)

    # ------------------------------------------------------------------------------------------------ connecting
    async def connect_to_peer(self, peer_id: str, *, confirm_data_receival: bool = False) -> RelayConnection:
        """Open an end-to-end encrypted session with one of this user's online devices; returns once the other
        side accepted it.

        Raises:
            PeerOfflineError: the device is unknown or offline (at once), or went offline while connecting.
            PeerTimeoutError: it did not answer within ``options.connect_timeout``, or did not accept within
                ``options.accept_timeout`` (a ``slow`` event on the manager says so after ``options.slow_after``).
            ConnectionDeclinedError: it declined (with its reason), or refused this device's key.
            PeerKeyChangedError: it proved another key than the one remembered for it (nothing was sent).
            PeerNotVerifiedError: ``options.require_verified`` is on and it is not verified.
            HandshakeError: its answer was forged or broken.
            PermissionDeniedError, RelayUnavailableError: the relay refused or cannot be reached.
        """
        self._check_started()
        if not isinstance(peer_id, str):
            raise TypeError(f"peer_id must be a device id string, not {type(peer_id).__name__}")
        if peer_id == self._device.id:
            raise ValueError("A device cannot connect to itself.")
        self._view.refresh(time.time())
        peer = self._view.get(peer_id) if valid_id(peer_id) else None
        if peer is None:
            raise PeerOfflineError(
                f"The device {peer_id!r} is not online (or not known to this user). Start peerchat on it and try again."
            )
        opts = self.options
        session_id = new_session_id()
        handshake = InitiatorHandshake(
            self._identity, user_id=self.user_id, session_id=session_id, own_id=self._device.id, peer_id=peer_id
        )
        conn = self._new_connection(peer, session_id, initiator=True, confirm_data_receival=confirm_data_receival)
        offline: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offline_waiters.setdefault(peer_id, []).append(offline)
        self._seen_sessions.add(session_id)
        waiting = "answer to the connection request"
        try:
            async with asyncio.timeout(opts.connect_timeout):
                await conn.open()
                await self._database().set(
                    negotiation_path(self.user_id, peer_id), make_request(self._device.id, session_id, handshake.hello())
                )
                answer = await self._first(conn.handshake, offline, peer)
                refused = handshake.refused(answer)
                if refused is not None:
                    raise ConnectionDeclinedError(_REFUSALS[refused].format(label=peer.label), label=peer.label)
                confirm, keys = handshake.on_answer(answer)
                assert handshake.peer_key is not None
                key = key_text(handshake.peer_key)
                trust = self._check_trust(peer, key)
                conn.set_sealer(self._sealer(keys, session_id, peer_id))
                await conn.write_handshake(confirm)
            waiting = "acceptance of the session"
            emit_safely(self.events, ev.AWAITING_ACCEPT, ev.AwaitingAccept(peer, session_id, opts.accept_timeout))
            async with asyncio.timeout(opts.accept_timeout):
                await self._first(conn.accepted, offline, peer, slow=f"{peer.label} to accept the session")
            if trust == "new":
                self.keys.remember(peer_id, key, peer.label)
            conn.start_running()
            self._connections[session_id] = conn
        except BaseException as exc:
            await self._abandon(conn, peer_id)
            if isinstance(exc, TimeoutError):
                seconds = opts.connect_timeout if waiting.startswith("answer") else opts.accept_timeout
                raise PeerTimeoutError(
                    f"{peer.label} did not answer within {seconds:g} s. "
                    "Check that peerchat runs there and can reach the database."
                    if waiting.startswith("answer")
                    else f"{peer.label} did not accept the session within {seconds:g} s.",
                    what=waiting,
                    seconds=seconds,
                ) from None
            raise
        finally:
            waiters = self._offline_waiters.get(peer_id, [])
            if offline in waiters:
                waiters.remove(offline)
            if not waiters:
                self._offline_waiters.pop(peer_id, None)
        await self._upgrade(conn)
        conn.hand_out()
        return conn

    async def _first(
        self, wanted: asyncio.Future[Any], offline: asyncio.Future[None], peer: PeerInfo, *, slow: str | None = None
    ) -> Any:
        """Wait for ``wanted``; raise PeerOfflineError if ``peer`` goes offline first. With ``slow``, a ``slow``
        event on the manager after ``options.slow_after`` (and ``recovered`` when the wait ends)."""
        timer = None
        if slow is not None:
            started = time.monotonic()
            payload = ev.Slow(slow, self.options.slow_after, self.options.accept_timeout)
            timer = asyncio.get_running_loop().call_later(
                self.options.slow_after, lambda: emit_safely(self.events, ev.SLOW, payload)
            )
        try:
            done, _ = await asyncio.wait({wanted, offline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
                if time.monotonic() - started >= self.options.slow_after:
                    emit_safely(self.events, ev.RECOVERED, ev.Recovered(slow))
        if wanted not in done:
            raise PeerOfflineError(f"{peer.label} went offline while connecting. Try again when it is back.")
        return wanted.result()

    def _check_trust(self, peer: PeerInfo, key: str) -> Trust:
        """The trust of ``peer`` proving ``key``; raises when the session must not open."""
        trust = self.keys.trust(peer.id, key)
        if trust == "key-changed":
            known = self.keys.get(peer.id)
            remembered = known.fingerprint if known is not None else "?"
            emit_safely(self.events, ev.PEER_KEY_CHANGED, ev.PeerKeyChanged(peer, remembered, fingerprint(key)))
            raise PeerKeyChangedError(
                f"The key of {peer.label} changed (it was {remembered}, now {fingerprint(key)}): the session was "
                "refused. If it was reinstalled, check its fingerprint on it and forget the old key "
                f"(peerchat devices forget {peer.id}); otherwise someone may be impersonating it.",
                device_id=peer.id, label=peer.label, remembered=remembered, presented=fingerprint(key),
            )
        if self.options.require_verified and trust != "verified":
            raise PeerNotVerifiedError(
                f"{peer.label} is not verified, and only verified devices may open sessions. Compare the code on "
                f"both devices (peerchat devices verify {peer.id}) first.",
                device_id=peer.id, label=peer.label,
            )
        return trust

    async def _abandon(self, conn: RelayConnection, peer_id: str) -> None:
        """A connection attempt failed: stop its tasks and remove what it wrote."""
        await conn.abandon()
        try:
            current = await self._database().get(negotiation_path(self.user_id, peer_id))
            if isinstance(current, dict) and current.get("sessionId") == conn.session_id:
                await self._database().delete(negotiation_path(self.user_id, peer_id))
        except PeerchatError:
            pass

    async def _upgrade(self, conn: RelayConnection) -> None:
        try:
            await self.upgrader(conn)
        except Exception as exc:  # noqa: BLE001 - the relay keeps working
            log.info("upgrade of %s failed: %s", conn.session_id, exc)
            conn.report_upgrade_failure(exc)

    def _on_negotiation(self, kind: str, path: str, data: Any) -> None:
        if self._state != _MState.STARTED or path != "/":
            # Partial writes never come from core (it writes whole values); the next whole value is used.
            return
        if data is None:
            return
        try:
            request = read_request(
                data,
                own_id=self._device.id,
                server_now=self._view.server_now(time.time()),
                max_age=self.options.negotiation_max_age,
            )
        except NegotiationIgnored as exc:
            log.info("negotiation ignored: %s", exc)
            self._spawn(self._clear_negotiation(data))
            return
        if request.session_id in self._seen_sessions:
            return
        self._seen_sessions.add(request.session_id)
        self._spawn(self._accept(request.initiator, request.session_id, request.hello, data))

    def _spawn(self, coro: Awaitable[None]) -> None:
        """Run a background step of this manager (cancelled by stop())."""
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _clear_negotiation(self, value: Any) -> None:
        """Delete a negotiation value we handled, unless a newer one replaced it meanwhile."""
        path = negotiation_path(self.user_id, self._device.id)
        try:
            if await self._database().get(path) == value:
                await self._database().delete(path)
        except PeerchatError as exc:
            log.info("could not clear the negotiation: %s", exc)

    async def _accept(self, initiator: str, session_id: str, hello: str, value: Any) -> None:
        """Answer a session request: the handshake, the trust check, the ``accept`` callable, then hand-out."""
        conn: RelayConnection | None = None
        opts = self.options
        try:
            async with asyncio.timeout(opts.connect_timeout):
                peer = await self._peer_for(initiator)
                try:
                    handshake = ResponderHandshake(
                        self._identity, hello, user_id=self.user_id, session_id=session_id,
                        own_id=self._device.id, peer_id=initiator,
                    )
                except PeerVersionError as exc:  # say why, so the requester can tell its person which to update
                    log.warning("refused a session from %s: %s", initiator, exc)
                    conn = self._new_connection(peer, session_id, initiator=False, confirm_data_receival=False)
                    await conn.open()
                    self._spawn(self._clear_negotiation(value))
                    await conn.write_handshake(version_refusal(exc))
                    await self._leave(conn)
                    return
                key = key_text(handshake.peer_key)
                conn = self._new_connection(peer, session_id, initiator=False, confirm_data_receival=False)
                await conn.open()
                self._spawn(self._clear_negotiation(value))
                try:
                    trust = self._check_trust(peer, key)
                except (PeerKeyChangedError, PeerNotVerifiedError) as exc:
                    log.warning("refused a session from %s: %s", initiator, exc)
                    reason = "key-changed" if isinstance(exc, PeerKeyChangedError) else "unverified"
                    await conn.write_handshake(refusal(reason))
                    await self._leave(conn)
                    return
                await conn.write_handshake(handshake.answer())
                keys = handshake.on_confirm(await conn.handshake)
                conn.set_sealer(self._sealer(keys, session_id, initiator))
        except (PeerchatError, TimeoutError) as exc:
            level = logging.WARNING if isinstance(exc, HandshakeError) else logging.INFO
            log.log(level, "could not answer a session request from %s: %s", initiator, exc)
            if conn is not None:
                await conn.abandon()
            return
        request = ConnectionRequest(peer, trust, fingerprint(key), key, session_id)
        accepted = await self._ask(request, conn)
        if accepted is None:  # the other side gave up, or nobody answered in time
            await conn.abandon()
            return
        if not accepted:
            await conn.refuse()
            return
        if trust == "new":
            self.keys.remember(initiator, key, peer.label)
        conn.accept()
        conn.start_running()
        self._connections[session_id] = conn
        await self._upgrade(conn)
        if conn.is_closed:
            return
        emit_safely(self.events, ev.INCOMING_CONNECTION, ev.IncomingConnection(conn))
        conn.hand_out()

    async def _ask(self, request: ConnectionRequest, conn: RelayConnection) -> bool | None:
        """The ``accept`` callable's answer; None when the requester gave up (deleted the session) or
        ``options.accept_timeout`` passed first (an async callable is cancelled then)."""
        if self.accept is None:
            return True
        try:
            answer = self.accept(request)
        except Exception:  # noqa: BLE001 - a failing callable declines
            log.exception("the accept callable failed; declining")
            return False
        if not inspect.isawaitable(answer):
            return bool(answer)
        task = asyncio.ensure_future(answer)
        try:
            done, _ = await asyncio.wait({task, conn.peer_left}, timeout=self.options.accept_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task not in done:
            log.info("session request from %s withdrawn or unanswered", request.peer.label)
            return None
        try:
            return bool(task.result())
        except Exception:  # noqa: BLE001
            log.exception("the accept callable failed; declining")
            return False

    async def _leave(self, conn: RelayConnection) -> None:
        """After a refusal in the handshake: give the requester time to read it (it deletes the session), then go."""
        try:
            async with asyncio.timeout(self.options.close_timeout):
                await asyncio.shield(conn.peer_left)
        except TimeoutError:
            pass
        await conn.abandon()

    def _sealer(self, keys: SessionKeys, session_id: str, peer_id: str) -> FrameSealer:
        opts = self.options
        return FrameSealer(
            keys, session_id=session_id, own_id=self._device.id, peer_id=peer_id,
            compress=opts.relay_compression, relay_frame_chars=opts.relay_frame_bytes,
        )

    def _new_connection(
        self, peer: PeerInfo, session_id: str, *, initiator: bool, confirm_data_receival: bool
    ) -> RelayConnection:
        return RelayConnection(
            self._database(), self.options, self._device.id, peer, session_id, session_path(self.user_id, session_id),
            initiator=initiator, confirm_data_receival=confirm_data_receival, on_closed=self._connection_closed,
            sealed=self._seal_relay,
        )

    def _database(self) -> Database:
        if self._db is None:
            raise ClosedError("The connection manager is not running: call start() (or use `async with`) first.")
        return self._db

    def _connection_closed(self, conn: RelayConnection, payload: ev.ConnectionClosed) -> None:
        if self._connections.pop(conn.session_id, None) is not None:
            emit_safely(self.events, ev.CONNECTION_CLOSED, payload)
