"""Every time-out, interval and threshold of `core`, in one frozen dataclass with sensible defaults."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server for WebRTC on real networks."""

    urls: str | tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class ManagerOptions:
    """Time-outs are in seconds. Change a copy with ``dataclasses.replace(options, ...)``."""

    # Presence: a device is online while its heartbeat is younger than ``heartbeat_interval * presence_misses``.
    heartbeat_interval: float = 5.0
    presence_misses: int = 3
    # Connecting: the whole of connect_to_peer (negotiation, answer, upgrade attempt) must finish within this.
    connect_timeout: float = 15.0
    # A negotiation request older than this is stale and ignored.
    negotiation_max_age: float = 30.0
    # Relay sessions: how long a sent message may wait for its acknowledgement before the send fails.
    ack_timeout: float = 20.0
    retransmit_interval: float = 2.0
    # How many unacknowledged messages a sender keeps in flight on the relay.
    send_window: int = 32
    # A receiver delays acknowledgements this long to coalesce them (unless the sender waits for confirmation).
    ack_delay: float = 0.05
    # Latency probes, and when waiting counts as slow (a ``slow`` event).
    ping_interval: float = 2.0
    slow_after: float = 2.0
    # The peer is considered gone when nothing (data, ack or ping) arrived for this long.
    peer_timeout: float = 15.0
    # disconnect() waits this long for the peer to acknowledge the close before deleting the session's data.
    close_timeout: float = 3.0
    # A listener that delivered nothing (not even a keep-alive) for this long is resubscribed.
    listener_silence_timeout: float = 45.0
    # The largest message ``send()`` accepts over the relay, in UTF-8 bytes (the security rules allow the same).
    max_message_bytes: int = 64 * 1024
    # WebRTC.
    webrtc: bool = True
    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    upgrade_timeout: float = 5.0
    reupgrade_interval: float = 15.0
