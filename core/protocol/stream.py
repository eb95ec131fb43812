"""The reliable ordered stream of a connection, without I/O: sequence numbers, acks, retransmission, pings, timers.

:class:`ReliableStream` is a plain object. It takes events (the application sends, a frame arrived from a link, the
clock ticked) and returns *actions* (write this frame, deliver this payload, these sequence numbers are now
acknowledged, a round trip was measured, something is slow, the peer is gone). It never sleeps, reads a clock or
touches a socket: the caller passes ``now`` (seconds, any monotonic clock) into every call.

Frames are small dicts, the same on every link. The relay stores them as database values (binary data as base64
there, converted at that boundary: :func:`core.protocol.records.frame_to_store`); a WebRTC data channel and the
direct link carry each as one message, a short header line and then the data as it is, binary frames with the raw
bytes (see :mod:`core.protocol.linkframes`)::

    {"kind": "data",   "seq": 7, "data": "hello"}      sequenced: delivered once, in order
    {"kind": "data",   "seq": 7, "data": "hello", "confirm": true}   ... and the sender waits for its ack
    {"kind": "binary", "seq": 8, "data": b"<bytes>"}   sequenced: raw bytes (bytes or a memoryview of them)
    {"kind": "signal", "seq": 9, "data": "<json>"}     sequenced: WebRTC signalling (a JSON object as text)
    {"kind": "data",   "seq": 11, "data": "<piece>", "more": true}   a fragment: more of this message follows
    {"kind": "close",  "seq": 10, "data": ""}          sequenced: the peer disconnects after everything before it
    {"kind": "close",  "seq": 10, "data": "declined\\nbusy"}  ... and declined the connection (the reason is optional)
    {"kind": "ack",    "seq": 10}                      cumulative: every sequenced frame up to 10 was delivered
    {"kind": "ping",   "seq": 3}                       latency probe, answered at once with a pong
    {"kind": "pong",   "seq": 3}

Sequence numbers start at 1 and span every link: when a link fails, :meth:`ReliableStream.resend_unacked` writes
every unacknowledged frame again (on whatever link is active next) and the receiver drops duplicates by sequence
number, so nothing is lost, duplicated or reordered across a switch. An acknowledgement means the frame was handed
to the application (the ``data`` event was emitted), which is what ``confirm_data_receival`` waits for.

Acknowledgements are delayed a little (``ack_delay``) so that a busy stream needs few of them, except when the
sender waits for one: a frame marked ``confirm``, a signal or close frame, a duplicate (the sender is
retransmitting), or a quarter of the window (in frames or bytes) delivered since the last one; those are
acknowledged at once.
:attr:`ReliableStream.ack_due` tells the caller when to call :meth:`ReliableStream.flush_ack`.

Large messages: one frame carries at most ``max_frame_bytes`` UTF-8 bytes of text, or the raw bytes whose base64
takes that many characters (3/4 of it: the relay's rules allow 64 KiB per stored frame, and the relay stores
binary data as base64). :meth:`ReliableStream.send_message` splits a longer ``data`` or ``binary`` message into
*fragments*, consecutive sequenced frames of the same kind, every one but the last marked ``"more": true`` (only
the last carries ``confirm``). Fragments are ordinary frames for acknowledgement, retransmission and link
switches; the receiver joins them in sequence order and delivers the whole message once, with the last fragment's
sequence number. So the acknowledgement of the last fragment means the whole message reached the application. The
receiver holds at most ``max_message_bytes`` of a message being joined: a longer fragment run, or a fragment run
broken by another kind of frame, is a :class:`Broken` stream (the connection must close with a protocol error).
The fragments of one message are queued together, so other messages wait behind them; the window bounds how long
(a 16 MiB message is 256 frames, eight windows).

At most ``window`` sequenced frames, holding at most ``window_bytes`` of data, are in flight (written, not yet
acknowledged); later ones wait in order. That is the backpressure a sender feels when its peer reads slowly. The
connection widens the window (:meth:`ReliableStream.set_window`) while a WebRTC link carries the frames.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import PeerTimeoutError, ProtocolError

SEQUENCED_KINDS = frozenset({"data", "binary", "signal", "close"})
# What a binary frame's ``data`` may be (a received frame's, and what ``send_message`` takes).
BYTES_TYPES = (bytes, bytearray, memoryview)
# A close frame's ``data``: "" for a plain disconnect; DECLINED, or DECLINED + "\n" + a reason, when the sender
# declined the connection.
DECLINED = "declined"
CONTROL_KINDS = frozenset({"ack", "ping", "pong"})
FRAME_KINDS = SEQUENCED_KINDS | CONTROL_KINDS
# Sequence numbers fit the relay's keys ("s" + 10 digits) and JSON numbers exactly.
MAX_SEQ = 9_999_999_999
# The largest send window (frames in flight) a peer may use; frames further ahead than this are refused.
MAX_WINDOW = 4096


# ---------------------------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class WriteFrame:
    """Write ``frame`` on the active link."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class Deliver:
    """Hand a sequenced frame's payload to the application (``kind`` is data, binary, signal or close): a string,
    or ``bytes`` for binary."""

    kind: str
    seq: int
    data: Any


