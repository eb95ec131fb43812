"""Relay connections over the Realtime Database: :class:`FirebasePeerConnectionManager` and :class:`RelayConnection`.

Data layout (``{uid}`` is ``auth.uid``; every path is scoped by it so the security rules can check it)::

    presence/{uid}/{deviceId}                          {label, lastSeen: <server ms>, online}      core.presence
    relay/negotiation/{uid}/{targetDeviceId}           {initiator, sessionId, updatedWhen}         core.negotiation
    relay/sessions/{uid}/{sessionId}/{deviceId}/       the INBOX of deviceId in that session:
        messages/{key}                                   {kind, seq, data?, confirm?, updatedWhen}  frames FOR it
        acknowledgement                                  {peerId, seq, updatedWhen}       the peer's cumulative ack
                                                                                          of what deviceId SENT

The request's ``relay/session/messages/{sessionId}`` and ``relay/session/acknowledgements/{sessionId}`` became one
inbox per device and session, so that each side listens to exactly one path and never receives its own writes
back. A message key is ``s`` + the sequence number in 10 digits for sequenced frames (``s0000000042``),
``ping``/``pong`` + the probe number for latency probes: a retransmission rewrites the same key, so it costs no
space. The frame format and the reliable stream are in :mod:`core.session`; binary data travels base64-encoded in
``data`` (``kind: "binary"``), WebRTC signalling as JSON text in ``data`` (``kind: "signal"``).

Efficiency: a connection's writer sends ONE multi-path ``update()`` at the session root per round: all frames
queued meanwhile, the latest acknowledgement (one small value, overwritten), and the deletion of every message this
side already processed from its own inbox (the receiver trims, so the inbox stays small). While one update is in
flight the next batch builds up, so a busy connection needs few requests. A session's whole subtree is deleted
when it ends (by both sides: deletes are idempotent).

Opening: the initiator listens to its inbox, then writes the negotiation value. The target validates it (fresh,
well-formed), listens to its own inbox and answers with its first acknowledgement (``seq: 0``) in the initiator's
inbox; that answer is what ``connect_to_peer`` waits for. Before ``incoming_connection`` fires and before
``connect_to_peer`` returns, an optional *upgrader* runs (the WebRTC upgrade plugs in there).

Links: the relay is always there. Another link (a WebRTC data channel) can be attached with
:meth:`RelayConnection.attach_link`; frames then go over it, and every unacknowledged frame is written on it again;
:meth:`RelayConnection.detach_link` falls back to the relay the same way. Frames from any link go to
:meth:`RelayConnection.receive_frame`; the stream drops duplicates, so nothing is lost or repeated across a switch.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import enum
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import firebase_admin
from pyee.asyncio import AsyncIOEventEmitter

from . import events as ev
from ._tasks import cancel_and_wait
from .errors import (
    ClosedError,
    ConnectionClosedError,
    ConnectionDeclinedError,
    MessageTooLargeError,
    PeerchatError,
    PeerOfflineError,
    PeerTimeoutError,
    ProtocolError,
    RelayError,
    RelayUnavailableError,
)
from .events import Transport
from .firebase import Database, Listener, apply_event
from .negotiation import NegotiationIgnored, make_request, new_session_id, read_request
from .options import ManagerOptions
from .peer import MAX_DECLINE_REASON, DeviceStatus, PeerConnection, PeerConnectionManager, PeerInfo
from .presence import (
    SERVER_TIMESTAMP,
    Heartbeat,
    PresenceView,
    RelayHealth,
    heartbeat_record,
    peer_from_record,
    valid_id,
    valid_label,
)
from .session import (
    DECLINED,
    SEQUENCED_KINDS,
    Acked,
    BadFrame,
    Broken,
    Deliver,
    PeerGone,
    ReliableStream,
    RttMeasured,
    SlowEnded,
    SlowStarted,
    StreamTimers,
    WriteFrame,
)

log = logging.getLogger(__name__)

Upgrader = Callable[["RelayConnection"], Awaitable[None]]
"""``await upgrader(connection)`` runs once per new connection, on both sides, before it is handed out.
``connection.is_initiator`` says which side this is. An exception becomes the connection's ``upgrade_failure`` and
an ``upgrade_failed`` event (emitted right after the connection is handed out); the connection keeps working over
the relay."""

# A relay update carries at most this many bytes of frames; larger batches are split.
MAX_BATCH_BYTES = 2 * 1024 * 1024


def presence_path(uid: str, device_id: str | None = None) -> str:
    return f"presence/{uid}" + (f"/{device_id}" if device_id else "")


def negotiation_path(uid: str, device_id: str) -> str:
    return f"relay/negotiation/{uid}/{device_id}"


def session_path(uid: str, session_id: str) -> str:
    return f"relay/sessions/{uid}/{session_id}"


def message_key(frame: dict[str, Any]) -> str:
    """The key a frame is stored under in the receiver's inbox."""
    kind, seq = frame["kind"], frame["seq"]
    prefix = "s" if kind in SEQUENCED_KINDS else kind
    return f"{prefix}{seq:010d}"


