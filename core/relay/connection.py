"""The relay connection: a reliable stream over the Realtime Database (:class:`RelayConnection`), made by
:class:`core.manager.FirebasePeerConnectionManager`.

Data layout (``{uid}`` is ``auth.uid``; every path is scoped by it so the security rules can check it)::

    presence/{uid}/{deviceId}                          {label, lastSeen: <server ms>, online, key}  core.protocol.presence
    relay/negotiation/{uid}/{targetDeviceId}           {initiator, sessionId, hello, updatedWhen}  core.protocol.negotiation
    relay/sessions/{uid}/{sessionId}/{deviceId}/       the INBOX of deviceId in that session:
        handshake                                        the other side's handshake message   core.protocol.handshake
        messages/{key}                                   {kind, seq, data, confirm?, more?, updatedWhen}  SEALED frames
                                                                                          FOR it (core.protocol.sealing)
        acknowledgement                                  {peerId, seq, tag, updatedWhen}  the peer's cumulative ack
                                                                                          of what deviceId SENT

The request's ``relay/session/messages/{sessionId}`` and ``relay/session/acknowledgements/{sessionId}`` became one
inbox per device and session, so that each side listens to exactly one path and never receives its own writes
back. A message key is ``s`` + the sequence number in 10 digits for sequenced frames (``s0000000042``),
``ping``/``pong`` + the probe number for latency probes: a retransmission rewrites the same key, so it costs no
space. The frame format and the reliable stream are in :mod:`core.protocol.stream`; binary data is stored
base64-encoded in ``data`` (``kind: "binary"``; the stream and the other links hold the raw bytes), WebRTC signalling as JSON text in ``data`` (``kind: "signal"``).

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

import asyncio
import enum
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

from .. import events as ev
from .._tasks import cancel_and_wait, emit_safely
from ..errors import (
    ConnectionClosedError,
    ConnectionDeclinedError,
    MessageTooLargeError,
    PeerchatError,
    PeerTimeoutError,
    ProtocolError,
    RelayUnavailableError,
)
from ..link import Link
from ..options import ManagerOptions
from ..peer import MAX_DECLINE_REASON, PeerConnection, PeerInfo, Route, Transport
from ..protocol.records import SERVER_TIMESTAMP, frame_from_store, frame_to_store, message_key
from ..protocol.sealing import FrameSealer, sealed_frame_limit
from ..protocol.stream import (
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
from .firebase import Database, Listener

log = logging.getLogger(__name__)

# A relay update carries at most this many bytes of frames; larger batches are split.
MAX_BATCH_BYTES = 2 * 1024 * 1024


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

    def _take_batch(self) -> tuple[dict[str, Any], list[int], dict[str, dict[str, Any]]]:
        """The next update's payload, the sequence numbers it writes, and its plain frames by key."""
        conn = self._conn
        sealer = conn._sealer
        payload: dict[str, Any] = {}
        plain: dict[str, dict[str, Any]] = {}
        seqs: list[int] = []
        size = 0
        for key in list(self._frames):
            frame = self._frames[key]
            data = frame.get("data", "")
            # What it will take in the update: base64 of binary data (sealed or not), text as it is.
            cost = (len(data) if isinstance(data, str) else (len(data) + 2) // 3 * 4) + 100
            if payload and size + cost > MAX_BATCH_BYTES:
                break
            del self._frames[key]
            size += cost
            plain[key] = frame
            # Sealing starts from the frame's bytes; only a frame stored in the clear has its binary data made base64
            # (here only).
            stored = sealer.seal(frame) if sealer is not None else frame_to_store(frame)
            payload[f"{conn.peer.id}/messages/{key}"] = {**stored, "updatedWhen": SERVER_TIMESTAMP}
            if frame["kind"] in SEQUENCED_KINDS:
                seqs.append(frame["seq"])
        if self._ack is not None:
            ack: dict[str, Any] = {"peerId": conn.own_id, "seq": self._ack, "updatedWhen": SERVER_TIMESTAMP}
            if sealer is not None:
                ack["tag"] = sealer.ack_tag(self._ack)
            payload[f"{conn.peer.id}/acknowledgement"] = ack
            self._ack = None
        for key in self._trims:
            payload[f"{conn.own_id}/messages/{key}"] = None
        self._trims = set()
        return payload, seqs, plain

    def _put_back(self, payload: dict[str, Any], plain: dict[str, dict[str, Any]]) -> None:
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
                    self._frames[key] = plain[key]

    async def _run(self) -> None:
        conn = self._conn
        backoff = 0.05
        while True:
            if not (self._frames or self._ack is not None or self._trims):
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            payload, seqs, plain = self._take_batch()
            try:
                await conn._db.update(conn._session_path, payload)
            except RelayUnavailableError as exc:
                # The relay is down (or restarting): keep everything and try again; the peer time-out decides
                # when to give up.
                self.failures += 1
                self._put_back(payload, plain)
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
    """A connection to one peer: a reliable stream carried by the relay and, once attached, by another link.

    The manager makes it and hands it what it needs; it never sees the manager. It is a
    :class:`~core.link.LinkHost`: the upgrade attaches and detaches links through that interface.

    Args:
        db: the database the relay runs on.
        options: time-outs and limits.
        own_id: this device's id (its inbox is ``{session_path}/{own_id}``).
        session_path: where this session's data lives (``relay/sessions/{uid}/{sessionId}``).
        on_closed: called once, when the connection has closed, with its ``closed`` payload (before the event).
        sealed: every frame on the relay is sealed (:mod:`core.protocol.sealing`) with the keys given to
            :meth:`set_sealer` after the session's handshake; frames that arrive before the keys, or fail
            authentication, are dropped as protocol errors. The manager always seals; False only for tests and
            benchmarks that build connections directly.
    """

    def __init__(
        self,
        db: Database,
        options: ManagerOptions,
        own_id: str,
        peer: PeerInfo,
        session_id: str,
        session_path: str,
        *,
        initiator: bool,
        confirm_data_receival: bool,
        on_closed: Callable[[RelayConnection, ev.ConnectionClosed], None] | None = None,
        sealed: bool = False,
    ) -> None:
        self.events = AsyncIOEventEmitter()
        self._db = db
        self._options = options
        self._on_closed = on_closed
        self._peer = peer
        self._session_id = session_id
        self.own_id = own_id
        self.is_initiator = initiator
        self.confirm_data_receival = confirm_data_receival
        self._session_path = session_path
        self.sealed = sealed
        self._sealer: FrameSealer | None = None
        loop = asyncio.get_running_loop()
        # The other side's handshake message (in this side's inbox), and the inbox's deletion after it arrived:
        # the other side abandoned the session before it opened.
        self._handshake: asyncio.Future[str] = loop.create_future()
        self._peer_left: asyncio.Future[None] = loop.create_future()
        opts = self._options
        self._frame_limit = sealed_frame_limit(opts.relay_frame_bytes) if sealed else opts.relay_frame_bytes
        self._stream = ReliableStream(
            StreamTimers(
                window=opts.send_window,
                retransmit_interval=opts.retransmit_interval,
                ack_timeout=opts.ack_timeout,
                ping_interval=opts.ping_interval,
                slow_after=opts.slow_after,
                peer_timeout=opts.peer_timeout,
                ack_delay=opts.ack_delay,
                max_frame_bytes=self._frame_limit,
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
    def route(self) -> Route | None:
        return self._link.route if self._link is not None else None

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
    def keeps_call_order(self) -> bool:
        """True: a message is numbered when its ``send()`` call starts, on whichever link, so calls started one
        after the other arrive in that order even when several are in flight."""
        return True

    @property
    def max_bytes_message(self) -> int:
        """The largest ``send_bytes()`` message that travels as ONE frame (on every link, and after a fallback to
        the relay): 3/4 of ``options.relay_frame_bytes`` (base64), less the room sealing takes in a sealed session. Larger ones, up to ``options.max_message_bytes``,
        are split into several frames; the file transfer sizes its chunks by this."""
        return self._frame_limit // 4 * 3

    @property
    def is_closed(self) -> bool:
        return self._state in (_State.CLOSING, _State.CLOSED)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks: relay update requests, failed ones, frames in flight, and sealed frames
        with data written compressed and as they were."""
        sealer = self._sealer
        return {
            "relay_requests": self._writer.requests,
            "relay_failures": self._writer.failures,
            "in_flight": self._stream.in_flight,
            "queued": self._stream.queued,
            "sealed_deflated": sealer.counts["deflated"] if sealer is not None else 0,
            "sealed_as_is": sealer.counts["as_is"] if sealer is not None else 0,
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
        # The stream holds the bytes as they are (base64 only on the relay); a copy unless they cannot change.
        await self._send("binary", bytes(data))

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

    @property
    def accepted(self) -> asyncio.Future[None]:
        """Done when the peer answered the connection request (initiator side); fails if it closed first."""
        return self._accepted

    @property
    def handshake(self) -> asyncio.Future[str]:
        """Done with the other side's handshake message when it arrives in this side's inbox."""
        return self._handshake

    @property
    def peer_left(self) -> asyncio.Future[None]:
        """Done when the other side deleted the session after its handshake message (it gave up)."""
        return self._peer_left

    async def write_handshake(self, message: str) -> None:
        """Write this side's handshake message into the peer's inbox."""
        await self._db.set(f"{self._session_path}/{self._peer.id}/handshake", message)

    def set_sealer(self, sealer: FrameSealer) -> None:
        """Seal and open relay frames with ``sealer`` from now on (once the handshake gave the session keys); ignored
        by a connection made with ``sealed=False``."""
        if self.sealed:
            self._sealer = sealer

    async def refuse(self, reason: str | None = None) -> None:
        """Decline a session that was never handed out: one sealed close frame ("declined"), written before the
        session's data is deleted. The peer's ``connect_to_peer`` raises :class:`ConnectionDeclinedError`."""
        data = DECLINED if not reason else f"{DECLINED}\n{reason[:MAX_DECLINE_REASON]}"
        _, actions = self._stream.send("close", data, time.monotonic())
        self._run(actions)
        try:
            async with asyncio.timeout(self._options.close_timeout):
                await self._writer.flush()
        except TimeoutError:
            log.info("session %s: the refusal was not written in time", self._session_id)
        await self._finish("local-closed", None)

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
            emit_safely(self.events, ev.LINK_CHANGED, ev.LinkChanged(link.transport, previous, reason, link.route))

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
                emit_safely(self.events, ev.LINK_CHANGED, ev.LinkChanged("relay", link.transport, reason))

    def receive_frame(self, frame: object) -> None:
        """A frame arrived on any link (the relay calls this too)."""
        if self._state == _State.CLOSED:
            return
        self._run(self._stream.receive(frame, time.monotonic()))
        self._ack_later()

    def receive_frames(self, frames: list[Any]) -> None:
        """Frames arrived together on a link, in this order (a direct link's run: one file chunk's fragments)."""
        if self._state == _State.CLOSED:
            return
        self._run(self._stream.receive_frames(frames, time.monotonic()))
        self._ack_later()

    def _ack_later(self) -> None:
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
        if len(text) > self._frame_limit:  # ASCII (json.dumps escapes the rest): characters are bytes
            raise MessageTooLargeError(
                "The signalling message is too large for one relay frame.",
                size=len(text),
                limit=self._frame_limit,
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

    def hand_out(self) -> None:
        """The consumer has the connection now: emit what was held, on the next loop turn (after it subscribed)."""

        def release() -> None:
            held, self._held = self._held, None
            events, self._held_events = self._held_events, []
            for name, payload in events:
                emit_safely(self.events, name, payload)
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
            emit_safely(self.events, ev.UPGRADE_FAILED, payload)

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

    def start_running(self) -> None:
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
                if action.kind == "close" and self.is_initiator and not self._accepted.done():
                    # Closed before it accepted: the other side refused the session.
                    self._accepted.set_exception(self._declined_error(action.data) or ConnectionDeclinedError(
                        f"{self._peer.label} closed the session before accepting it.", label=self._peer.label
                    ))
                elif self._held is not None and action.kind != "signal":
                    self._held.append(action)
                else:
                    self._deliver(action)
            elif isinstance(action, Acked):
                self._on_acked(action.seq)
            elif isinstance(action, RttMeasured):
                self._rtt = action.rtt
                emit_safely(self.events, ev.LATENCY, ev.Latency(action.rtt, self.transport))
            elif isinstance(action, SlowStarted):
                emit_safely(self.events, ev.SLOW, ev.Slow(action.what, action.waited, action.timeout))
            elif isinstance(action, SlowEnded):
                emit_safely(self.events, ev.RECOVERED, ev.Recovered(action.what))
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
            emit_safely(self.events, ev.DATA, ev.Data(action.data))
        elif action.kind == "binary":
            emit_safely(self.events, ev.BINARY, ev.BinaryData(action.data))
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
        emit_safely(self.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))

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
                self._inbox_deleted()
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
        elif parts[0] == "handshake" and len(parts) == 1:
            if data is None:
                self._inbox_deleted()
            elif not isinstance(data, str):
                self._protocol_error(ProtocolError("The session's handshake message is not a string."))
            elif not self._handshake.done():
                self._handshake.set_result(data)
        else:
            self._protocol_error(ProtocolError(f"Unexpected data at {'/'.join(parts)} in the session was ignored."))

    def _inbox_deleted(self) -> None:
        if self._handshake.done() and not self._peer_left.done():
            self._peer_left.set_result(None)

    def _inbox_message(self, key: str, value: Any) -> None:
        if value is None:
            return  # our own trim coming back
        self._writer.trim(key)
        if not isinstance(value, dict):
            self._protocol_error(ProtocolError(f"Message {key} is {type(value).__name__}, not an object."))
            return
        frame = {k: v for k, v in value.items() if k != "updatedWhen"}
        if self.sealed:
            if self._sealer is None:
                self._protocol_error(ProtocolError(f"Message {key} arrived before the session's keys; dropped."))
                return
            try:
                frame = self._sealer.open(frame)
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
        try:
            expected = message_key(frame)
        except (KeyError, TypeError, ValueError):
            expected = None
        if expected != key:
            self._protocol_error(ProtocolError(f"Message {key} is malformed: {str(value)[:200]}"))
            return
        try:
            frame = frame_from_store(frame)  # binary data as bytes again
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        self.receive_frame(frame)

    def _inbox_ack(self, value: Any) -> None:
        if not isinstance(value, dict) or value.get("peerId") != self._peer.id:
            self._protocol_error(ProtocolError(f"A malformed acknowledgement was ignored: {str(value)[:200]}"))
            return
        seq = value.get("seq")
        if self.sealed:
            if self._sealer is None:
                self._protocol_error(ProtocolError("An acknowledgement arrived before the session's keys; dropped."))
                return
            try:
                seq = self._sealer.check_ack(seq, value.get("tag"))
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
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
        declined = self._declined_error(data)
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

    def _declined_error(self, data: str) -> ConnectionDeclinedError | None:
        """The error a close frame's ``data`` stands for when the peer declined, else None."""
        if data == DECLINED or data.startswith(DECLINED + "\n"):
            reason = data[len(DECLINED) + 1 :][:MAX_DECLINE_REASON].strip() or None
            message = f"{self._peer.label} declined the connection" + (f": {reason}." if reason else ".")
            return ConnectionDeclinedError(message, label=self._peer.label, reason=reason)
        return None

    async def abandon(self) -> None:
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
        if self._on_closed is not None:
            self._on_closed(self, payload)
        emit_safely(self.events, ev.CLOSED, payload)
        self._closed_event.set()