@dataclass(frozen=True)
class Acked:
    """Every sequenced frame up to and including ``seq`` was delivered to the peer's application."""

    seq: int


@dataclass(frozen=True)
class RttMeasured:
    rtt: float


@dataclass(frozen=True)
class SlowStarted:
    """``what`` has waited ``waited`` seconds; it fails after ``timeout``."""

    what: str
    waited: float
    timeout: float


@dataclass(frozen=True)
class SlowEnded:
    what: str


@dataclass(frozen=True)
class PeerGone:
    """Nothing arrived from the peer for ``peer_timeout`` seconds: the connection is dead."""

    error: PeerTimeoutError


@dataclass(frozen=True)
class BadFrame:
    """A malformed or impossible frame arrived and was dropped."""

    error: ProtocolError


@dataclass(frozen=True)
class Broken:
    """The peer broke the stream beyond repair (a fragmented message over the limit, or a fragment run cut by another
    kind of frame): close the connection with ``error``. The stream delivers nothing more."""

    error: ProtocolError


Action = WriteFrame | Deliver | Acked | RttMeasured | SlowStarted | SlowEnded | PeerGone | BadFrame | Broken


@dataclass(frozen=True)
class StreamTimers:
    """The intervals (seconds) and limits a :class:`ReliableStream` works with (see :class:`core.options.ManagerOptions`).

    ``window`` bounds the frames in flight, ``window_bytes`` their data; the receiver acknowledges at least every
    quarter of either (text counted in characters, binary data in bytes). ``max_frame_bytes`` is the most UTF-8
    bytes of text one frame carries, and 3/4 of it the most raw bytes of binary data (whose base64 the relay stores
    then fits the same limit); ``max_message_bytes`` the most a whole joined message may hold (UTF-8 bytes of text,
    raw bytes of binary data).
    """

    window: int = 32
    retransmit_interval: float = 2.0
    ack_timeout: float = 20.0
    ping_interval: float = 2.0
    slow_after: float = 2.0
    peer_timeout: float = 15.0
    ack_delay: float = 0.05
    max_frame_bytes: int = 64 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    # At most this many bytes of ``data`` in flight, whatever the window (one frame always may be).
    window_bytes: int = 4 * 1024 * 1024


@dataclass
class _InFlight:
    frame: dict[str, Any]
    first_sent: float
    last_sent: float
    size: int = 0


@dataclass
class _Slow:
    since: float
    reported: bool = False


# What waits, in words (the ``what`` of slow/recovered events).
WAIT_ACK = "acknowledgement from the peer"
WAIT_PONG = "reply to a latency probe"
WAIT_WINDOW = "room in the send window (the peer reads slowly)"


