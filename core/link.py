"""The seam between a connection and the links that carry it, declared here so that neither side imports the other.

- :class:`Link`: a link other than the relay (a WebRTC data channel, a direct TCP + TLS connection) that carries a
  connection's frames.
- :class:`LinkHost`: what an upgrade needs from the connection it upgrades: who initiated, attach and detach a
  link, hand it every frame that arrives, a signalling channel to the peer, and the place to report a failure.
  :class:`core.relay.connection.RelayConnection` is one; the WebRTC and direct upgrades (:mod:`core.webrtc.upgrade`,
  :mod:`core.direct.upgrade`, composed by :mod:`core.links`) only ever see this interface.
- :data:`Upgrader`: ``await upgrader(host)``, run once per new connection on both sides before hand-out.

Frames are the small dicts of the reliable stream (:mod:`core.protocol.stream`).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pyee.asyncio import AsyncIOEventEmitter

from .peer import PeerInfo, Route, Transport


class Link(abc.ABC):
    """A link other than the relay that carries a connection's frames.

    The link calls :meth:`LinkHost.receive_frame` for every frame that arrives, and :meth:`LinkHost.detach_link`
    when it fails.
    """

    transport: Transport

    @property
    def route(self) -> Route | None:
        """How the link reaches the peer (its ICE candidate pair), once known; None when it cannot say."""
        return None

    @abc.abstractmethod
    def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the peer without blocking; raise (any exception) if the link is broken."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the link (the connection calls it when it detaches the link or closes)."""


class LinkHost(Protocol):
    """What an upgrade uses of a connection (see the module docstring)."""

    events: AsyncIOEventEmitter
    is_initiator: bool

    @property
    def peer(self) -> PeerInfo: ...

    @property
    def session_id(self) -> str: ...

    @property
    def is_closed(self) -> bool: ...

    def attach_link(self, link: Link, reason: str = "upgraded") -> None:
        """Carry frames over ``link`` from now on; every unacknowledged frame is written on it again."""

    def detach_link(self, link: Link, reason: str = "link failed") -> None:
        """Stop using ``link``; the relay carries frames again, unacknowledged ones first."""

    def receive_frame(self, frame: object) -> None:
        """A frame arrived on a link."""

    def receive_frames(self, frames: list[Any]) -> None:
        """Frames arrived together on a link, in this order (the same as :meth:`receive_frame` for each)."""

    async def send_signal(self, signal: dict[str, Any]) -> None:
        """Send a signalling message (a JSON object) to the peer, reliably and in order."""

    def set_signal_handler(self, handler: Callable[[dict[str, Any]], Any] | None) -> None:
        """Receive the peer's signals in order (plain or async handler; early signals are replayed)."""

    def report_upgrade_failure(self, error: BaseException) -> None:
        """An upgrade attempt failed: the connection keeps it as ``upgrade_failure`` and emits ``upgrade_failed``."""


Upgrader = Callable[[LinkHost], Awaitable[None]]
"""``await upgrader(host)`` runs once per new connection, on both sides, before it is handed out.
``host.is_initiator`` says which side this is. An exception becomes the connection's ``upgrade_failure`` and an
``upgrade_failed`` event (emitted right after the connection is handed out); the connection keeps working over
the relay."""
