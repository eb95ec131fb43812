"""The consumer-facing interfaces: :class:`PeerInfo`, :class:`DeviceStatus`, :class:`PeerConnection` and
:class:`PeerConnectionManager`, with what they need: :data:`Transport` and :class:`UpgradeFailed`.

A :class:`ConnectionRequest` is what an ``accept`` callable is asked. The bottom of ``core`` with ``errors``, ``options`` and ``events``: it imports nothing else from ``core``."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, Self

from pyee.asyncio import AsyncIOEventEmitter

Transport = Literal["relay", "webrtc"]
"""The link that carries a connection's data now."""

RouteKind = Literal["host", "nat", "turn"]
"""How a direct link gets through: see :class:`Route`."""

_REFLEXIVE = ("srflx", "prflx")


@dataclass(frozen=True)
class Route:
    """How a direct (WebRTC) link reaches the other device: the ICE candidate pair it uses.

    ``kind`` sums it up for a person:

    - ``"host"``: between the devices' own addresses (the same network, or nothing translating between them);
    - ``"nat"``: through a NAT, at the public address a STUN server (server-reflexive) or the other device
      (peer-reflexive) saw: the usual case for two homes;
    - ``"turn"``: through a TURN relay server (a strict NAT or firewall on the way); still encrypted end to end.

    ``local`` and ``remote`` are the ICE candidate types on each side: ``host``, ``srflx``, ``prflx`` or ``relay``.
    """

    kind: RouteKind
    local: str
    remote: str

    @classmethod
    def from_candidates(cls, local: str, remote: str) -> Route:
        """The route of a candidate pair whose local and remote candidates have these ICE types."""
        if "relay" in (local, remote):
            kind: RouteKind = "turn"
        elif local in _REFLEXIVE or remote in _REFLEXIVE:
            kind = "nat"
        else:
            kind = "host"
        return cls(kind, local, remote)

    def __str__(self) -> str:
        return {"host": "via host", "nat": "via NAT", "turn": "via TURN relay"}[self.kind]


@dataclass(frozen=True)
class UpgradeFailed:
    """A WebRTC upgrade attempt failed (``reason`` in words, ``error`` the failure); the relay keeps working."""

    reason: str
    error: BaseException | None = None


@dataclass(frozen=True)
class PeerInfo:
    """One of the user's devices: a stable ``id`` and a human ``label`` ("laptop")."""

    id: str
    label: str


@dataclass(frozen=True)
class DeviceStatus:
    """One of the user's other devices as presence knows it, online or not.

    ``last_seen`` is when its last heartbeat was written, in seconds since the epoch on THIS machine's clock (the
    server's timestamp corrected by the estimated clock offset), or None when the manager cannot tell.
    """

    info: PeerInfo
    online: bool
    last_seen: float | None = None
    key: str | None = None
    """The identity key the device publishes in its presence record (base64), or None. Only a hint for display:
    what a session trusts is the key the device proves in the session's handshake."""


@dataclass(frozen=True)
class ConnectionRequest:
    """Another device asks to open a session; the manager's ``accept`` callable answers it.

    ``trust`` is "verified" (a person compared the comparison code), "trusted" (its key is remembered from an
    earlier session) or "new" (never seen: accepting remembers its key). ``fingerprint`` names the key it proved
    in the handshake; ``key`` is that key (base64), for a comparison code.
    """

    peer: PeerInfo
    trust: str
    fingerprint: str
    key: str
    session_id: str


MAX_DECLINE_REASON = 200
"""The longest ``reason`` :meth:`PeerConnection.decline` accepts, in characters."""


class PeerConnection(abc.ABC):
    """A message channel to one of the user's devices. Whether the relay or WebRTC carries it is hidden.

    Use it as ``async with connection:`` to disconnect on exit.
    """

    events: AsyncIOEventEmitter

    @property
    @abc.abstractmethod
    def peer(self) -> PeerInfo: ...

    @property
    @abc.abstractmethod
    def session_id(self) -> str: ...

    @property
    @abc.abstractmethod
    def transport(self) -> Transport:
        """``"relay"`` or ``"webrtc"``: the link that carries data now."""

    @property
    @abc.abstractmethod
    def rtt(self) -> float | None:
        """The last measured round-trip time in seconds, or None before the first measurement."""

    @property
    @abc.abstractmethod
    def is_slow(self) -> bool:
        """True while something on this connection waits longer than it should (see the ``slow`` event)."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool: ...

    @property
    def max_bytes_message(self) -> int | None:
        """The largest ``send_bytes()`` message that travels as ONE frame on every link this connection may use, or
        None when the connection does not say (features such as file transfers then assume a conservative size)."""
        return None

    @property
    def keeps_call_order(self) -> bool:
        """True when messages from ``send()`` / ``send_bytes()`` calls started one after the other without awaiting
        are delivered in the order of the calls, so a caller may keep several sends in flight at once. False (the
        default) tells such callers to await each send before the next."""
        return False

    @property
    def route(self) -> Route | None:
        """How the direct link that carries data now reaches the peer (``str(route)``: "via host", "via NAT" or
        "via TURN relay"), or None while the relay carries it or when the connection does not say."""
        return None

    @property
    def upgrade_failure(self) -> UpgradeFailed | None:
        """Why the last WebRTC upgrade attempt failed while the relay carries the data, or None (no attempt failed,
        or WebRTC carries the data now). A failure before the connection was handed out is here at once, and its
        ``upgrade_failed`` event is emitted right after hand-out."""
        return None

    @abc.abstractmethod
    async def send(self, data: str) -> None:
        """Send a string. With ``confirm_data_receival`` returns once the peer's application received it.

        A confirmed message reached the other device's application (its ``data`` event was emitted there), not the
        person: an app may still show it later, or the person may decline the connection after it arrived.
        """

    @abc.abstractmethod
    async def send_bytes(self, data: bytes) -> None:
        """Send bytes (a binary frame over WebRTC, a compact encoding over the relay)."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Close the connection; the peer sees ``peer-requested-closed``. Safe to call twice."""

    async def decline(self, reason: str | None = None) -> None:
        """Close the connection telling the peer it was declined (a person refused the incoming connection).

        The peer's connection closes with ``peer-requested-closed`` and a
        :class:`~core.errors.ConnectionDeclinedError` as ``error`` ("laptop declined the connection"), and its
        pending and later sends raise that error. ``reason`` (at most ``MAX_DECLINE_REASON`` characters) is shown
        to the peer. The default only disconnects; the peer cannot tell. Safe to call twice.
        """
        await self.disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()


class PeerConnectionManager(abc.ABC):
    """Shows which of the user's devices are online and opens connections to them.

    Use it as ``async with manager:`` (``start()`` on entry, ``stop()`` on exit).
    """

    events: AsyncIOEventEmitter

    @property
    @abc.abstractmethod
    def device(self) -> PeerInfo:
        """This device."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def get_online_peers(self) -> list[PeerInfo]:
        """This user's other devices that are online now."""

    async def get_known_peers(self) -> list[DeviceStatus]:
        """This user's other devices known to presence, online or not, with when each was last seen.

        The default lists the online devices only, with no last-seen time; managers that keep more override it.
        """
        return [DeviceStatus(peer, True) for peer in await self.get_online_peers()]

    @abc.abstractmethod
    async def connect_to_peer(self, peer_id: str, *, confirm_data_receival: bool = False) -> PeerConnection: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