def _emit(emitter: AsyncIOEventEmitter, name: str, payload: object) -> None:
    """Emit without letting a consumer's failing handler break the protocol."""
    try:
        emitter.emit(name, payload)
    except Exception:  # noqa: BLE001
        log.exception("a %r event handler failed", name)


# ---------------------------------------------------------------------------------------------------------- links
class Link(abc.ABC):
    """A link other than the relay that carries this connection's frames (a WebRTC data channel).

    The link calls :meth:`RelayConnection.receive_frame` for every frame that arrives, and
    :meth:`RelayConnection.detach_link` when it fails. Frames are the small dicts of :mod:`core.session`.
    """

    transport: Transport

    @abc.abstractmethod
    def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the peer without blocking; raise (any exception) if the link is broken."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the link (the connection calls it when it detaches the link or closes)."""


class _RelayWriter:
    """The relay side of a connection: batches frames, the acknowledgement and inbox trims into updates."""

    def __init__(self, conn: RelayConnection) -> None:
        self._conn = conn
        self._frames: dict[str, dict[str, Any]] = {}
        self._ack: int | None = None
        self._trims: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.requests = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay-writer {self._conn.session_id}")

    def send_frame(self, frame: dict[str, Any]) -> None:
        if frame["kind"] == "ack":
            self._ack = frame["seq"] if self._ack is None else max(self._ack, frame["seq"])
        else:
            self._frames[message_key(frame)] = frame
        self._kick()

    def trim(self, key: str) -> None:
        self._trims.add(key)
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far was written (or the writer stopped)."""
        if self._task is None or self._task.done():
            return
        await self._idle.wait()

    def _take_batch(self) -> tuple[dict[str, Any], list[int]]:
        conn = self._conn
        payload: dict[str, Any] = {}
        seqs: list[int] = []
        size = 0
        for key in list(self._frames):
            frame = self._frames[key]
            cost = len(frame.get("data", "")) + 100
            if payload and size + cost > MAX_BATCH_BYTES:
                break
            del self._frames[key]
            size += cost
            payload[f"{conn.peer.id}/messages/{key}"] = {**frame, "updatedWhen": SERVER_TIMESTAMP}
            if frame["kind"] in SEQUENCED_KINDS:
                seqs.append(frame["seq"])
        if self._ack is not None:
            payload[f"{conn.peer.id}/acknowledgement"] = {
                "peerId": conn.own_id,
                "seq": self._ack,
                "updatedWhen": SERVER_TIMESTAMP,
            }
            self._ack = None
        for key in self._trims:
            payload[f"{conn.own_id}/messages/{key}"] = None
        self._trims = set()
        return payload, seqs

    def _put_back(self, payload: dict[str, Any]) -> None:
        conn = self._conn
        for path, value in payload.items():
            owner, _, rest = path.partition("/")
            if rest == "acknowledgement":
                self._ack = value["seq"] if self._ack is None else max(self._ack, value["seq"])
            elif owner == conn.own_id:
                self._trims.add(rest.rpartition("/")[2])
            else:
                key = rest.rpartition("/")[2]
                if key not in self._frames:  # a newer copy queued meanwhile wins
                    frame = {k: v for k, v in value.items() if k != "updatedWhen"}
                    self._frames[key] = frame

    async def _run(self) -> None:
        conn = self._conn
        backoff = 0.05
        while True:
            if not (self._frames or self._ack is not None or self._trims):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            payload, seqs = self._take_batch()
            try:
                await conn._db.update(conn._session_path, payload)
            except RelayUnavailableError as exc:
                # The relay is down (or restarting): keep everything and try again; the peer time-out decides
                # when to give up.
                self.failures += 1
                self._put_back(payload)
                conn._relay_trouble(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except PeerchatError as exc:
                # Refused (rules) or malformed: retrying cannot help.
                self._idle.set()
                conn._fail(exc)
                return
            backoff = 0.05
            self.requests += 1
            conn._relay_ok()
            conn._frames_written(seqs)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._idle.set()


class _State(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# ----------------------------------------------------------------------------------------------------- connection
class RelayConnection(PeerConnection):
    """A connection to one peer through the relay (and, once attached, another link). Made by the manager."""

    def __init__(
        self,
        manager: FirebasePeerConnectionManager,
        peer: PeerInfo,
        session_id: str,
        *,
        initiator: bool,
        confirm_data_receival: bool,
    ) -> None:
        self.events = AsyncIOEventEmitter()
        self._manager = manager
        self._db = manager._db
        self._options = manager.options
        self._peer = peer
        self._session_id = session_id
        self.own_id = manager.device.id
        self.is_initiator = initiator
        self.confirm_data_receival = confirm_data_receival
        self._session_path = session_path(manager.user_id, session_id)
        opts = self._options
        self._stream = ReliableStream(
            StreamTimers(
                window=opts.send_window,
                retransmit_interval=opts.retransmit_interval,
                ack_timeout=opts.ack_timeout,
                ping_interval=opts.ping_interval,
                slow_after=opts.slow_after,
                peer_timeout=opts.peer_timeout,
                ack_delay=opts.ack_delay,
                max_frame_bytes=opts.relay_frame_bytes,
                max_message_bytes=opts.max_message_bytes,
                window_bytes=opts.send_window_bytes,
            ),
            now=time.monotonic(),
        )
        self._writer = _RelayWriter(self)
        self._listener: Listener | None = None
        self._link: Link | None = None
        self._state = _State.OPENING
        self._accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The futures of messages not yet written, by the seq of their last frame (None while _send runs actions).
        self._written: dict[int, asyncio.Future[None] | None] = {}
        self._ack_waiters: dict[int, asyncio.Future[None]] = {}
        self._close_seq: int | None = None
        self._close_acked = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closing_task: asyncio.Task[None] | None = None
        self._closed_event = asyncio.Event()
        self._rtt: float | None = None
        self._signal_handler: Callable[[dict[str, Any]], None] | None = None
        self._early_signals: list[dict[str, Any]] = []
        self._signal_chain: asyncio.Future[None] | None = None
        # Until the consumer has the connection (incoming_connection emitted, connect_to_peer returned), data and
        # close frames are kept here in order, so that nothing is emitted before anyone can listen.
        self._held: list[Deliver] | None = []
        self._held_events: list[tuple[str, object]] = []
        self._upgrade_failure: ev.UpgradeFailed | None = None
        self._relay_down_since: float | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.close_reason: ev.CloseReason | None = None
        self.close_error: BaseException | None = None

    # ---------------------------------------------------------------------------------------------- public face
    @property
    def peer(self) -> PeerInfo:
        return self._peer

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def transport(self) -> Transport:
        return self._link.transport if self._link is not None else "relay"

    @property
    def rtt(self) -> float | None:
        return self._rtt

    @property
    def is_slow(self) -> bool:
        return bool(self._stream.slow)

    @property
    def upgrade_failure(self) -> ev.UpgradeFailed | None:
        """Why the last WebRTC upgrade attempt failed while the relay carries the data (None: no attempt failed, or
        a WebRTC link is attached now). Set before the connection is handed out when the first attempt fails; the
        ``upgrade_failed`` event for it is emitted right after hand-out."""
        return self._upgrade_failure if self._link is None else None

    @property
    def max_bytes_message(self) -> int:
        """The largest ``send_bytes()`` message that travels as ONE frame (on every link, and after a fallback to
        the relay): 3/4 of ``options.relay_frame_bytes`` (base64). Larger ones, up to ``options.max_message_bytes``,
        are split into several frames; the file transfer sizes its chunks by this."""
        return self._options.relay_frame_bytes // 4 * 3

    @property
    def is_closed(self) -> bool:
        return self._state in (_State.CLOSING, _State.CLOSED)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks: relay update requests, failed ones, frames in flight."""
        return {
            "relay_requests": self._writer.requests,
            "relay_failures": self._writer.failures,
            "in_flight": self._stream.in_flight,
            "queued": self._stream.queued,
        }

    async def send(self, data: str) -> None:
        """Send a string; see :class:`core.peer.PeerConnection`.

        A message longer than one relay frame (``options.relay_frame_bytes``) is sent as several frames and joined
        by the peer before its ``data`` event; with ``confirm_data_receival`` this returns once the peer's
        application has the whole message.

        Raises:
            TypeError: ``data`` is not a string.
            ValueError: ``data`` is not valid Unicode (a lone surrogate); nothing was written.
            MessageTooLargeError: over ``options.max_message_bytes`` UTF-8 bytes (nothing was written).
            PeerTimeoutError: with ``confirm_data_receival``, no confirmation within ``options.ack_timeout`` of the
                message's last frame being written.
            ConnectionClosedError: the connection closed before the message got through.
        """
        if not isinstance(data, str):
            raise TypeError(f"send() takes a str, not {type(data).__name__}; use send_bytes() for bytes")
        limit = self._options.max_message_bytes
        if len(data) * 4 > limit:  # otherwise it fits whatever its characters: no need to encode it
            try:
                size = len(data.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise ValueError(f"The message is not valid Unicode text ({exc.reason}); nothing was sent.") from None
            if size > limit:
                raise MessageTooLargeError(
                    f"The message is {size} bytes; at most {limit} fit one message. Split it, or send it as a file.",
                    size=size,
                    limit=limit,
                )
        await self._send("data", data)

    async def send_bytes(self, data: bytes) -> None:
        """Send bytes (base64 in ``binary`` frames over the relay); the peer gets a ``binary`` event.

        Raises the same errors as :meth:`send`; the limit is ``options.max_message_bytes`` bytes.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        size, limit = len(data), self._options.max_message_bytes
        if isinstance(data, memoryview):
            size = data.nbytes
        if size > limit:
            raise MessageTooLargeError(
                f"The data is {size} bytes; at most {limit} fit one message. Split it, or send it as a file.",
                size=size,
                limit=limit,
            )
        raw = bytes(data) if isinstance(data, memoryview) else data
        await self._send("binary", base64.b64encode(raw).decode("ascii"))

    async def disconnect(self) -> None:
        """Close: the peer sees ``peer-requested-closed`` after everything sent before. Safe to call twice."""
        if self._state == _State.CLOSED:
            return
        if self._closing_task is None:
            self._closing_task = asyncio.get_running_loop().create_task(self._disconnect())
        await asyncio.shield(self._closing_task)

    async def decline(self, reason: str | None = None) -> None:
        """Close telling the peer it was declined; see :meth:`core.peer.PeerConnection.decline`.

        The close frame carries ``data`` = ``"declined"``, or ``"declined\n<reason>"``.

        Raises:
            TypeError: ``reason`` is not a string (the connection stays open).
            ValueError: ``reason`` is over ``MAX_DECLINE_REASON`` characters (the connection stays open).
        """
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"decline() takes a str reason or None, not {type(reason).__name__}")
        if reason is not None and len(reason) > MAX_DECLINE_REASON:
            raise ValueError(f"A decline reason is at most {MAX_DECLINE_REASON} characters, not {len(reason)}.")
        if self._state == _State.CLOSED:
            return
        if self._closing_task is None:
            data = DECLINED if not reason else f"{DECLINED}\n{reason}"
            self._closing_task = asyncio.get_running_loop().create_task(self._disconnect(data))
        await asyncio.shield(self._closing_task)

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    # ------------------------------------------------------------------------------------ hooks for other links
    def attach_link(self, link: Link, reason: str = "upgraded") -> None:
        """Carry frames over ``link`` from now on; every unacknowledged frame is written on it again."""
        self._check_open()
        previous = self.transport
        old, self._link = self._link, link
        if old is not None and old is not link:
            old.close()
        now = time.monotonic()
        self._run(self._stream.resend_unacked(now))
        self._run(self._stream.set_window(self._options.webrtc_send_window, now))
        if link.transport != previous:
            _emit(self.events, ev.LINK_CHANGED, ev.LinkChanged(link.transport, previous, reason))

    def detach_link(self, link: Link, reason: str = "link failed") -> None:
        """Stop using ``link`` (it failed or closed); the relay carries frames again, unacknowledged ones first."""
        if self._link is not link:
            return
        self._link = None
        link.close()
        self._run(self._stream.set_window(self._options.send_window, time.monotonic()))  # shrinking releases none
        if self._state in (_State.OPEN, _State.CLOSING):
            self._run(self._stream.resend_unacked(time.monotonic()))
            if link.transport != "relay":
                _emit(self.events, ev.LINK_CHANGED, ev.LinkChanged("relay", link.transport, reason))

    def receive_frame(self, frame: object) -> None:
        """A frame arrived on any link (the relay calls this too)."""
        if self._state == _State.CLOSED:
            return
        self._run(self._stream.receive(frame, time.monotonic()))
        due = self._stream.ack_due
        if due is not None and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                max(0.0, due - time.monotonic()), self._flush_ack
            )

    def _flush_ack(self) -> None:
        self._ack_timer = None
        if self._state != _State.CLOSED:
            self._run(self._stream.flush_ack(time.monotonic()))
            due = self._stream.ack_due
            if due is not None:
                self._ack_timer = asyncio.get_running_loop().call_later(
                    max(0.0, due - time.monotonic()), self._flush_ack
                )

    async def send_signal(self, signal: dict[str, Any]) -> None:
        """Send a signalling message (a JSON object) to the peer's signal handler, reliably and in order."""
        if not isinstance(signal, dict):
            raise TypeError("a signal is a dict")
        text = json.dumps(signal, separators=(",", ":"))
        if len(text) > self._options.relay_frame_bytes:
            raise MessageTooLargeError(
                "The signalling message is too large for one relay frame.",
                size=len(text),
                limit=self._options.relay_frame_bytes,
            )
        await self._send("signal", text, confirm=False)

    def set_signal_handler(self, handler: Callable[[dict[str, Any]], Any] | None) -> None:
        """Receive the peer's signals, in order (signals that arrived before a handler was set are replayed to it).

        The handler may be a plain function or an ``async`` one; async handlers run one after the other.
        """
        self._signal_handler = handler
        if handler is not None:
            early, self._early_signals = self._early_signals, []
            for signal in early:
                self._call_signal_handler(signal)

    def _call_signal_handler(self, signal: dict[str, Any]) -> None:
        assert self._signal_handler is not None
        try:
            result = self._signal_handler(signal)
        except Exception:  # noqa: BLE001
            log.exception("signal handler failed")
            return
        if inspect.isawaitable(result):
            previous = self._signal_chain

            async def run_in_order() -> None:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                try:
                    await result
                except Exception:  # noqa: BLE001
                    log.exception("signal handler failed")

            self._signal_chain = asyncio.ensure_future(run_in_order())

    def _hand_out(self) -> None:
        """The consumer has the connection now: emit what was held, on the next loop turn (after it subscribed)."""

        def release() -> None:
            held, self._held = self._held, None
            events, self._held_events = self._held_events, []
            for name, payload in events:
                _emit(self.events, name, payload)
            for action in held or ():
                if self._state != _State.CLOSED or action.kind != "close":
                    self._deliver(action)

        asyncio.get_running_loop().call_soon(release)

    def report_upgrade_failure(self, error: BaseException) -> None:
        """An upgrade attempt failed: keep the reason (:attr:`upgrade_failure`) and emit ``upgrade_failed``.

        Before the connection is handed out the event is held and emitted right after hand-out, like held data.
        """
        payload = ev.UpgradeFailed(str(error) or type(error).__name__, error)
        self._upgrade_failure = payload
        if self._held is not None:
            self._held_events.append((ev.UPGRADE_FAILED, payload))
        else:
            _emit(self.events, ev.UPGRADE_FAILED, payload)

    # ---------------------------------------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        """Listen to this side's inbox (before anything is sent to the peer)."""
        self._listener = await self._db.listen(
            f"{self._session_path}/{self.own_id}",
            self._on_inbox_event,
            on_error=self._relay_trouble,
            silence_timeout=self._options.listener_silence_timeout,
        )
        self._writer.start()

    def accept(self) -> None:
        """Target side: answer the negotiation (an acknowledgement of nothing yet)."""
        self._writer.send_frame({"kind": "ack", "seq": 0})

    def _start_running(self) -> None:
        self._state = _State.OPEN
        # The peer time-out counts from now: an empty acknowledgement counts as hearing from the peer.
        self._stream.receive({"kind": "ack", "seq": 0}, time.monotonic())
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name=f"ticker {self._session_id}")

    async def _tick_loop(self) -> None:
        opts = self._options
        interval = min(opts.ping_interval, opts.retransmit_interval, opts.slow_after, opts.peer_timeout) / 4
        interval = min(max(interval, 0.02), 0.5)
        while True:
            await asyncio.sleep(interval)
            self._run(self._stream.tick(time.monotonic()))

    async def _send(self, kind: str, data: str, *, confirm: bool | None = None) -> None:
        self._check_open()
        confirm = self.confirm_data_receival if confirm is None else confirm
        loop = asyncio.get_running_loop()
        if kind in ("data", "binary"):
            seq, actions = self._stream.send_message(kind, data, time.monotonic(), confirm=confirm)
        else:
            seq, actions = self._stream.send(kind, data, time.monotonic(), confirm=confirm)
        # ``seq`` is the message's last frame: written means all of it was, acknowledged means the peer's
        # application has all of it.
        # A placeholder while the actions run: a frame written at once (most, over WebRTC) needs no future.
        written = self._written
        written[seq] = None
        acked: asyncio.Future[None] | None = None
        if confirm:
            acked = self._ack_waiters[seq] = loop.create_future()
        self._run(actions)
        if seq in written:
            # Not written yet. The window holds a long message back while the peer reads slowly; the peer
            # time-out bounds this wait.
            waiter = written[seq] = loop.create_future()
            await waiter
        if acked is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(acked), self._options.ack_timeout)
        except TimeoutError:
            self._ack_waiters.pop(seq, None)
            raise PeerTimeoutError(
                f"The other device did not confirm message {seq} within {self._options.ack_timeout:g} s.",
                what=f"acknowledgement of message {seq}",
                seconds=self._options.ack_timeout,
            ) from None

    def _check_open(self) -> None:
        if isinstance(self.close_error, ConnectionDeclinedError):
            raise ConnectionDeclinedError(
                str(self.close_error), label=self.close_error.label, reason=self.close_error.reason
            )
        if self._state != _State.OPEN:
            raise ConnectionClosedError(
                f"The connection to {self._peer.label} is closed"
                + (f" ({self.close_reason})" if self.close_reason else "")
                + ": connect again to continue."
            )

    # ------------------------------------------------------------------------------------------------ actions
    def _run(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, WriteFrame):
                self._write(action.frame)
            elif isinstance(action, Deliver):
                if self._held is not None and action.kind != "signal":
                    self._held.append(action)
                else:
                    self._deliver(action)
            elif isinstance(action, Acked):
                self._on_acked(action.seq)
            elif isinstance(action, RttMeasured):
                self._rtt = action.rtt
                _emit(self.events, ev.LATENCY, ev.Latency(action.rtt, self.transport))
            elif isinstance(action, SlowStarted):
                _emit(self.events, ev.SLOW, ev.Slow(action.what, action.waited, action.timeout))
            elif isinstance(action, SlowEnded):
                _emit(self.events, ev.RECOVERED, ev.Recovered(action.what))
            elif isinstance(action, PeerGone):
                self._fail(action.error)
            elif isinstance(action, BadFrame):
                self._protocol_error(action.error)
            elif isinstance(action, Broken):
                self._protocol_error(action.error)
                self._fail(action.error)

    def _write(self, frame: dict[str, Any]) -> None:
        link = self._link
        if link is not None:
            try:
                link.send_frame(frame)
            except Exception as exc:  # noqa: BLE001 - any link failure falls back to the relay
                log.info("link %s failed: %s; falling back to the relay", link.transport, exc)
                self.detach_link(link, f"link failed: {exc}")
                self._writer.send_frame(frame)
                return
            if frame["kind"] in SEQUENCED_KINDS:
                self._frames_written([frame["seq"]])
            return
        self._writer.send_frame(frame)

    def _frames_written(self, seqs: list[int]) -> None:
        for seq in seqs:
            waiter = self._written.pop(seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_acked(self, seq: int) -> None:
        for s in [s for s in self._ack_waiters if s <= seq]:
            waiter = self._ack_waiters.pop(s)
            if not waiter.done():
                waiter.set_result(None)
        # A frame acknowledged is certainly written.
        self._frames_written([s for s in self._written if s <= seq])
        if self._close_seq is not None and seq >= self._close_seq:
            self._close_acked.set()

    def _deliver(self, action: Deliver) -> None:
        if action.kind == "data":
            _emit(self.events, ev.DATA, ev.Data(action.data))
        elif action.kind == "binary":
            try:
                raw = base64.b64decode(action.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                self._protocol_error(ProtocolError(f"Binary message {action.seq} is not valid base64: {exc}"))
                return
            _emit(self.events, ev.BINARY, ev.BinaryData(raw))
        elif action.kind == "signal":
            try:
                signal = json.loads(action.data)
                if not isinstance(signal, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self._protocol_error(ProtocolError(f"Signal {action.seq} is not a JSON object: {exc}"))
                return
            if self._signal_handler is not None:
                self._call_signal_handler(signal)
            elif len(self._early_signals) < 64:
                self._early_signals.append(signal)
        elif action.kind == "close":
            if self._closing_task is None and self._state != _State.CLOSED:
                self._closing_task = asyncio.get_running_loop().create_task(self._peer_closed(action.data))

    def _protocol_error(self, error: ProtocolError) -> None:
        log.warning("session %s: %s", self._session_id, error)
        _emit(self.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))

    def _relay_trouble(self, error: PeerchatError) -> None:
        if self._relay_down_since is None:
            self._relay_down_since = time.monotonic()
            log.info("session %s: relay trouble: %s", self._session_id, error)

    def _relay_ok(self) -> None:
        self._relay_down_since = None

    # ------------------------------------------------------------------------------------------------ inbox
    def _on_inbox_event(self, kind: str, path: str, data: Any) -> None:
        if self._state == _State.CLOSED:
            return
        parts = [p for p in path.split("/") if p]
        if kind == "patch":
            # A multi-path update: each key (possibly a slash path) below ``path`` is a put of its own.
            if isinstance(data, dict):
                for key, value in data.items():
                    self._inbox_put(parts + [p for p in str(key).split("/") if p], value)
            return
        self._inbox_put(parts, data)

    def _inbox_put(self, parts: list[str], data: Any) -> None:
        if not parts:
            if data is None:
                return
            if not isinstance(data, dict):
                self._protocol_error(ProtocolError(f"The session inbox holds {type(data).__name__}, not an object."))
                return
            for name, value in data.items():
                self._inbox_put([name], value)
            return
        if parts[0] == "messages":
            if len(parts) == 1:
                if isinstance(data, dict):
                    for key, value in data.items():
                        self._inbox_message(key, value)
                elif data is not None:
                    self._protocol_error(ProtocolError("The session's messages are not an object."))
            elif len(parts) == 2:
                self._inbox_message(parts[1], data)
            else:
                self._protocol_error(ProtocolError(f"A partial message write at {'/'.join(parts)} was ignored."))
        elif parts[0] == "acknowledgement" and len(parts) == 1:
            if data is not None:
                self._inbox_ack(data)
        else:
            self._protocol_error(ProtocolError(f"Unexpected data at {'/'.join(parts)} in the session was ignored."))

    def _inbox_message(self, key: str, value: Any) -> None:
        if value is None:
            return  # our own trim coming back
        self._writer.trim(key)
        if not isinstance(value, dict):
            self._protocol_error(ProtocolError(f"Message {key} is {type(value).__name__}, not an object."))
            return
        frame = {k: v for k, v in value.items() if k != "updatedWhen"}
        try:
            expected = message_key(frame)
        except (KeyError, TypeError, ValueError):
            expected = None
        if expected != key:
            self._protocol_error(ProtocolError(f"Message {key} is malformed: {str(value)[:200]}"))
            return
        self.receive_frame(frame)

    def _inbox_ack(self, value: Any) -> None:
        if not isinstance(value, dict) or value.get("peerId") != self._peer.id:
            self._protocol_error(ProtocolError(f"A malformed acknowledgement was ignored: {str(value)[:200]}"))
            return
        seq = value.get("seq")
        if not self._accepted.done():
            self._accepted.set_result(None)
        self.receive_frame({"kind": "ack", "seq": seq})

    # ------------------------------------------------------------------------------------------------ closing
    async def _disconnect(self, data: str = "") -> None:
        if self._state == _State.OPEN:
            self._state = _State.CLOSING
            seq, actions = self._stream.send("close", data, time.monotonic())
            self._close_seq = seq
            self._run(actions)
            try:
                async with asyncio.timeout(self._options.close_timeout):
                    await self._close_acked.wait()
            except TimeoutError:
                log.info("session %s: the peer did not acknowledge the close", self._session_id)
        await self._finish("local-closed", None)

    async def _peer_closed(self, data: str = "") -> None:
        self._state = _State.CLOSING
        declined: ConnectionDeclinedError | None = None
        if data == DECLINED or data.startswith(DECLINED + "\n"):
            reason = data[len(DECLINED) + 1 :][:MAX_DECLINE_REASON].strip() or None
            message = f"{self._peer.label} declined the connection" + (f": {reason}." if reason else ".")
            declined = ConnectionDeclinedError(message, label=self._peer.label, reason=reason)
        # The acknowledgement of the close frame went out on the active link; another link (WebRTC) is closed
        # below, perhaps before its queue drained, so acknowledge over the relay too, where flush() waits for it.
        if self._link is not None:
            self._writer.send_frame({"kind": "ack", "seq": self._stream.delivered})
        try:
            async with asyncio.timeout(self._options.close_timeout):
                await self._writer.flush()  # the acknowledgement of the close frame
        except TimeoutError:
            pass
        await self._finish("peer-requested-closed", declined)

    async def _finish_quietly(self) -> None:
        """Tear down a connection that was never handed out (a failed attempt)."""
        await self._finish("local-closed", None)

    def _fail(self, error: BaseException) -> None:
        if self._closing_task is None and self._state != _State.CLOSED:
            self._state = _State.CLOSING
            self._closing_task = asyncio.get_running_loop().create_task(self._finish("connection-error", error))

    async def _finish(self, reason: ev.CloseReason, error: BaseException | None) -> None:
        if self._state == _State.CLOSED:
            return
        self._state = _State.CLOSED
        self.close_reason, self.close_error = reason, error
        if self._ticker is not None:
            self._ticker.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        closed: PeerchatError
        if isinstance(error, ConnectionDeclinedError):
            closed = error  # what a person must hear: the other device said no
        else:
            closed = ConnectionClosedError(
                f"The connection to {self._peer.label} closed ({reason}) before the message got through."
            )
            closed.__cause__ = error
        for waiter in [*self._written.values(), *self._ack_waiters.values()]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(closed)
                waiter.exception()  # mark retrieved: nobody may be waiting any more
        self._written.clear()
        self._ack_waiters.clear()
        if not self._accepted.done():
            self._accepted.set_exception(closed)
            self._accepted.exception()
        if self._link is not None:
            link, self._link = self._link, None
            link.close()
        await self._writer.stop()
        if self._listener is not None:
            await self._listener.close()
        try:
            async with asyncio.timeout(max(self._options.close_timeout, 1.0)):
                await self._db.delete(self._session_path)
        except (PeerchatError, TimeoutError) as exc:
            log.info("session %s: could not delete its data: %s", self._session_id, exc)
        payload = ev.ConnectionClosed(self, reason, error)
        self._manager._connection_closed(self, payload)
        _emit(self.events, ev.CLOSED, payload)
        self._closed_event.set()


# --------------------------------------------------------------------------------------------------------- manager
class _MState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class FirebasePeerConnectionManager(PeerConnectionManager):
    """Presence and relay connections for one device of ``user_id``, through the Realtime Database.

    Args:
        user_id: the user (``auth.uid`` of the app; the rules only allow that user's data).
        device: this device (its id is the key under ``presence/{user_id}``).
        app: a firebase_admin App initialised with ``databaseAuthVariableOverride={'uid': user_id}``
            (None: the default app).
        options: time-outs and limits.
        upgrader: run on every new connection before it is handed out. None (the default): the WebRTC upgrade of
            :func:`core.upgrade.webrtc_upgrader` for ``options`` (which, with ``options.webrtc`` off, tells the other
            side at once that this device does not use WebRTC). Pass another upgrader to override it.
    """

    def __init__(
        self,
        user_id: str,
        device: PeerInfo,
        *,
        app: firebase_admin.App | None = None,
        options: ManagerOptions | None = None,
        upgrader: Upgrader | None = None,
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
            from .upgrade import webrtc_upgrader  # here: core.upgrade imports this module

            upgrader = webrtc_upgrader(self.options)
        self.upgrader: Upgrader = upgrader
        self._db: Database = None  # type: ignore[assignment]  # set by start()
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
            )
            await self._heartbeat.beat()
            for source, path, handler in (
                ("presence listener", presence_path(self.user_id), self._on_presence),
                ("negotiation listener", negotiation_path(self.user_id, self._device.id), self._on_negotiation),
            ):
                self._listeners.append(await self._db.listen(
                    path, handler,
                    on_error=lambda exc, source=source: self._relay_failed(source, exc),
                    on_subscribed=lambda source=source: self._relay_succeeded(source),
                ))
        except BaseException:
            await self._db.close()
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
            await self._db.set(
                presence_path(self.user_id, self._device.id), heartbeat_record(self._device.label, online=False)
            )
        except PeerchatError as exc:
            log.warning("could not mark this device offline: %s", exc)
        await self._db.close()

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
            _emit(self.events, ev.RELAY_UNAVAILABLE, down)

    def _relay_succeeded(self, source: str) -> None:
        if self._state != _MState.STARTED:
            return
        up = self._health.success(source, time.time())
        if up is not None:
            log.info("relay restored after %.1f s", up.duration)
            _emit(self.events, ev.RELAY_RESTORED, up)

    # ------------------------------------------------------------------------------------------------ presence
    async def _write_heartbeat(self, record: dict[str, Any]) -> None:
        await self._db.set(presence_path(self.user_id, self._device.id), record)

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
        _emit(self.events, ev.PEERS_CHANGED, ev.PeersChanged(self._view.online, self._view.known))

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

    async def _peer_for(self, device_id: str) -> PeerInfo:
        """The device ``device_id`` as presence names it. A device that connects right after coming online can
        be faster than its presence reaching this device's listener, so when the live view does not have it,
        its record is read once; its id stands in for the label only if that fails too."""
        peer = self._view.get(device_id)
        if peer is not None:
            return peer
        try:
            peer = peer_from_record(device_id, await self._db.get(presence_path(self.user_id, device_id)))
        except PeerchatError as exc:
            log.info("could not read the presence of %s: %s", device_id, exc)
        if peer is None:
            peer = next((s.info for s in self._view.known if s.info.id == device_id), None)
        return peer or PeerInfo(device_id, device_id)

    # ------------------------------------------------------------------------------------------------ connecting
    async def connect_to_peer(self, peer_id: str, *, confirm_data_receival: bool = False) -> RelayConnection:
        """Open a connection to one of this user's online devices.

        Raises:
            PeerOfflineError: the device is unknown or offline (at once), or went offline while connecting.
            PeerTimeoutError: it did not answer within ``options.connect_timeout``.
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
        session_id = new_session_id()
        conn = RelayConnection(self, peer, session_id, initiator=True, confirm_data_receival=confirm_data_receival)
        offline: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offline_waiters.setdefault(peer_id, []).append(offline)
        self._seen_sessions.add(session_id)
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await conn.open()
                await self._db.set(negotiation_path(self.user_id, peer_id), make_request(self._device.id, session_id))
                done, _ = await asyncio.wait({conn._accepted, offline}, return_when=asyncio.FIRST_COMPLETED)
                if conn._accepted not in done:
                    raise PeerOfflineError(f"{peer.label} went offline while connecting. Try again when it is back.")
                conn._accepted.result()
                conn._start_running()
                self._connections[session_id] = conn
        except BaseException as exc:
            await self._abandon(conn, peer_id)
            if isinstance(exc, TimeoutError):
                raise PeerTimeoutError(
                    f"{peer.label} did not answer within {self.options.connect_timeout:g} s. "
                    "Check that peerchat runs there and can reach the database.",
                    what="answer to the connection request",
                    seconds=self.options.connect_timeout,
                ) from None
            raise
        finally:
            waiters = self._offline_waiters.get(peer_id, [])
            if offline in waiters:
                waiters.remove(offline)
            if not waiters:
                self._offline_waiters.pop(peer_id, None)
        await self._upgrade(conn)
        conn._hand_out()
        return conn

    async def _abandon(self, conn: RelayConnection, peer_id: str) -> None:
        """A connection attempt failed: stop its tasks and remove what it wrote."""
        await conn._finish_quietly()
        try:
            current = await self._db.get(negotiation_path(self.user_id, peer_id))
            if isinstance(current, dict) and current.get("sessionId") == conn.session_id:
                await self._db.delete(negotiation_path(self.user_id, peer_id))
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
            offer = read_request(
                data,
                own_id=self._device.id,
                server_now=self._view.server_now(time.time()),
                max_age=self.options.negotiation_max_age,
            )
        except NegotiationIgnored as exc:
            log.info("negotiation ignored: %s", exc)
            self._spawn(self._clear_negotiation(data))
            return
        if offer.session_id in self._seen_sessions:
            return
        self._seen_sessions.add(offer.session_id)
        self._spawn(self._accept(offer.initiator, offer.session_id, data))

    def _spawn(self, coro: Awaitable[None]) -> None:
        """Run a background step of this manager (cancelled by stop())."""
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _clear_negotiation(self, value: Any) -> None:
        """Delete a negotiation value we handled, unless a newer one replaced it meanwhile."""
        path = negotiation_path(self.user_id, self._device.id)
        try:
            if await self._db.get(path) == value:
                await self._db.delete(path)
        except PeerchatError as exc:
            log.info("could not clear the negotiation: %s", exc)

    async def _accept(self, initiator: str, session_id: str, value: Any) -> None:
        conn: RelayConnection | None = None
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                peer = await self._peer_for(initiator)
                conn = RelayConnection(self, peer, session_id, initiator=False, confirm_data_receival=False)
                await conn.open()
                conn.accept()
                conn._start_running()
                self._connections[session_id] = conn
        except (PeerchatError, TimeoutError) as exc:
            log.warning("could not accept a connection from %s: %s", initiator, exc)
            self._connections.pop(session_id, None)
            if conn is not None:
                await conn._finish_quietly()
            return
        self._spawn(self._clear_negotiation(value))
        await self._upgrade(conn)
        if conn.is_closed:
            return
        _emit(self.events, ev.INCOMING_CONNECTION, ev.IncomingConnection(conn))
        conn._hand_out()

    def _connection_closed(self, conn: RelayConnection, payload: ev.ConnectionClosed) -> None:
        if self._connections.pop(conn.session_id, None) is not None:
            _emit(self.events, ev.CONNECTION_CLOSED, payload)
