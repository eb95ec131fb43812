"""The transparent WebRTC upgrade: an upgrader for relay connections that opens, attaches and re-opens WebRTC links.

:class:`~core.relay.FirebasePeerConnectionManager` uses ``webrtc_upgrader(options)`` by default; pass one
explicitly to change the link options (``host_addresses``, ``idle_timeout``, ...)::

    manager = FirebasePeerConnectionManager(uid, device, options=options,
                                            upgrader=webrtc_upgrader(options, host_addresses=("127.0.0.1",)))

On every new connection, on both sides and before the connection is handed out, the upgrader opens a
:class:`core.webrtc.WebRTCLink` signalled over the connection itself (``send_signal`` / ``set_signal_handler``):
the initiator offers, the target answers. Once the data channel is open the link is attached to the connection
(``attach_link``): the connection's frames (:mod:`core.session` dicts: :func:`encode_frame`, text for strings and
binary messages with raw bytes for ``send_bytes`` data, see "Frames on the data channel" below) travel over the
data channel from then on, acknowledgements included. A failed or timed-out attempt raises
:class:`~core.errors.UpgradeError`, which the manager keeps as the connection's ``upgrade_failure`` and emits as an
``upgrade_failed`` event once the connection is handed out; the relay keeps working.

When the link fails during the session (the data channel closes, ICE fails, or nothing arrives for the link's
``idle_timeout``), it is detached: the relay carries the frames again, unacknowledged ones first, and the stream's
sequence numbers drop duplicates, so nothing is lost, repeated or reordered. The initiator tries again every
``reupgrade_interval`` seconds until a link opens (each try that fails is an ``upgrade_failed`` event).

Signals (JSON objects over the relay; ``attempt`` counts the initiator's tries, so late signals of an abandoned try
are recognised and ignored)::

    {"webrtc": attempt, "type": "offer",   "sdp": "..."}      initiator -> target
    {"webrtc": attempt, "type": "answer",  "sdp": "..."}      target -> initiator
    {"webrtc": attempt, "type": "decline", "reason": "..."}   a side with WebRTC turned off (sent at once, and in
                                                              reply to offers); the other side stops trying

Security: the offer and answer carry each side's DTLS certificate fingerprint, and they travel through the relay,
where only this user (the security rules check ``auth.uid``) can write. A network attacker between the devices
therefore cannot sit in the middle of the data channel: its DTLS handshake would not match the fingerprint. It does
not protect against someone who holds the user's Firebase credentials (they can write signals too), and ICE
candidates reveal the devices' local and public addresses to whoever can read the user's data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from . import events as ev
from .errors import ClosedError, ConnectionClosedError, PeerchatError, ProtocolError, UpgradeError
from .framing import Message
from .options import ManagerOptions
from .relay import Link
from .webrtc import LinkClosed, LinkOptions, LinkState, Role, WebRTCLink, emit_safely

if TYPE_CHECKING:
    from .relay import RelayConnection

__all__ = ["ConnectionUpgrade", "WebRTCUpgrader", "decode_frame", "encode_frame", "webrtc_upgrader"]

log = logging.getLogger(__name__)

SIGNAL_KEY = "webrtc"
TURNED_OFF_HERE = "WebRTC is turned off on this device"
TURNED_OFF_THERE = "WebRTC is turned off on the other device"
MAX_REASON_CHARS = 200


def webrtc_upgrader(options: ManagerOptions, **link_overrides: Any) -> WebRTCUpgrader:
    """The upgrader for a manager with ``options``: its ICE servers, time-outs and ``webrtc`` switch.

    ``link_overrides`` are :class:`~core.webrtc.LinkOptions` fields (``host_addresses``, ``idle_timeout``, ...).
    With ``options.webrtc`` off the upgrader still runs, to tell the other side at once that WebRTC is off.
    """
    return WebRTCUpgrader(
        LinkOptions.from_manager_options(options, **link_overrides),
        enabled=options.webrtc,
        reupgrade_interval=options.reupgrade_interval,
    )


class WebRTCUpgrader:
    """``await upgrader(connection)``: the manager's upgrade step (see the module docstring).

    Args:
        link_options: how each WebRTC link connects and buffers.
        enabled: False declines every offer and tells the other side so, at once.
        reupgrade_interval: seconds between the initiator's tries after a failure (None: never try again).
    """

    def __init__(
        self, link_options: LinkOptions | None = None, *, enabled: bool = True, reupgrade_interval: float | None = 15.0
    ) -> None:
        self.link_options = link_options or LinkOptions()
        self.enabled = enabled
        self.reupgrade_interval = reupgrade_interval
        # Called with each new ConnectionUpgrade before it starts (diagnostics and tests).
        self.on_upgrade: Callable[[ConnectionUpgrade], None] | None = None

    async def __call__(self, connection: RelayConnection) -> None:
        upgrade = ConnectionUpgrade(
            connection, self.link_options, enabled=self.enabled, reupgrade_interval=self.reupgrade_interval
        )
        if self.on_upgrade is not None:
            self.on_upgrade(upgrade)
        await upgrade.start()


class ConnectionUpgrade:
    """The WebRTC side of one relay connection, for its whole life: attempts, the attached link, re-tries.

    ``failures`` lists the reason of every failed attempt, oldest first.
    """

    def __init__(
        self,
        connection: RelayConnection,
        options: LinkOptions,
        *,
        enabled: bool = True,
        reupgrade_interval: float | None = 15.0,
    ) -> None:
        self.connection = connection
        self.options = options
        self.enabled = enabled
        self.reupgrade_interval = reupgrade_interval
        self.failures: list[str] = []
        self.attempt = 0
        self.link: WebRTCLink | None = None
        self.peer_declined = False
        self._role: Role = "offerer" if connection.is_initiator else "answerer"
        self._attached: _FrameLink | None = None
        self._signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retrying = False
        self._closed = False

    async def start(self) -> None:
        """The first attempt. Raises UpgradeError (with the reason) if no link opened; the relay keeps working."""
        self.connection.events.on(ev.CLOSED, self._on_connection_closed)
        self._spawn(self._process_signals())
        self.connection.set_signal_handler(self._signals.put_nowait)
        if not self.enabled:
            self.failures.append(TURNED_OFF_HERE)
            await self._decline(0)
            raise UpgradeError(TURNED_OFF_HERE)
        await self._open(self._new_link(1))

    # -- attempts --------------------------------------------------------------------------------------------

    def _new_link(self, attempt: int) -> WebRTCLink:
        old = self.link
        if old is not None and old.state is not LinkState.CLOSED:
            self._spawn(old.abort("a newer WebRTC attempt replaced this one"))
        self.attempt = attempt
        link = WebRTCLink(self._role, partial(self._send_signal, attempt), self.options)
        link.events.on("closed", partial(self._on_link_closed, link))
        self.link = link
        return link

    async def _open(self, link: WebRTCLink) -> None:
        try:
            await link.open()
            if self._closed or self.connection.is_closed:
                raise ClosedError("the connection closed during the WebRTC upgrade")
        except (UpgradeError, ClosedError) as exc:
            await link.close()
            reason = str(exc)
            if link is self.link:  # not merely replaced by a newer attempt
                self.failures.append(reason)
                log.info("WebRTC attempt %d failed: %s", self.attempt, reason)
                self._retry_later()
            raise UpgradeError(reason) from exc
        frame_link = _FrameLink(link, self.connection)
        self._attached = frame_link
        self.connection.attach_link(frame_link, "upgraded")

    async def _send_signal(self, attempt: int, signal: dict[str, Any]) -> None:
        await self.connection.send_signal({SIGNAL_KEY: attempt, **signal})

    async def _decline(self, attempt: int) -> None:
        try:
            await self._send_signal(attempt, {"type": "decline", "reason": TURNED_OFF_THERE})
        except PeerchatError as exc:
            log.info("could not tell the other device that WebRTC is off: %s", exc)

    def _retry_later(self) -> None:
        if (self._role != "offerer" or self.reupgrade_interval is None or self.peer_declined or self._closed
                or self._retrying or self.connection.is_closed):
            return
        self._retrying = True
        self._spawn(self._retry())

    async def _retry(self) -> None:
        try:
            await asyncio.sleep(self.reupgrade_interval or 0)
        finally:
            self._retrying = False
        if self._closed or self.peer_declined or self.connection.is_closed:
            return
        if self.link is not None and self.link.state is not LinkState.CLOSED:
            return
        try:
            await self._open(self._new_link(self.attempt + 1))
        except UpgradeError as exc:
            self.connection.report_upgrade_failure(exc)

    async def _answer_later(self, link: WebRTCLink) -> None:
        try:
            await self._open(link)
        except UpgradeError as exc:
            if link is self.link:
                self.connection.report_upgrade_failure(exc)

    # -- signals ---------------------------------------------------------------------------------------------

    async def _process_signals(self) -> None:
        while True:
            signal = await self._signals.get()
            try:
                await self._handle(signal)
            except ProtocolError as exc:
                log.warning("WebRTC signal dropped: %s", exc)
                emit_safely(self.connection.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(exc))

    async def _handle(self, signal: dict[str, Any]) -> None:
        attempt, kind = signal.get(SIGNAL_KEY), signal.get("type")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise ProtocolError(f"a WebRTC signal without a valid attempt number: {str(signal)[:100]}")
        if kind == "decline":
            await self._on_decline(signal)
        elif kind == "offer" and self._role == "answerer":
            if not self.enabled:
                await self._decline(attempt)
            elif attempt > self.attempt:
                link = self._new_link(attempt)
                self._spawn(self._answer_later(link))
                await link.handle_signal(_without_key(signal))
            elif attempt == self.attempt and self.link is not None:
                await self.link.handle_signal(_without_key(signal))
        elif kind == "answer" and self._role == "offerer":
            if attempt == self.attempt and self.link is not None:
                await self.link.handle_signal(_without_key(signal))
        else:
            raise ProtocolError(f"unexpected WebRTC signal {kind!r} for the {self._role} side")

    async def _on_decline(self, signal: dict[str, Any]) -> None:
        reason = signal.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            reason = TURNED_OFF_THERE
        self.peer_declined = True
        if self.link is not None and self.link.state is not LinkState.OPEN:
            await self.link.abort(reason[:MAX_REASON_CHARS])

    # -- the link's and the connection's ends ----------------------------------------------------------------

    def _on_link_closed(self, link: WebRTCLink, info: LinkClosed) -> None:
        attached = self._attached
        if attached is None or attached.link is not link:
            return
        self._attached = None
        if not self.connection.is_closed:
            log.info("WebRTC link lost (%s); back to the relay", info.reason)
            self.connection.detach_link(attached, f"WebRTC link lost: {info.reason}")
        self._retry_later()

    def _on_connection_closed(self, _event: object) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.link is not None:
            closing = asyncio.ensure_future(self.link.close())
            _keep(closing)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _without_key(signal: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in signal.items() if key != SIGNAL_KEY}


_background: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    """Hold a reference to a fire-and-forget task until it ends (asyncio keeps only weak ones)."""
    _background.add(future)
    future.add_done_callback(_background.discard)


# Frames on the data channel: one message each, a short ASCII header line, then the data as it is (no escaping).
# Text frames are text messages:
#
#     d42\nhello          {"kind": "data", "seq": 42, "data": "hello"}
#     d43!\nhi            ... "confirm": true          d44+\n<piece>   ... "more": true (a fragment)
#     s46\n<json>         signal                       c47\n   close
#     a47                 {"kind": "ack", "seq": 47}   p3 / q3   ping / pong (no data line)
#
# Binary frames (the stream's ``binary`` kind, base64 in the stream and on the relay) are binary messages: the same
# header line in ASCII, then the raw bytes, so WebRTC carries no base64:
#
#     b"b45\n" + raw      {"kind": "binary", "seq": 45, "data": base64(raw)}     b"b46!+\n" + raw   flags as above
#
# A relay-sized frame (64 KiB of base64: 48 KiB of bytes) is then one data-channel message of 48 KiB and a few
# bytes, under the 64 KiB of one link frame. Frames keep their sequence numbers, so a binary frame sent here and
# resent on the relay after a fallback is the same frame (base64 there). JSON would escape every non-ASCII character
# of a text (six bytes for one) and costs a parse per frame; this header costs a split. A text starting with "{" is
# read as a JSON frame.
_KIND_CODES = {"data": "d", "binary": "b", "signal": "s", "close": "c", "ack": "a", "ping": "p", "pong": "q"}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
_MAX_HEADER = 16


def _header(frame: dict[str, Any]) -> str:
    head = f"{_KIND_CODES[frame['kind']]}{frame['seq']}"
    if frame.get("confirm"):
        head += "!"
    if frame.get("more"):
        head += "+"
    return head


def encode_frame(frame: dict[str, Any]) -> str | bytes:
    """The data-channel message of a :mod:`core.session` frame: text, or bytes for a binary frame (see above).

    Raises:
        ValueError: a binary frame's data is not valid base64 (the stream only holds what ``send_bytes`` encoded).
    """
    kind = frame["kind"]
    if kind == "data" and "more" not in frame and "confirm" not in frame:  # most frames: no flags to write
        return f"d{frame['seq']}\n{frame['data']}"
    if "data" not in frame:
        return f"{_KIND_CODES[kind]}{frame['seq']}"
    if kind == "binary":
        raw = base64.b64decode(frame["data"], validate=True)
        return f"{_header(frame)}\n".encode("ascii") + raw
    return f"{_header(frame)}\n{frame['data']}"


def decode_frame(message: str | bytes) -> dict[str, Any]:
    """The frame a data-channel message carries; the stream checks the rest (kinds that need data, ranges).

    Raises:
        ProtocolError: the header is malformed, or a binary message is not a binary frame.
    """
    if isinstance(message, (bytes, bytearray)):
        return _decode_binary(bytes(message))
    text = message
    if text[:1] == "d":
        # Most frames: a data frame without flags, read without the general header parser.
        head, newline, data = text.partition("\n")
        digits = head[1:]
        if newline and len(head) <= _MAX_HEADER and digits.isdigit() and digits.isascii():
            return {"kind": "data", "seq": int(digits), "data": data}
    if text.startswith("{"):
        try:
            frame = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"a WebRTC frame is not valid JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise ProtocolError("a WebRTC frame in JSON must be an object")
        return frame
    head, newline, data = text.partition("\n")
    frame = _decode_header(head)
    if frame["kind"] == "binary":
        raise ProtocolError("a binary frame arrived as text; binary frames are binary messages")
    if newline:
        frame["data"] = data
    return frame


def _decode_binary(message: bytes) -> dict[str, Any]:
    end = message.find(b"\n", 0, _MAX_HEADER + 1)
    if end < 0:
        raise ProtocolError(f"a binary WebRTC frame has no header line: {message[:_MAX_HEADER + 1]!r}")
    try:
        head = message[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"a binary WebRTC frame has a malformed header {message[:end]!r}") from None
    frame = _decode_header(head)
    if frame["kind"] != "binary":
        raise ProtocolError(f"a {frame['kind']} frame arrived as a binary message; only binary frames are binary")
    frame["data"] = base64.b64encode(memoryview(message)[end + 1:]).decode("ascii")
    return frame


def _decode_header(head: str) -> dict[str, Any]:
    kind = _CODE_KINDS.get(head[:1])
    digits = head[1:].rstrip("!+")
    if kind is None or not digits.isascii() or not digits.isdigit() or len(head) > _MAX_HEADER:
        raise ProtocolError(f"a WebRTC frame has a malformed header {head[:_MAX_HEADER + 1]!r}")
    frame: dict[str, Any] = {"kind": kind, "seq": int(digits)}
    flags = head[1 + len(digits):]
    if "!" in flags:
        frame["confirm"] = True
    if "+" in flags:
        frame["more"] = True
    return frame


class _FrameLink(Link):
    """Carries a relay connection's frames over a WebRTC link: each frame as one message (:func:`encode_frame`)."""

    transport = "webrtc"

    def __init__(self, link: WebRTCLink, connection: RelayConnection) -> None:
        self.link = link
        self._connection = connection
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write())
        link.events.on("message", self._on_message)

    def send_frame(self, frame: dict[str, Any]) -> None:
        # The stream bounds the frames in flight (its send window), so this queue stays small.
        if self.link.state is not LinkState.OPEN or self._writer.done():
            raise ConnectionClosedError("the WebRTC link is closed")
        message = encode_frame(frame)
        # Straight onto the channel when nothing waits before it (most frames); the writer task keeps the order
        # of the rest.
        if self._queue.empty() and self.link.send_now(message):
            return
        self._queue.put_nowait(message)

    async def _write(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self.link.send(message)
            except PeerchatError as exc:
                # The link's "closed" event detaches it; unacknowledged frames then go over the relay.
                log.info("WebRTC send failed: %s", exc)
                return

    def _on_message(self, message: Message) -> None:
        try:
            frame = decode_frame(message.data)
        except ProtocolError as error:
            emit_safely(self._connection.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))
            return
        self._connection.receive_frame(frame)

    def close(self) -> None:
        self._writer.cancel()
        if self.link.state is not LinkState.CLOSED:
            _keep(asyncio.ensure_future(self.link.close()))
