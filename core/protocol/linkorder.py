"""Which link carries a connection, decided without I/O: :class:`LinkOrder` takes what happened to the links and
returns what to do.

Every session starts on the relay; the direct link and WebRTC are tried together. Direct carries the data whenever
it is open; WebRTC when only it is open; the relay otherwise. A WebRTC link that opens while direct carries the
data is kept in reserve. When the attached link breaks the connection falls back to the relay (the reliable stream
resends what was not acknowledged, so nothing is lost or repeated), direct is tried again, and a WebRTC link in
reserve takes over if that try fails. A failed direct try is repeated after ``retry_interval``, doubled after each
further failure up to ``MAX_BACKOFF`` times (devices that cannot reach each other do not signal every few seconds
for hours), unless the other side turned the direct link off.

Only the initiator starts tries (the other side answers them), so only its :class:`LinkOrder` asks for retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Attach", "Detach", "LinkKind", "LinkOrder", "Report", "Retry"]

LinkKind = Literal["direct", "webrtc"]
RANK: dict[str, int] = {"webrtc": 1, "direct": 2}
MAX_BACKOFF = 16


@dataclass(frozen=True)
class Attach:
    """Carry the data over this link now (replacing the attached one, if any)."""

    kind: LinkKind
    reason: str


@dataclass(frozen=True)
class Detach:
    """Stop using this link: the relay carries the data again."""

    kind: LinkKind
    reason: str


@dataclass(frozen=True)
class Retry:
    """Start a new try of this link after ``delay`` seconds."""

    kind: LinkKind
    delay: float


@dataclass(frozen=True)
class Report:
    """Tell the consumer that the connection stays on the relay because this try failed."""

    kind: LinkKind
    reason: str


Action = Attach | Detach | Retry | Report


class LinkOrder:
    """The link decisions of one connection (see the module docstring).

    Args:
        initiator: this side starts tries (the other side only answers).
        direct: the direct link is turned on here.
        retry_interval: seconds before a failed direct try is repeated (None: never).
    """

    def __init__(self, *, initiator: bool, direct: bool = True, retry_interval: float | None = 15.0) -> None:
        self.initiator = initiator
        self.direct_enabled = direct
        self.retry_interval = retry_interval
        self.attached: LinkKind | None = None
        self.open: set[LinkKind] = set()
        self.peer_declined: set[LinkKind] = set()
        self.closed = False
        self.direct_failures = 0  # in a row, since direct was last open
        self._retry_pending = False

    def opened(self, kind: LinkKind) -> list[Action]:
        """A link opened."""
        self.open.add(kind)
        if self.closed:
            return []
        if kind == "direct":
            self._retry_pending = False
            self.direct_failures = 0
        if self.attached is None or RANK[kind] >= RANK[self.attached]:
            # A newer link of the attached kind replaces the old one too.
            previous, self.attached = self.attached, kind
            reason = "upgraded" if previous in (None, kind) else f"{kind} opened, faster than {previous}"
            if kind == "webrtc" and previous is None and self.direct_enabled:
                reason = "upgraded (no direct link yet)"
            if previous is not None and previous != kind:
                self.open.discard(previous)  # the connection closes the link it replaces
            return [Attach(kind, reason)]
        return []  # kept in reserve

    def failed(self, kind: LinkKind, reason: str) -> list[Action]:
        """A try of a link failed (it never opened)."""
        if self.closed:
            return []
        actions: list[Action] = []
        if kind == "direct":
            self._retry_pending = False
            self.direct_failures += 1
            if self.attached is None and "webrtc" in self.open:
                self.attached = "webrtc"
                actions.append(Attach("webrtc", f"the direct link failed ({reason}); WebRTC is open"))
            actions += self._retry_direct()
        if self.attached is None:
            actions.append(Report(kind, reason))
        return actions

    def lost(self, kind: LinkKind, reason: str) -> list[Action]:
        """An open link broke (or closed)."""
        self.open.discard(kind)
        if self.closed:
            return []
        actions: list[Action] = []
        if self.attached == kind:
            self.attached = None
            actions.append(Detach(kind, reason))
            if kind == "direct" and self.initiator and self.direct_enabled and "direct" not in self.peer_declined:
                # Direct first again, at once; WebRTC in reserve takes over if that try fails.
                self._retry_pending = True
                actions.append(Retry("direct", 0.0))
            elif kind == "webrtc" and "direct" in self.open:
                self.attached = "direct"
                actions.append(Attach("direct", "WebRTC lost; the direct link is open"))
            elif kind == "direct" and "webrtc" in self.open:
                self.attached = "webrtc"
                actions.append(Attach("webrtc", f"the direct link was lost ({reason}); WebRTC is open"))
        elif kind == "direct":
            actions += self._retry_direct()
        return actions

    def declined(self, kind: LinkKind) -> list[Action]:
        """The other side turned this link off: stop trying it."""
        self.peer_declined.add(kind)
        return []

    def close(self) -> None:
        """The connection closed: nothing more to decide."""
        self.closed = True

    def _retry_direct(self) -> list[Action]:
        if (not self.initiator or not self.direct_enabled or "direct" in self.peer_declined
                or self.retry_interval is None or self._retry_pending or self.closed):
            return []
        self._retry_pending = True
        backoff = min(2 ** max(0, self.direct_failures - 1), MAX_BACKOFF)
        return [Retry("direct", self.retry_interval * backoff)]
