"""The WebRTC link: one aiortc peer connection with one data channel, signalled by the caller, with flow control.

A :class:`WebRTCLink` is one side of a direct link between two devices. It knows nothing about the relay: it is
given an async ``send_signal(dict)`` to reach the other side and is fed the other side's signals through
``handle_signal(dict)``. Signals are small JSON-able dicts::

    {"type": "offer",  "sdp": "v=0..."}      offerer -> answerer
    {"type": "answer", "sdp": "v=0..."}      answerer -> offerer

aiortc gathers every candidate before it writes a description, so the SDP carries all of them (with the DTLS
fingerprint) and no candidate messages are needed. The offerer creates the data channel; the answerer accepts it.

Usage::

    link = WebRTCLink("offerer", send_signal, LinkOptions())
    link.events.on("message", on_message)      # core.protocol.packets.ChannelMessage: .data is str or bytes
    link.events.on("closed", on_closed)        # LinkClosed: why, and who ended it
    await link.open(timeout)                   # raises UpgradeError with a reason a person can read
    await link.send("text") ; await link.send(b"bytes")   # waits while the channel's buffer is full
    await link.close()                         # idempotent; the peer sees initiator "peer"

Events (``link.events``, a pyee ``AsyncIOEventEmitter``):

- ``message``         -> :class:`core.protocol.packets.ChannelMessage`     a whole message from the peer
- ``protocol_error``  -> :class:`core.events.ProtocolErrorEvent`  a malformed packet arrived and was dropped
- ``closed``          -> :class:`LinkClosed`     emitted exactly once, however the link ends (also a failed open)

Packets on the data channel are described in :mod:`core.protocol.packets` (1-byte header, fragments of at most
64 KiB, keep-alive and close packets). The link sends a keep-alive when it sent nothing for ``keepalive_interval`` and
declares the link dead when nothing arrived for ``idle_timeout``: a transport torn down without a goodbye (a
network change, a killed process) is noticed in seconds rather than after ICE consent expiry (about 30 s).

Candidates: by default aioice gathers host candidates on every interface except loopback. ``include_loopback``
(on by default) adds 127.0.0.1, so two processes on one machine connect even where no other interface is usable;
across machines the loopback pairs simply fail their checks. ``host_addresses`` replaces the gathered addresses
entirely (tests use ``("127.0.0.1",)`` so no packet leaves loopback). STUN/TURN come from ``ice_servers``; with
none, only host candidates are used (aiortc's default of a public Google STUN server is turned off). aiortc uses
at most one STUN and one TURN server (the first of each). A STUN or TURN server that does not answer delays
gathering by at most ``gather_timeout``.

Once open, :attr:`WebRTCLink.route` says how the link got through (host, NAT or TURN relay), from the candidate
pair ICE selected. When ICE finds no pair, ``open()`` raises :class:`~core.errors.NoRouteError`, whose message
says what would help (a STUN server, a TURN server, a firewall to check).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.sdp import SessionDescription
from pyee.asyncio import AsyncIOEventEmitter

from .._tasks import emit_safely
from ..errors import ClosedError, ConnectionClosedError, MessageTooLargeError, PeerchatError, ProtocolError, UpgradeError
from ..events import ProtocolErrorEvent
from ..peer import Route
from ..protocol.ice import no_route_error
from ..protocol.packets import (
    BINARY,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_PACKET_BYTES,
    TEXT,
    Close,
    PacketDecoder,
    ChannelMessage,
    encode_close,
    encode_keepalive,
    encode_payload,
)
from ..options import IceServer, ManagerOptions

__all__ = ["LinkClosed", "LinkOptions", "LinkState", "Role", "WebRTCLink", "rtc_configuration"]

log = logging.getLogger(__name__)

Role = Literal["offerer", "answerer"]
Initiator = Literal["local", "peer", "failure"]
SendSignal = Callable[[dict[str, Any]], Awaitable[None]]

LOOPBACK_ADDRESS = "127.0.0.1"
CHANNEL_LABEL = "peerchat"
MAX_SDP_CHARS = 64 * 1024
_AIORTC_ERRORS = (InternalError, InvalidAccessError, InvalidStateError, OperationError)
# What aiortc's SDP parser raises on text that is not SDP.
_SDP_ERRORS = (*_AIORTC_ERRORS, ValueError, KeyError, IndexError, TypeError, AttributeError)


@dataclass(frozen=True)
class LinkOptions:
    """How a :class:`WebRTCLink` connects and how much it buffers. Times in seconds, sizes in bytes."""

    ice_servers: tuple[IceServer, ...] = ()
    # Gather host candidates on exactly these addresses instead of every interface (None: let aioice choose).
    host_addresses: tuple[str, ...] | None = None
    # Add a 127.0.0.1 host candidate to the gathered ones (ignored when host_addresses is given).
    include_loopback: bool = True
    # SO_RCVBUF of the link's UDP sockets (None: aioice's 256 KiB); bigger buffers avoid drops under bursts.
    receive_buffer: int | None = 4 * 1024 * 1024
    open_timeout: float = 5.0
    # How long gathering waits for the STUN and TURN servers' answers (a dead server costs this much of open_timeout).
    gather_timeout: float = 2.0
    # Flow control: send() waits while more than high_water bytes are queued, until they drop to low_water.
    high_water: int = 1024 * 1024
    low_water: int = 256 * 1024
    # The largest message accepted from or sent to the peer (a joined message, not one frame).
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    keepalive_interval: float = 1.0
    idle_timeout: float = 10.0
    # How long close() waits for its close frame (and data queued before it) to leave.
    close_linger: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_water < self.high_water:
            raise ValueError(f"low_water ({self.low_water}) must be below high_water ({self.high_water})")
        if not 0 < self.keepalive_interval < self.idle_timeout:
            raise ValueError(
                f"keepalive_interval ({self.keepalive_interval}) must be positive and below "
                f"idle_timeout ({self.idle_timeout})"
            )
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be at least 1, not {self.max_message_bytes}")
        if self.open_timeout <= 0 or self.close_linger < 0 or self.gather_timeout <= 0:
            raise ValueError("open_timeout and gather_timeout must be positive and close_linger not negative")

    @classmethod
    def from_manager_options(cls, options: ManagerOptions, **overrides: Any) -> Self:
        """The link options a manager with ``options`` uses (ICE servers, upgrade time-out), plus ``overrides``."""
        return cls(ice_servers=options.ice_servers, open_timeout=options.upgrade_timeout, **overrides)


class LinkState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class LinkClosed:
    """Why the link ended.

    ``initiator`` is "local" (this side called ``close()``), "peer" (the other side closed it on purpose) or
    "failure" (the open failed, or the connection broke). ``error`` is what a waiting ``send()`` raised.
    """

    reason: str
    initiator: Initiator
    error: PeerchatError = field(compare=False)


def rtc_configuration(options: LinkOptions) -> RTCConfiguration:
    """The aiortc configuration for ``options``: its ICE servers, and never aiortc's default public STUN server.

    Raises:
        ValueError: an ICE server URL is malformed (the message names it).
    """
    servers = []
    for server in options.ice_servers:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        for url in urls:
            try:
                parse_stun_turn_uri(url)
            except ValueError as exc:
                raise ValueError(f"ICE server URL {url!r} is malformed ({exc}); use stun:host[:port] or "
                                 "turn:host[:port][?transport=udp|tcp]") from exc
        servers.append(RTCIceServer(urls if len(urls) > 1 or not isinstance(server.urls, str) else urls[0],
                                    server.username, server.credential))
    return RTCConfiguration(iceServers=servers)


def _gather_on(pc: RTCPeerConnection, options: LinkOptions) -> None:
    """Make ``pc``'s ICE agent gather host candidates on the addresses ``options`` asks for, with its socket buffer.

    aioice picks host addresses with ``get_host_addresses()`` (every interface but loopback) and hands them to
    ``Connection.get_component_candidates(component, addresses)``, a public coroutine of the aioice connection that
    binds one UDP socket per address. Wrapping that method on this one connection, before gathering starts, changes
    the addresses for this peer connection only; nothing global is patched.

    aioice asks for a 256 KiB receive buffer; a burst of SCTP packets overflows it while the event loop is busy,
    and every dropped datagram costs SCTP a loss recovery (halved congestion window). ``receive_buffer`` raises it
    (Linux caps it at ``net.core.rmem_max`` silently).

    Private attributes touched, both read only: aiortc's ``RTCIceGatherer._connection`` (the aioice connection) and
    aioice's ``Connection._protocols`` (its sockets).
    """
    gatherer = pc.sctp.transport.transport.iceGatherer
    if gatherer.state != "new":
        raise UpgradeError("internal error: ICE gathering started before the host addresses were chosen")
    connection = gatherer._connection
    original = connection.get_component_candidates

    async def get_component_candidates(component: int, addresses: list[str], timeout: float = 5) -> list[Any]:
        if options.host_addresses is not None:
            addresses = list(options.host_addresses)
        elif options.include_loopback and LOOPBACK_ADDRESS not in addresses:
            addresses = [*addresses, LOOPBACK_ADDRESS]
        candidates = await original(component=component, addresses=addresses,
                                    timeout=min(timeout, options.gather_timeout))
        if options.receive_buffer:
            for protocol in getattr(connection, "_protocols", []):
                sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.receive_buffer)
        return candidates

    connection.get_component_candidates = get_component_candidates


def _selected_pair(pc: RTCPeerConnection | None) -> Any:
    """The candidate pair ICE nominated for the data (aioice's ``CandidatePair``), or None.

    aiortc has no public way to it: this reads aiortc's ``RTCIceTransport._connection`` (the aioice connection) and
    aioice's ``Connection._nominated`` (component -> pair; a data channel uses component 1), read only.
    """
    if pc is None or pc.sctp is None:
        return None
    connection = getattr(pc.sctp.transport.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    return nominated.get(1) if isinstance(nominated, dict) else None


class WebRTCLink:
    """One side of a WebRTC data channel link; see the module docstring.

    Args:
        role: "offerer" creates the offer and the data channel; "answerer" answers.
        send_signal: an async callable that delivers a signal dict to the other side's ``handle_signal``.
        options: candidates, time-outs and buffer sizes.
    """

    def __init__(self, role: Role, send_signal: SendSignal, options: LinkOptions | None = None) -> None:
        if role not in ("offerer", "answerer"):
            raise ValueError(f"role must be 'offerer' or 'answerer', not {role!r}")
        self.events = AsyncIOEventEmitter()
        self._role: Role = role
        self._send_signal = send_signal
        self._options = options or LinkOptions()
        self._configuration = rtc_configuration(self._options)
        self._state = LinkState.NEW
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._decoder = PacketDecoder(max_message_bytes=self._options.max_message_bytes)
        self._opened: asyncio.Future[None] | None = None
        self._offer_sent = False
        self._remote_set = False
        self._room = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._slow_senders = 0  # send() calls that wait for room or send fragments: later calls queue behind them
        # Counted rather than timed, so that sending and receiving never read the clock; the keep-alive task does.
        self._frames_sent = self._frames_received = 0
        self._keepalive_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._peer_close_reason: str | None = None
        self._closed_info: LinkClosed | None = None

    # -- what the owner may look at ----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def closed_info(self) -> LinkClosed | None:
        """Why the link closed, once it has."""
        return self._closed_info

    @property
    def buffered_amount(self) -> int:
        """Bytes handed to the data channel and not yet passed to SCTP (0 before open)."""
        return self._channel.bufferedAmount if self._channel is not None else 0

    @property
    def route(self) -> Route | None:
        """How the link reaches the peer, from the candidate pair ICE selected (None before that)."""
        pair = _selected_pair(self._pc)
        if pair is None:
            return None
        return Route.from_candidates(pair.local_candidate.type, pair.remote_candidate.type)

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        """The aiortc peer connection, for diagnostics and tests; do not send through it."""
        return self._pc

    @property
    def data_channel(self) -> RTCDataChannel | None:
        """The aiortc data channel, for diagnostics and tests; do not send through it."""
        return self._channel

    # -- opening -------------------------------------------------------------------------------------------

    async def open(self, timeout: float | None = None) -> None:
        """Connect, and return once the data channel is open.

        Raises:
            UpgradeError: it did not open within ``timeout`` (default ``options.open_timeout``) or failed; the
                message says which step (no answer, no network path, DTLS handshake, ...). The link is closed.
            ClosedError: the link was closed before or while opening.
        """
        timeout = self._options.open_timeout if timeout is None else timeout
        if self._state is LinkState.CLOSED:
            raise self._closed_error()
        if self._state is LinkState.OPEN:
            return
        opened = self._start()
        try:
            async with asyncio.timeout(timeout):
                if self._role == "offerer" and not self._offer_sent:
                    self._offer_sent = True
                    await self._send_offer()
                await asyncio.shield(opened)
        except TimeoutError:
            if opened.done() and opened.exception() is not None:
                raise opened.exception() from None
            error = self._timeout_error(timeout)
            await self._begin_shutdown("failure", str(error), error)
            raise error from None
        except UpgradeError as error:
            await self._begin_shutdown("failure", str(error), error)
            raise

    async def handle_signal(self, signal: dict[str, Any]) -> None:
        """Take a signal from the other side. Signals that arrive after close are ignored.

        Raises:
            ProtocolError: the signal is malformed, not valid SDP, or unexpected now; it was ignored and the link
                keeps waiting for a good one (until its open time-out).
        """
        kind, sdp = self._check_signal(signal)
        if self._state is LinkState.CLOSED:
            log.debug("ignoring a %s signal for a closed link", kind)
            return
        expected = "offer" if self._role == "answerer" else "answer"
        if kind != expected or self._remote_set or (kind == "answer" and not self._offer_sent):
            raise ProtocolError(f"unexpected {kind} signal for the {self._role} of a WebRTC link; it was ignored")
        self._start()
        pc = self._pc
        assert pc is not None
        try:
            # aiortc accepts text without any media section; a description without a data channel is useless here.
            if not any(media.kind == "application" for media in SessionDescription.parse(sdp).media):
                raise ValueError("it describes no data channel")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except _SDP_ERRORS as exc:
            raise ProtocolError(
                f"the other device's WebRTC {kind} is not valid ({exc or type(exc).__name__}); it was ignored"
            ) from exc
        self._remote_set = True
        if kind == "answer":
            return
        try:
            _gather_on(pc, self._options)
            await pc.setLocalDescription(await pc.createAnswer())
            await self._signal("answer", pc.localDescription.sdp)
        except UpgradeError as error:
            self._fail_opening(error)
        except _AIORTC_ERRORS as exc:
            self._fail_opening(UpgradeError(f"could not create the WebRTC answer: {exc}"))

    def _start(self) -> asyncio.Future[None]:
        """Create the peer connection (once) and the future that resolves when the data channel opens."""
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_future()
            # Somebody may never await it (an answerer opened by signals only): mark its exception as seen.
            self._opened.add_done_callback(lambda future: future.cancelled() or future.exception())
            self._state = LinkState.CONNECTING
            self._pc = RTCPeerConnection(self._configuration)
            self._pc.on("connectionstatechange", self._on_connection_state)
            if self._role == "answerer":
                self._pc.on("datachannel", self._on_datachannel)
        return self._opened

    async def _send_offer(self) -> None:
        pc = self._pc
        assert pc is not None
        self._attach(pc.createDataChannel(CHANNEL_LABEL, ordered=True))
        _gather_on(pc, self._options)
        try:
            await pc.setLocalDescription(await pc.createOffer())
        except _AIORTC_ERRORS as exc:
            raise UpgradeError(f"could not create the WebRTC offer: {exc}") from exc
        await self._signal("offer", pc.localDescription.sdp)

    async def _signal(self, kind: str, sdp: str) -> None:
        try:
            await self._send_signal({"type": kind, "sdp": sdp})
        except PeerchatError as exc:
            raise UpgradeError(f"could not send the {kind} to the other device: {exc}") from exc
        except Exception as exc:  # the caller's transport: whatever it raises, the upgrade failed because of it
            raise UpgradeError(f"could not send the {kind} to the other device: {exc!r}") from exc

    @staticmethod
    def _check_signal(signal: object) -> tuple[str, str]:
        if not isinstance(signal, dict):
            raise ProtocolError(f"a WebRTC signal must be an object, not {type(signal).__name__}")
        kind, sdp = signal.get("type"), signal.get("sdp")
        if kind not in ("offer", "answer"):
            raise ProtocolError(f"unknown WebRTC signal type {kind!r}; expected 'offer' or 'answer'")
        if not isinstance(sdp, str) or not sdp:
            raise ProtocolError(f"the WebRTC {kind} has no SDP text")
        if len(sdp) > MAX_SDP_CHARS:
            raise ProtocolError(f"the WebRTC {kind} is {len(sdp)} characters long, over {MAX_SDP_CHARS}")
        return kind, sdp

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None or channel.label != CHANNEL_LABEL:
            log.warning("closing an unexpected data channel %r from the other device", channel.label)
            channel.close()
            return
        self._attach(channel)

    def _attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.bufferedAmountLowThreshold = self._options.low_water
        channel.on("message", self._on_frame)
        channel.on("bufferedamountlow", self._room.set)
        channel.on("close", self._on_channel_close)
        if channel.readyState == "open":
            self._on_open()
        else:
            channel.on("open", self._on_open)

    def _on_open(self) -> None:
        if self._state is not LinkState.CONNECTING:
            return
        self._state = LinkState.OPEN
        self._keepalive_task = asyncio.create_task(self._keepalive(), name="webrtc-link-keepalive")
        assert self._opened is not None
        if not self._opened.done():
            self._opened.set_result(None)

    def _fail_opening(self, error: UpgradeError) -> None:
        self._begin_shutdown("failure", str(error), error)

    def _timeout_error(self, timeout: float) -> UpgradeError:
        pc = self._pc
        if self._remote_set and (pc is None or pc.iceConnectionState in ("new", "checking")):
            return self._no_route(f"within {timeout:g} s")
        return UpgradeError(self._timeout_reason(timeout))

    def _timeout_reason(self, timeout: float) -> str:
        within = f"within {timeout:g} s"
        if not self._remote_set:
            if self._role == "offerer":
                return f"the other device did not answer the WebRTC offer {within}"
            return f"no WebRTC offer arrived {within}"
        pc = self._pc
        if pc is None or pc.iceConnectionState in ("new", "checking"):
            return str(self._no_route(within))
        dtls = pc.sctp.transport.state if pc.sctp is not None else "new"
        if dtls != "connected":
            return f"the encrypted (DTLS) handshake did not finish {within}"
        return f"the data channel did not open {within}"

    def _no_route(self, within: str = "") -> UpgradeError:
        """The error for ICE checks that found no path, with advice from the candidates each side had."""
        pc = self._pc
        local: list[str] = []
        remote: list[str] = []
        if pc is not None and pc.sctp is not None:
            ice = pc.sctp.transport.transport
            local = [candidate.type for candidate in ice.iceGatherer.getLocalCandidates()]
            remote = [candidate.type for candidate in ice.getRemoteCandidates()]
        schemes = {url.split(":", 1)[0] for server in self._options.ice_servers
                   for url in ([server.urls] if isinstance(server.urls, str) else server.urls)}
        return no_route_error(local, remote, stun="stun" in schemes, turn=bool(schemes & {"turn", "turns"}),
                              within=within)

    def _failure_reason(self) -> str:
        pc = self._pc
        if pc is not None and pc.iceConnectionState == "failed":
            return str(self._no_route())
        if pc is not None and pc.sctp is not None and pc.sctp.transport.state == "failed":
            return "the encrypted (DTLS) handshake with the other device failed"
        return "the WebRTC connection failed"

    # -- sending -------------------------------------------------------------------------------------------

    async def send(self, data: str | bytes) -> None:
        """Send one message (text or bytes) of any size up to ``max_message_bytes``.

        Returns once every frame is handed to the data channel; waits first while more than ``high_water`` bytes
        are queued. Messages from concurrent calls are never interleaved.

        Raises:
            TypeError: ``data`` is neither str nor bytes.
            MessageTooLargeError: the message is over ``max_message_bytes`` (nothing was sent).
            ConnectionClosedError: the link is not open, or closed while waiting.
            ClosedError: this side closed the link.
        """
        if self._state is not LinkState.OPEN:
            raise self._not_open_error()
        if isinstance(data, str):
            kind, payload = TEXT, data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            kind, payload = BINARY, bytes(data)
        else:
            raise TypeError(f"a message must be str or bytes, not {type(data).__name__}")
        if len(payload) > self._options.max_message_bytes:
            raise MessageTooLargeError(
                f"the message is {len(payload)} bytes, over the WebRTC link's limit of "
                f"{self._options.max_message_bytes}",
                size=len(payload), limit=self._options.max_message_bytes,
            )
        channel = self._channel
        assert channel is not None
        if (self._slow_senders == 0 and len(payload) < MAX_PACKET_BYTES
                and channel.bufferedAmount <= self._options.high_water):
            # One frame, room in the buffer and nobody queued before us: send at once (no lock, no await), which
            # keeps the order of calls. Most messages take this path.
            self._channel_send(bytes((kind,)) + payload)
            self._frames_sent += 1
            return
        frames = encode_payload(kind, payload)
        self._slow_senders += 1
        try:
            async with self._send_lock:
                for frame in frames:
                    await self._wait_for_room()
                    self._channel_send(frame)
        finally:
            self._slow_senders -= 1
        self._frames_sent += len(frames)

    def send_now(self, data: str | bytes) -> bool:
        """Send a one-frame message at once, if the channel has room and no ``send()`` waits; else return False.

        For a caller that keeps its own queue: when this returns False, ``await send(data)`` keeps the order.

        Raises:
            ConnectionClosedError: the data channel closed.
        """
        if self._state is not LinkState.OPEN or self._slow_senders:
            return False
        if isinstance(data, str):
            frame = bytes((TEXT,)) + data.encode("utf-8")
        else:
            frame = bytes((BINARY,)) + bytes(data)
        channel = self._channel
        assert channel is not None
        if len(frame) > MAX_PACKET_BYTES or channel.bufferedAmount > self._options.high_water:
            return False
        self._channel_send(frame)
        self._frames_sent += 1
        return True

    async def _wait_for_room(self) -> None:
        channel = self._channel
        assert channel is not None
        while channel.bufferedAmount > self._options.high_water:
            # bufferedamountlow fires when the amount crosses down to low_water; no await between check and clear.
            self._room.clear()
            if self._state is not LinkState.OPEN:
                break
            await self._room.wait()
        if self._state is not LinkState.OPEN:
            raise self._not_open_error()

    def _channel_send(self, frame: bytes) -> None:
        assert self._channel is not None
        try:
            self._channel.send(frame)
        except InvalidStateError as exc:
            raise ConnectionClosedError("the WebRTC data channel closed while sending") from exc

    def _not_open_error(self) -> PeerchatError:
        if self._state is LinkState.CLOSED:
            return self._closed_error()
        return ConnectionClosedError("the WebRTC link is not open yet; await open() first")

    def _closed_error(self) -> PeerchatError:
        info = self._closed_info
        if info is None or info.initiator == "local":
            return ClosedError("this WebRTC link was closed; open a new one")
        return ConnectionClosedError(f"the WebRTC link closed: {info.reason}")

    # -- receiving and liveness ----------------------------------------------------------------------------

    def _on_frame(self, frame: bytes | str) -> None:
        self._frames_received += 1
        try:
            decoded = self._decoder.feed(frame)  # type: ignore[arg-type]
        except ProtocolError as exc:
            log.warning("dropped a malformed frame from the other device: %s", exc)
            emit_safely(self.events, "protocol_error", ProtocolErrorEvent(exc))
            return
        if isinstance(decoded, ChannelMessage):
            emit_safely(self.events, "message", decoded)
        elif isinstance(decoded, Close):
            self._peer_close_reason = decoded.reason
            self._begin_shutdown("peer", self._peer_closed_reason(), None)

    def _peer_closed_reason(self) -> str:
        said = f" ({self._peer_close_reason})" if self._peer_close_reason else ""
        return f"the other device closed the link{said}"

    def _on_channel_close(self) -> None:
        if self._peer_close_reason is not None:
            self._begin_shutdown("peer", self._peer_closed_reason(), None)
        else:
            self._begin_shutdown("failure", "the data channel closed unexpectedly", None)

    def _on_connection_state(self) -> None:
        pc = self._pc
        if pc is None or self._state is LinkState.CLOSED:
            return
        if pc.connectionState == "failed":
            reason = self._failure_reason()
            error: UpgradeError | None = None
            if self._state is LinkState.CONNECTING:
                error = self._no_route() if pc.iceConnectionState == "failed" else UpgradeError(reason)
            self._begin_shutdown("failure", reason, error)
        elif pc.connectionState == "closed":
            if self._peer_close_reason is not None:
                self._begin_shutdown("peer", self._peer_closed_reason(), None)
            else:
                self._begin_shutdown("failure", "the WebRTC connection closed", None)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        interval, idle = self._options.keepalive_interval, self._options.idle_timeout
        heard = spoke = loop.time()
        received, sent = self._frames_received, self._frames_sent
        while self._state is LinkState.OPEN:
            await asyncio.sleep(min(interval, idle / 4) / 2)
            now = loop.time()
            if self._frames_received != received:
                received, heard = self._frames_received, now
            if self._frames_sent != sent:
                sent, spoke = self._frames_sent, now
            if now - heard > idle:
                self._begin_shutdown("failure", f"nothing arrived from the other device for {idle:g} s", None)
                return
            if now - spoke >= interval and self._channel is not None:
                if self._channel.readyState == "open" and self._channel.bufferedAmount == 0:
                    self._channel.send(encode_keepalive())
                    self._frames_sent += 1

    # -- closing -------------------------------------------------------------------------------------------

    async def close(self, reason: str = "") -> None:
        """Close the link and release its sockets and tasks; the peer sees initiator "peer". Safe to call twice."""
        await asyncio.shield(self._begin_shutdown("local", "this device closed the link", None, reason))

    async def abort(self, reason: str) -> None:
        """Give up on the link for ``reason`` (initiator "failure"); a waiting ``open()`` raises UpgradeError(reason).

        For the owner's own verdicts, such as the other device declining WebRTC. Safe after close (no effect).
        """
        error = UpgradeError(reason) if self._state is not LinkState.OPEN else ConnectionClosedError(reason)
        await asyncio.shield(self._begin_shutdown("failure", reason, error))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _begin_shutdown(
        self, initiator: Initiator, reason: str, error: PeerchatError | None, said: str = ""
    ) -> asyncio.Task[None]:
        if self._shutdown_task is None:
            if error is None:
                error = ClosedError(reason) if initiator == "local" else ConnectionClosedError(reason)
            self._shutdown_task = asyncio.ensure_future(self._shutdown(LinkClosed(reason, initiator, error), said))
        return self._shutdown_task

    async def _shutdown(self, info: LinkClosed, said: str) -> None:
        was_open = self._state is LinkState.OPEN
        self._state = LinkState.CLOSED
        self._closed_info = info
        self._room.set()  # wake senders waiting for room: they see CLOSED and raise
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(info.error if isinstance(info.error, UpgradeError) else ClosedError(
                f"the WebRTC link closed before it opened: {info.reason}"))
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
        channel = self._channel
        if info.initiator == "local" and was_open and channel is not None and channel.readyState == "open":
            await self._say_goodbye(channel, said)
        if self._pc is not None:
            await self._pc.close()
        log.debug("WebRTC link closed (%s): %s", info.initiator, info.reason)
        emit_safely(self.events, "closed", info)

    async def _say_goodbye(self, channel: RTCDataChannel, said: str) -> None:
        """Send a close frame and give it (and what is queued before it) ``close_linger`` seconds to leave."""
        channel.bufferedAmountLowThreshold = 0
        drained = asyncio.Event()
        channel.on("bufferedamountlow", drained.set)
        channel.send(encode_close(said))
        try:
            async with asyncio.timeout(self._options.close_linger):
                await drained.wait()
                # The frame is in SCTP's queue now; one more turn of the loop puts it on the wire.
                await asyncio.sleep(0)
        except TimeoutError:
            log.debug("the close frame did not leave within %g s", self._options.close_linger)