@dataclass
class ReliableStream:
    """One side of a connection's ordered, acknowledged stream (see the module docstring)."""

    timers: StreamTimers = field(default_factory=StreamTimers)
    now: float = 0.0

    def __post_init__(self) -> None:
        self._next_seq = 1
        self._queued: deque[dict[str, Any]] = deque()  # sequenced, not yet written (window full)
        self._in_flight: OrderedDict[int, _InFlight] = OrderedDict()
        self._acked = 0  # highest seq the peer acknowledged
        self._delivered = 0  # highest seq delivered to our application
        self._reorder: dict[int, dict[str, Any]] = {}
        self._next_ping = 1
        self._pings: OrderedDict[int, float] = OrderedDict()
        self._last_ping_sent = -math.inf
        self._last_heard = self.now
        self._slow: dict[str, _Slow] = {}
        self._gone = False
        self._ack_due: float | None = None
        self._unacked_deliveries = 0
        self._unacked_bytes = 0
        self._in_flight_bytes = 0
        # The message being joined from fragments: its kind, pieces and size so far.
        self._partial_kind: str | None = None
        self._partial: list[str] = []
        self._partial_size = 0
        self._broken = False
        self.rtt: float | None = None

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def ack_due(self) -> float | None:
        """When a delayed acknowledgement must be written (call :meth:`flush_ack` then), or None."""
        return self._ack_due

    @property
    def slow(self) -> tuple[str, ...]:
        return tuple(what for what, state in self._slow.items() if state.reported)

    # ---------------------------------------------------------------------------------------------------- events
    def send(self, kind: str, data: str | bytes, now: float, *, confirm: bool = False) -> tuple[int, list[Action]]:
        """Queue a sequenced frame; returns its sequence number and the frames that may be written now.

        ``data`` is a string, or bytes for a ``binary`` frame. ``confirm`` marks a frame whose sender waits for its
        acknowledgement (the peer acknowledges it at once).
        """
        if kind not in SEQUENCED_KINDS:
            raise ValueError(f"{kind!r} is not a sequenced frame kind")
        _check_data(kind, data)
        seq = self._next_seq
        self._next_seq += 1
        frame: dict[str, Any] = {"kind": kind, "seq": seq, "data": data}
        if confirm:
            frame["confirm"] = True
        self._queued.append(frame)
        return seq, self._release(now)

    def send_message(self, kind: str, data: str | bytes, now: float, *,
                     confirm: bool = False) -> tuple[int, list[Action]]:
        """Queue a ``data`` (a string) or ``binary`` (bytes) message, split into fragments if it is longer than one
        frame (``max_frame_bytes`` of UTF-8, or 3/4 of it of raw bytes).

        Returns the sequence number of its last frame (acknowledged once the peer's application has the whole
        message) and the frames that may be written now. The size limit of a whole message is the caller's to
        check (before calling, so that nothing is queued for a message that is refused). Binary fragments are
        memoryviews of ``data``, which must not change while the message is in flight (``bytes`` cannot).
        """
        if kind not in ("data", "binary"):
            raise ValueError(f"only data and binary messages are split into fragments, not {kind!r}")
        _check_data(kind, data)
        max_bytes = self.timers.max_frame_bytes
        pieces: list[Any]
        if kind == "binary":
            pieces = split_bytes(data, binary_frame_bytes(max_bytes))  # type: ignore[arg-type]
        elif len(data) * 4 <= max_bytes and max_bytes >= 4:
            pieces = [data]  # a short message fits one frame whatever its characters: no need to look at them
        else:
            pieces = split_utf8(data, max_bytes)  # type: ignore[arg-type]
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            frame: dict[str, Any] = {"kind": kind, "seq": self._next_seq, "data": piece}
            self._next_seq += 1
            if index < last:
                frame["more"] = True
            elif confirm:
                frame["confirm"] = True
            self._queued.append(frame)
        return self._next_seq - 1, self._release(now)

    def set_window(self, window: int, now: float) -> list[Action]:
        """Change how many frames may be in flight (a faster link takes more); returns the frames now released.

        The receiver's acknowledgement cadence (every quarter window) follows its own window. Frames in flight over
        a smaller new window stay in flight until acknowledged.
        """
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"the window must be 1 to {MAX_WINDOW} frames, not {window}")
        self.timers = replace(self.timers, window=window)
        return self._release(now)

    def flush_ack(self, now: float) -> list[Action]:
        """Write the delayed acknowledgement if it is due."""
        if self._ack_due is not None and now >= self._ack_due:
            return self._ack_now()
        return []

    def receive(self, frame: object, now: float) -> list[Action]:
        """Handle a frame that arrived on any link."""
        actions: list[Action] = []
        if self._broken:
            return actions
        if type(frame) is dict and len(frame) == 3 and frame.get("kind") == "data":
            # Most frames: a data frame without flags, checked here without the general checks (same outcome).
            seq = frame.get("seq")
            if type(seq) is int and 1 <= seq <= MAX_SEQ and type(frame.get("data")) is str:
                self._last_heard = now
                return self._on_sequenced(frame, seq, now)
        try:
            kind, seq = _check_frame(frame)
        except ProtocolError as exc:
            return [BadFrame(exc)]
        assert isinstance(frame, dict)
        self._last_heard = now
        if kind == "ack":
            actions += self._on_ack(seq, now)
        elif kind == "ping":
            actions.append(WriteFrame({"kind": "pong", "seq": seq}))
        elif kind == "pong":
            sent = self._pings.pop(seq, None)
            if sent is not None:
                # Older probes still outstanding were overtaken: forget them.
                for old in [s for s in self._pings if s < seq]:
                    del self._pings[old]
                self.rtt = now - sent
                actions.append(RttMeasured(self.rtt))
                if not self._pings:
                    actions += self._end_slow(WAIT_PONG)
        else:
            actions += self._on_sequenced(frame, seq, now)
        return actions

    def receive_frames(self, frames: list[Any], now: float) -> list[Action]:
        """Handle frames that arrived together on one link, in this order: the same as :meth:`receive` for each in
        turn. A run of fragments of one binary message that comes next, with nothing held back (a direct link reads
        a file chunk as one), is taken in one step: a chunk of 1 MiB is about 22 fragments."""
        if len(frames) < 2 or self._broken or self._reorder or self._partial_kind not in (None, "binary"):
            return self._receive_each(frames, now)
        size = _run_bytes(frames, self._delivered + 1)
        if size is None or self._partial_size + size > self.timers.max_message_bytes:
            return self._receive_each(frames, now)  # not such a run, or too large: the usual path says why
        last = frames[-1]
        count = len(frames)
        self._last_heard = now
        self._delivered += count
        self._unacked_deliveries += count
        self._unacked_bytes += size
        self._partial_kind = "binary"
        self._partial += [frame["data"] for frame in frames]
        self._partial_size += size
        actions: list[Action] = []
        if last.get("more") is not True:
            whole = _join_bytes(self._partial)
            self._partial_kind, self._partial, self._partial_size = None, [], 0
            actions.append(Deliver("binary", last["seq"], whole))
        t = self.timers
        if (last.get("confirm") is True or t.ack_delay <= 0 or self._unacked_deliveries >= max(1, t.window // 4)
                or self._unacked_bytes >= t.window_bytes // 4):
            actions += self._ack_now()
        elif self._ack_due is None:
            self._ack_due = now + t.ack_delay
        return actions

    def _receive_each(self, frames: list[Any], now: float) -> list[Action]:
        actions: list[Action] = []
        for frame in frames:
            actions += self.receive(frame, now)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Let time pass: retransmit, probe latency, report slowness and a vanished peer."""
        if self._gone:
            return []
        actions: list[Action] = self.flush_ack(now)
        t = self.timers
        if now - self._last_heard >= t.peer_timeout:
            self._gone = True
            return [
                PeerGone(
                    PeerTimeoutError(
                        f"Nothing arrived from the other device for {t.peer_timeout:g} s; it is offline or unreachable.",
                        what="any message from the peer",
                        seconds=t.peer_timeout,
                    )
                )
            ]
        for entry in self._in_flight.values():
            if now - entry.last_sent >= t.retransmit_interval:
                entry.last_sent = now
                actions.append(WriteFrame(entry.frame))
        if now - self._last_ping_sent >= t.ping_interval:
            self._last_ping_sent = now
            ping = self._next_ping
            self._next_ping += 1
            self._pings[ping] = now
            while len(self._pings) > 16:
                self._pings.popitem(last=False)
            actions.append(WriteFrame({"kind": "ping", "seq": ping}))
        # Slowness: the oldest unacknowledged frame, the oldest unanswered probe, a full window.
        if self._in_flight:
            oldest = next(iter(self._in_flight.values())).first_sent
            actions += self._check_slow(WAIT_ACK, oldest, now, t.ack_timeout)
        if self._pings:
            actions += self._check_slow(WAIT_PONG, next(iter(self._pings.values())), now, t.peer_timeout)
        if self._queued:
            actions += self._check_slow(WAIT_WINDOW, self._slow.get(WAIT_WINDOW, _Slow(now)).since, now, t.ack_timeout)
        return actions

    def resend_unacked(self, now: float) -> list[Action]:
        """The link changed: write every unacknowledged frame again (the receiver drops duplicates)."""
        actions: list[Action] = []
        for entry in self._in_flight.values():
            entry.last_sent = now
            actions.append(WriteFrame(entry.frame))
        return actions

    # ---------------------------------------------------------------------------------------------------- inside
    def _release(self, now: float) -> list[Action]:
        actions: list[Action] = []
        window, window_bytes = self.timers.window, self.timers.window_bytes
        while self._queued and len(self._in_flight) < window:
            size = len(self._queued[0]["data"])
            if self._in_flight and self._in_flight_bytes + size > window_bytes:
                break
            frame = self._queued.popleft()
            self._in_flight[frame["seq"]] = _InFlight(frame, now, now, size)
            self._in_flight_bytes += size
            actions.append(WriteFrame(frame))
        if self._queued:
            self._slow.setdefault(WAIT_WINDOW, _Slow(now))
        elif WAIT_WINDOW in self._slow:
            actions += self._end_slow(WAIT_WINDOW)
        return actions

    def _on_ack(self, seq: int, now: float) -> list[Action]:
        if seq >= self._next_seq:
            return [BadFrame(ProtocolError(f"The peer acknowledged message {seq}, which was never sent."))]
        if seq <= self._acked:
            return []
        self._acked = seq
        for s in [s for s in self._in_flight if s <= seq]:
            self._in_flight_bytes -= self._in_flight.pop(s).size
        actions: list[Action] = [Acked(seq)]
        # The oldest unacknowledged frame changed: restart the slowness clock for the next one.
        actions += self._end_slow(WAIT_ACK)
        actions += self._release(now)
        return actions

    def _on_sequenced(self, frame: dict[str, Any], seq: int, now: float) -> list[Action]:
        if seq <= self._delivered:
            # A duplicate (a retransmission, or the same frame on two links): acknowledge again, deliver nothing.
            return self._ack_now()
        # The peer's window may be larger than ours (it uses another link for a moment): allow any window up to
        # MAX_WINDOW frames ahead, never an unbounded reorder buffer.
        if seq > self._delivered + max(4 * self.timers.window, MAX_WINDOW):
            return [BadFrame(ProtocolError(f"Message {seq} is far beyond the receive window; it was dropped."))]
        actions: list[Action] = []
        reorder = self._reorder
        delivered = self._delivered
        if seq == delivered + 1 and not reorder:
            nxt: dict[str, Any] | None = frame  # the next one, nothing held back: no trip through the buffer
        else:
            reorder[seq] = frame
            nxt = reorder.pop(delivered + 1, None)
            if nxt is None:
                return actions
        urgent = False
        while nxt is not None:
            delivered += 1
            self._delivered = delivered
            self._unacked_deliveries += 1
            self._unacked_bytes += len(nxt["data"])
            urgent = urgent or nxt.get("confirm") is True or nxt["kind"] not in ("data", "binary")
            if self._partial_kind is None and nxt.get("more") is not True:  # a whole message (as _join does)
                joined: Deliver | Broken | None = _whole(nxt["kind"], nxt["seq"], nxt["data"])
            else:
                joined = self._join(nxt)
            if isinstance(joined, Broken):
                self._broken = True
                reorder.clear()
                actions.append(joined)
                return actions
            if joined is not None:
                actions.append(joined)
            nxt = reorder.pop(delivered + 1, None) if reorder else None
        t = self.timers
        if (urgent or t.ack_delay <= 0 or self._unacked_deliveries >= max(1, t.window // 4)
                or self._unacked_bytes >= t.window_bytes // 4):
            actions += self._ack_now()
        elif self._ack_due is None:
            self._ack_due = now + self.timers.ack_delay
        return actions

    def _join(self, frame: dict[str, Any]) -> Deliver | Broken | None:
        """Take the next in-order frame: a whole message to deliver, None while fragments are joined, or Broken."""
        kind, data, more = frame["kind"], frame["data"], frame.get("more") is True
        if self._partial_kind is None and not more:
            return _whole(kind, frame["seq"], data)
        if self._partial_kind is not None and kind != self._partial_kind:
            return Broken(ProtocolError(
                f"Message {frame['seq']} ({kind}) arrived inside a fragmented {self._partial_kind} message."
            ))
        self._partial_kind = kind
        self._partial.append(data)
        self._partial_size += len(data)
        limit = self.timers.max_message_bytes
        # Text: a character is at least one UTF-8 byte. Binary: raw bytes.
        if self._partial_size > limit:
            return Broken(ProtocolError(
                f"A fragmented {kind} message grew over the limit of {limit} bytes at message {frame['seq']}."
            ))
        if more:
            return None
        parts = self._partial
        whole: Any = _join_bytes(parts) if kind == "binary" else "".join(parts)
        self._partial_kind, self._partial, self._partial_size = None, [], 0
        return Deliver(kind, frame["seq"], whole)

    def _ack_now(self) -> list[Action]:
        self._ack_due = None
        self._unacked_deliveries = 0
        self._unacked_bytes = 0
        return [WriteFrame({"kind": "ack", "seq": self._delivered})]

    def _check_slow(self, what: str, since: float, now: float, timeout: float) -> list[Action]:
        state = self._slow.setdefault(what, _Slow(since))
        state.since = since
        if not state.reported and now - since >= self.timers.slow_after:
            state.reported = True
            return [SlowStarted(what, now - since, timeout)]
        return []

    def _end_slow(self, what: str) -> list[Action]:
        state = self._slow.pop(what, None)
        if state is not None and state.reported:
            return [SlowEnded(what)]
        return []


def _check_frame(frame: object) -> tuple[str, int]:
    """Validate a frame's shape; returns (kind, seq) or raises ProtocolError naming what is wrong."""
    if not isinstance(frame, dict):
        raise ProtocolError(f"A frame must be an object, not {type(frame).__name__}.")
    kind = frame.get("kind")
    if kind not in FRAME_KINDS:
        raise ProtocolError(f"Unknown frame kind {kind!r}.")
    seq = frame.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(f"A {kind} frame needs a whole-number seq between 0 and {MAX_SEQ}, not {seq!r}.")
    if kind in SEQUENCED_KINDS:
        if seq < 1:
            raise ProtocolError(f"A {kind} frame's seq starts at 1, not {seq}.")
        data = frame.get("data")
        if kind == "binary":
            if not isinstance(data, BYTES_TYPES):
                raise ProtocolError(f"A binary frame needs bytes in its 'data' field, not {type(data).__name__}.")
        elif not isinstance(data, str):
            raise ProtocolError(f"A {kind} frame needs a string 'data' field.")
        if "confirm" in frame and not isinstance(frame["confirm"], bool):
            raise ProtocolError(f"A {kind} frame's 'confirm' must be true or false.")
        if "more" in frame:
            if not isinstance(frame["more"], bool):
                raise ProtocolError(f"A {kind} frame's 'more' must be true or false.")
            if frame["more"] and kind not in ("data", "binary"):
                raise ProtocolError(f"A {kind} frame cannot be a fragment ('more' is only for data and binary).")
    return kind, seq


def _run_bytes(frames: list[Any], first: int) -> int | None:
    """The bytes of ``frames`` if they are consecutive binary fragments numbered from ``first`` (every one but the
    last ``more`` and not ``confirm``; the last with valid flags), else None."""
    if first + len(frames) - 1 > MAX_SEQ:
        return None
    size = 0
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        if (type(frame) is not dict or frame.get("kind") != "binary" or frame.get("seq") != first + index
                or type(frame.get("seq")) is not int or not isinstance(frame.get("data"), BYTES_TYPES)):
            return None
        more, confirm = frame.get("more"), frame.get("confirm")
        if index < last:
            if more is not True or confirm is not None or len(frame) != 4:
                return None
        elif not (more is None or type(more) is bool) or not (confirm is None or type(confirm) is bool):
            return None
        size += len(frame["data"])
    return size


def _check_data(kind: str, data: object) -> None:
    if kind == "binary":
        if not isinstance(data, BYTES_TYPES):
            raise TypeError(f"binary frame data must be bytes, not {type(data).__name__}")
    elif not isinstance(data, str):
        raise TypeError("frame data must be a string")


def _whole(kind: str, seq: int, data: Any) -> Deliver:
    """A whole message to deliver: binary data as ``bytes`` (a link may hand a memoryview of what it read)."""
    if kind == "binary" and type(data) is not bytes:
        data = bytes(data)
    return Deliver(kind, seq, data)


def _join_bytes(parts: list[Any]) -> bytes:
    """The bytes of a binary message's fragments. When they are views of one ``bytes`` object that they cover
    entirely (a link read them in one piece and cut them apart), that object is the message: nothing is copied.
    Fragments join in sequence order, and one object's views come from one read, cut in that order."""
    first = parts[0]
    if isinstance(first, memoryview) and type(first.obj) is bytes:
        whole = first.obj
        if (all(isinstance(part, memoryview) and part.obj is whole for part in parts)
                and sum(len(part) for part in parts) == len(whole)):
            return whole
    return b"".join(parts)


def binary_frame_bytes(max_frame_bytes: int) -> int:
    """The most raw bytes one binary frame carries: those whose base64 fits ``max_frame_bytes`` characters."""
    return max(1, max_frame_bytes // 4 * 3)


def split_bytes(data: bytes | bytearray | memoryview, max_bytes: int) -> list[bytes | memoryview]:
    """``data`` cut into pieces of at most ``max_bytes`` bytes: memoryviews of it, nothing copied (one piece: the
    data itself)."""
    if isinstance(data, memoryview) and data.format != "B":
        data = data.cast("B")
    size = len(data)
    if size <= max_bytes:
        return [data]
    view = memoryview(data)
    return [view[start:start + max_bytes] for start in range(0, size, max_bytes)]


def split_utf8(data: str, max_bytes: int) -> list[str]:
    """``data`` cut into pieces of at most ``max_bytes`` UTF-8 bytes each, never inside a character.

    Raises:
        ValueError: ``max_bytes`` is below 4 (a character may need 4 bytes), or ``data`` holds a lone surrogate.
    """
    if max_bytes < 4:
        raise ValueError(f"a fragment must hold at least 4 bytes (one character), not {max_bytes}")
    if len(data) * 4 <= max_bytes:  # no encoding needed: even 4-byte characters fit
        return [data]
    encoded = data.encode("utf-8")
    if len(encoded) <= max_bytes:
        return [data]
    if len(encoded) == len(data):  # ASCII: bytes and characters are the same
        return [data[start : start + max_bytes] for start in range(0, len(data), max_bytes)]
    pieces: list[str] = []
    start, size = 0, len(encoded)
    while start < size:
        end = min(start + max_bytes, size)
        while end < size and encoded[end] & 0xC0 == 0x80:  # a continuation byte: back up to a character start
            end -= 1
        pieces.append(encoded[start:end].decode("utf-8"))
        start = end
    return pieces
