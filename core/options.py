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
    """Time-outs are in seconds. Change a copy with ``dataclasses.replace(options, ...)``.

    Connecting takes three steps with their own bounds: negotiation and the key exchange (the peer answers) within
    ``connect_timeout``, the other side's acceptance within ``accept_timeout`` (a person may have to answer), then
    the upgrade attempts: the direct link within ``direct_timeout`` and WebRTC within ``upgrade_timeout``, tried
    together. The answering side hands a connection out
    (``incoming_connection``) only after its upgrade attempt, so when the initiator has no WebRTC at all it waits up
    to ``upgrade_timeout`` for an offer first. Keep ``connect_timeout`` above ``upgrade_timeout`` plus a margin for
    the relay's round trips (the defaults: 15 s > 5 s + 10 s), so a slow answer is never mistaken for a dead peer
    while the other side is still trying WebRTC.
    """

    # Presence: a device is online while its heartbeat is younger than ``heartbeat_interval * presence_misses``.
    heartbeat_interval: float = 5.0
    presence_misses: int = 3
    # On stop(), leave this device's presence record as "offline, last seen now" (True), or remove it (False: a
    # short-lived device, such as a command-line tool, that nobody should list once it is gone).
    leave_presence: bool = True
    # Connecting: negotiation and the key exchange (the peer's answer) must finish within this.
    connect_timeout: float = 15.0
    # A negotiation request older than this is stale and ignored.
    negotiation_max_age: float = 30.0
    # Relay sessions: how long a sent message may wait for its acknowledgement before the send fails.
    ack_timeout: float = 20.0
    retransmit_interval: float = 2.0
    # How many unacknowledged frames a sender keeps in flight on the relay, and while a WebRTC link carries them
    # (a receiver acknowledges every quarter window, so a larger window means fewer acknowledgements to carry).
    send_window: int = 32
    webrtc_send_window: int = 512
    # ... and at most this many bytes of frame data in flight, whatever the number of frames.
    send_window_bytes: int = 4 * 1024 * 1024
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
    # The largest whole message ``send()`` accepts, in UTF-8 bytes (``send_bytes()``: in bytes). Larger messages
    # raise MessageTooLargeError before anything is written; a receiver refuses (closes with a protocol error) a
    # fragmented message over it. Messages over one relay frame are split into fragments and joined again.
    max_message_bytes: int = 16 * 1024 * 1024
    # The most characters of ``data`` in one stored relay frame: the security rules allow exactly this (65,536);
    # change it only together with ``firebase/database.rules.json``. Binary data takes 4/3 as much (base64).
    relay_frame_bytes: int = 64 * 1024
    # Compress what a session writes to the relay (messages, file chunks, signalling) before sealing it, when that
    # saves at least an eighth (zlib's fastest level, each frame on its own; data that does not shrink, such as
    # photos or archives, is detected on a 2 KiB sample and written as it is). Text is sealed as base64, 4/3 its
    # size; compressed, ordinary text takes about half the relay's bytes of plain text instead.
    # The trade-off: the database sees each frame's size, and compressed, the size depends on what the frame says,
    # not only on how long it is. Someone who can read the database AND get chosen text into the same message as a
    # secret, many times over, could learn the secret from the sizes (as CRIME and BREACH did to HTTPS). Frames are
    # compressed one by one, never with another message, so this needs one message that mixes both. Between one
    # person's own devices, as in peerchat, nobody else writes into a message; a library user who builds messages
    # from attacker-chosen text and secrets together should turn this off. Only what this side writes: a receiver
    # opens either kind of frame.
    relay_compression: bool = True
    # Trust: how long connect_to_peer waits for the other side to accept (a person may have to answer), and
    # whether only devices verified with the comparison code may open sessions (both ways).
    accept_timeout: float = 60.0
    require_verified: bool = False
    # WebRTC.
    webrtc: bool = True
    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    upgrade_timeout: float = 5.0
    reupgrade_interval: float = 15.0
    # The local addresses the direct link and WebRTC may use (None: every interface, and 127.0.0.1).
    addresses: tuple[str, ...] | None = None
    # The direct link (TCP with mutual TLS 1.3), tried together with WebRTC; how long one attempt may take.
    direct: bool = True
    direct_timeout: float = 3.0
    # File transfers (core.files), as the receiving side. Offers being received or waiting for an answer, at once
    # on one connection: one more is declined, saying why.
    max_pending_offers: int = 16
    # An offer sent in several parts whose next part does not come within this is dropped (a protocol error).
    offer_idle_timeout: float = 60.0
    # An accepted transfer through which nothing arrives for this long stops as interrupted (it can be resumed).
    transfer_idle_timeout: float = 120.0
    # Resume records and the .part files they created are deleted once older than this (seven days).
    resume_max_age: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be at least 1, not {self.max_message_bytes}")
        if self.relay_frame_bytes < 16:
            raise ValueError(f"relay_frame_bytes must be at least 16, not {self.relay_frame_bytes}")
        if not (1 <= self.send_window <= 4096 and 1 <= self.webrtc_send_window <= 4096):
            raise ValueError(
                f"send_window and webrtc_send_window must be 1 to 4096 frames, not {self.send_window}, "
                f"{self.webrtc_send_window}"
            )
        if self.direct_timeout <= 0:
            raise ValueError(f"direct_timeout must be above 0 seconds, not {self.direct_timeout}")
        if self.addresses is not None and not (isinstance(self.addresses, tuple) and self.addresses):
            raise ValueError(f"addresses must be a non-empty tuple of IP addresses or None, not {self.addresses!r}")
        if self.send_window_bytes < 1:
            raise ValueError(f"send_window_bytes must be at least 1, not {self.send_window_bytes}")
        if self.max_pending_offers < 1:
            raise ValueError(f"max_pending_offers must be at least 1, not {self.max_pending_offers}")
        for name in ("offer_idle_timeout", "transfer_idle_timeout", "resume_max_age"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds, not {getattr(self, name)}")
