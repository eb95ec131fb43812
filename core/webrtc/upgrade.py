"""The transparent WebRTC upgrade: an upgrader for connections that opens, attaches and re-opens WebRTC links.

:class:`~core.manager.FirebasePeerConnectionManager` uses ``webrtc_upgrader(options)`` by default; pass one
explicitly to change the link options (``host_addresses``, ``idle_timeout``, ...)::

    manager = FirebasePeerConnectionManager(uid, device, options=options,
                                            upgrader=webrtc_upgrader(options, host_addresses=("127.0.0.1",)))

On every new connection, on both sides and before the connection is handed out, the upgrader opens a
:class:`core.webrtc.link.WebRTCLink` signalled over the connection itself (``send_signal`` /
``set_signal_handler``), which it sees only as a :class:`core.link.LinkHost`: the initiator offers, the target
answers. Once the data channel is open the link is attached to the connection (``attach_link``): the connection's
frames (:mod:`core.protocol.stream` dicts, one data-channel message each as :mod:`core.protocol.linkframes` says:
text for strings, binary messages with raw bytes for ``send_bytes`` data) travel over the data channel from then on, acknowledgements included. A failed or timed-out attempt raises
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
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from .. import events as ev
from .._tasks import emit_safely, spawn
from ..errors import ClosedError, ConnectionClosedError, PeerchatError, ProtocolError, UpgradeError
from ..link import Link, LinkHost
from ..options import ManagerOptions
from ..peer import Route
from ..protocol.linkframes import decode_frame, encode_frame
from ..protocol.packets import ChannelMessage
from .link import LinkClosed, LinkOptions, LinkState, Role, WebRTCLink

__all__ = ["ConnectionUpgrade", "WebRTCUpgrader", "webrtc_upgrader"]

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

    async def __call__(self, connection: LinkHost) -> None:
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
        connection: LinkHost,
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
            if isinstance(exc, UpgradeError):
                raise  # NoRouteError keeps its type (and its advice)
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
            spawn(_background, self.link.close())

    def _spawn(self, coroutine: Any) -> None:
        spawn(self._tasks, coroutine)


def _without_key(signal: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in signal.items() if key != SIGNAL_KEY}


_background: set[asyncio.Future[Any]] = set()  # closing links nobody waits for, held until they end


class _FrameLink(Link):
    """Carries a relay connection's frames over a WebRTC link: each frame as one message (:func:`encode_frame`)."""

    transport = "webrtc"

    def __init__(self, link: WebRTCLink, connection: LinkHost) -> None:
        self.link = link
        self._connection = connection
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write())
        link.events.on("message", self._on_message)

    @property
    def route(self) -> Route | None:
        return self.link.route

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

    def _on_message(self, message: ChannelMessage) -> None:
        try:
            frame = decode_frame(message.data)
        except ProtocolError as error:
            emit_safely(self._connection.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))
            return
        self._connection.receive_frame(frame)

    def close(self) -> None:
        self._writer.cancel()
        if self.link.state is not LinkState.CLOSED:
            spawn(_background, self.link.close())
