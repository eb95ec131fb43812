"""Event names and their payloads (frozen dataclasses) emitted by managers and connections.

Managers (``PeerConnectionManager.events``):

- ``incoming_connection``  -> :class:`IncomingConnection`  another device opened a connection to this one
- ``connection_closed``    -> :class:`ConnectionClosed`    a connection of this manager ended
- ``peers_changed``        -> :class:`PeersChanged`        the set of this user's online (or known) devices changed
- ``relay_unavailable``    -> :class:`RelayUnavailable`    the relay (the database) stopped answering; retrying
- ``relay_restored``       -> :class:`RelayRestored`       the relay answers again after an outage
- ``awaiting_accept``      -> :class:`AwaitingAccept`      connect_to_peer's handshake is done; the other side decides
- ``peer_key_changed``     -> :class:`PeerKeyChanged`      a device showed another key than the remembered one; refused

Connections (``PeerConnection.events``):

- ``data``            -> :class:`Data`            a string arrived from the peer
- ``binary``          -> :class:`BinaryData`      bytes arrived from the peer (``send_bytes``)
- ``latency``         -> :class:`Latency`         a new round-trip time was measured
- ``slow``            -> :class:`Slow`            something has been waiting longer than it should
- ``recovered``       -> :class:`Recovered`       what was slow is no longer waiting
- ``link_changed``    -> :class:`LinkChanged`     the link carrying the data changed (relay <-> webrtc)
- ``upgrade_failed``  -> :class:`UpgradeFailed`   a WebRTC upgrade attempt failed; the relay keeps working
- ``protocol_error``  -> :class:`ProtocolErrorEvent` malformed data arrived and was ignored
- ``closed``          -> :class:`ConnectionClosed` the connection ended (same payload as the manager's)

File transfers (``core.files.FileTransfers.events``, one object per connection; payloads in
:mod:`core.files.events`):

- ``incoming_transfer``   -> :class:`IncomingTransfer`   the peer offers files: ``accept()`` or ``decline()`` them
- ``transfer_progress``   -> :class:`TransferProgress`   bytes done, total, rate and time left (a few per second)
- ``transfer_file_done``  -> :class:`TransferFileDone`   one file arrived and its SHA-256 matched
- ``transfer_finished``   -> :class:`TransferFinished`   every file of a transfer arrived intact
- ``transfer_failed``     -> :class:`TransferFailed`     a transfer ended early (declined, cancelled, disk, ...)
- ``protocol_error``      -> :class:`ProtocolErrorEvent` a malformed transfer frame arrived and was ignored
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .peer import DeviceStatus, PeerConnection, PeerInfo, Route, Transport, UpgradeFailed

CloseReason = Literal["peer-requested-closed", "connection-error", "local-closed"]

INCOMING_CONNECTION = "incoming_connection"
CONNECTION_CLOSED = "connection_closed"
PEERS_CHANGED = "peers_changed"
RELAY_UNAVAILABLE = "relay_unavailable"
RELAY_RESTORED = "relay_restored"
AWAITING_ACCEPT = "awaiting_accept"
PEER_KEY_CHANGED = "peer_key_changed"

DATA = "data"
BINARY = "binary"
LATENCY = "latency"
SLOW = "slow"
RECOVERED = "recovered"
LINK_CHANGED = "link_changed"
UPGRADE_FAILED = "upgrade_failed"
PROTOCOL_ERROR = "protocol_error"
CLOSED = "closed"

INCOMING_TRANSFER = "incoming_transfer"
TRANSFER_PROGRESS = "transfer_progress"
TRANSFER_FILE_DONE = "transfer_file_done"
TRANSFER_FINISHED = "transfer_finished"
TRANSFER_FAILED = "transfer_failed"

@dataclass(frozen=True)
class IncomingConnection:
    connection: PeerConnection


@dataclass(frozen=True)
class ConnectionClosed:
    """``reason`` is "peer-requested-closed" (the peer disconnected), "connection-error" (see ``error``) or
    "local-closed" (this side called ``disconnect()`` or ``decline()``). When the peer declined the connection,
    ``reason`` is "peer-requested-closed" and ``error`` a :class:`~core.errors.ConnectionDeclinedError`."""

    connection: PeerConnection
    reason: CloseReason
    error: BaseException | None = None


@dataclass(frozen=True)
class PeersChanged:
    """``peers``: the devices online now. ``devices``: every device presence knows, online or not, with its
    last-seen time (empty from a manager that does not keep them; see ``get_known_peers()``)."""

    peers: tuple[PeerInfo, ...]
    devices: tuple[DeviceStatus, ...] = ()


@dataclass(frozen=True)
class RelayUnavailable:
    """The relay stopped answering ``since`` (wall-clock seconds since the epoch, when the first failure of this
    outage happened); ``reason`` says why in words a person can read, ``error`` is the failure itself. The manager
    keeps retrying; emitted once per outage."""

    reason: str
    since: float
    error: BaseException | None = None


@dataclass(frozen=True)
class RelayRestored:
    """The relay answers again; the outage began ``since`` (wall-clock seconds) and lasted ``duration`` seconds."""

    since: float
    duration: float


@dataclass(frozen=True)
class AwaitingAccept:
    """``connect_to_peer`` to ``peer`` now waits for it to accept (for at most ``timeout`` seconds); a ``slow``
    event on the manager follows if that takes long."""

    peer: PeerInfo
    session_id: str
    timeout: float


@dataclass(frozen=True)
class PeerKeyChanged:
    """``peer`` presented a key with fingerprint ``presented``, not the remembered ``remembered``: its session was
    refused. Forget the old key (after checking on the device) to accept the new one."""

    peer: PeerInfo
    remembered: str
    presented: str


@dataclass(frozen=True)
class Data:
    data: str


@dataclass(frozen=True)
class BinaryData:
    data: bytes


@dataclass(frozen=True)
class Latency:
    """``rtt`` in seconds, measured over ``transport``."""

    rtt: float
    transport: Transport


@dataclass(frozen=True)
class Slow:
    """``what`` has been waiting ``waited`` seconds; it fails after ``timeout`` seconds."""

    what: str
    waited: float
    timeout: float


@dataclass(frozen=True)
class Recovered:
    what: str


@dataclass(frozen=True)
class LinkChanged:
    """The data moved from ``previous`` to ``transport`` because of ``reason``; ``route`` says how a direct link
    gets through (None on the relay)."""

    transport: Transport
    previous: Transport
    reason: str
    route: Route | None = None


@dataclass(frozen=True)
class ProtocolErrorEvent:
    error: BaseException


__all__ = [
    "AWAITING_ACCEPT", "PEER_KEY_CHANGED", "AwaitingAccept", "PeerKeyChanged", "BINARY", "CLOSED", "CONNECTION_CLOSED", "DATA", "INCOMING_CONNECTION", "INCOMING_TRANSFER", "LATENCY",
    "LINK_CHANGED", "PEERS_CHANGED", "PROTOCOL_ERROR", "RECOVERED", "RELAY_RESTORED", "RELAY_UNAVAILABLE", "SLOW",
    "TRANSFER_FAILED", "TRANSFER_FILE_DONE", "TRANSFER_FINISHED", "TRANSFER_PROGRESS", "UPGRADE_FAILED",
    "BinaryData", "CloseReason", "ConnectionClosed", "Data", "IncomingConnection", "Latency", "LinkChanged",
    "PeersChanged", "ProtocolErrorEvent", "Recovered", "RelayRestored", "RelayUnavailable", "Route", "Slow", "Transport",
    "UpgradeFailed",
]
