"""Presence: which of the user's devices are online, from heartbeats that carry the server's timestamp.

firebase-admin has no ``onDisconnect``, so Firebase's presence pattern is adapted with heartbeats. Every device
writes ``presence/{userId}/{deviceId} = {label, lastSeen: <server timestamp>, online: true}`` every
``heartbeat_interval`` seconds, and ``online: false`` when it stops cleanly (so it shows offline at once). A device
that crashed stops writing; it counts as offline once its ``lastSeen`` is older than ``heartbeat_interval *
presence_misses`` (three intervals by default).

Freshness is judged against the *server's* clock, because ``lastSeen`` is server time and this machine's clock
may differ. :class:`PresenceView` estimates the offset from this device's own heartbeats: when one comes back
through the listener, ``lastSeen - local_time_of_arrival`` is the offset minus the (non-negative) delay, so the
largest recent sample is the best estimate.

The heartbeat task that writes the records is :class:`core.relay.heartbeat.Heartbeat`. This module holds :class:`PresenceView` (no I/O: it takes the listened value and the local time) and
:class:`RelayHealth` (no I/O), which turns the heartbeat's and the listeners' successes and failures into one
``relay_unavailable`` / ``relay_restored`` transition per outage.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..events import RelayRestored, RelayUnavailable
from ..peer import DeviceStatus, PeerInfo
from .identity import parse_key_text
from .records import valid_id, valid_label

@dataclass(frozen=True)
class _Record:
    label: str
    last_seen_ms: float
    online: bool
    key: str | None = None


@dataclass
class PresenceView:
    """The live local view of ``presence/{userId}``: feed it the listened value, ask it who is online.

    Args:
        own_id: this device (never listed among the peers, but its heartbeats calibrate the clock offset).
        stale_after: seconds after which a heartbeat no longer counts (``heartbeat_interval * presence_misses``).
    """

    own_id: str
    stale_after: float
    _records: dict[str, _Record] = field(default_factory=dict)
    _samples: deque[float] = field(default_factory=lambda: deque(maxlen=8))
    _last_own_seen: float | None = None
    _online: tuple[PeerInfo, ...] = ()
    _known: tuple[DeviceStatus, ...] = ()

    @property
    def offset(self) -> float | None:
        """Estimated ``server_clock - local_clock`` in seconds (None before this device's first heartbeat came back)."""
        return max(self._samples) if self._samples else None

    @property
    def online(self) -> tuple[PeerInfo, ...]:
        """The peers online at the last :meth:`update` or :meth:`refresh`, sorted by id."""
        return self._online

    @property
    def known(self) -> tuple[DeviceStatus, ...]:
        """Every other device with a record, online or not, sorted by id (as of the last :meth:`update` or
        :meth:`refresh`); ``last_seen`` is on the local clock."""
        return self._known

    def server_now(self, now: float) -> float:
        return now + (self.offset or 0.0)

    def update(self, devices: object, now: float) -> bool:
        """Replace the view with the value at ``presence/{userId}``; True if the online set changed (or a device
        appeared, disappeared, or changed its label or online flag).

        ``now`` is the local wall-clock time (seconds since the epoch) when the value arrived. Malformed
        records (from a buggy or hostile writer) are skipped.
        """
        records: dict[str, _Record] = {}
        if isinstance(devices, dict):
            for device_id, raw in devices.items():
                rec = _parse(device_id, raw)
                if rec is not None:
                    records[device_id] = rec
        self._records = records
        own = records.get(self.own_id)
        if own is not None and own.last_seen_ms != self._last_own_seen:
            self._last_own_seen = own.last_seen_ms
            self._samples.append(own.last_seen_ms / 1000.0 - now)
        return self.refresh(now)

    def refresh(self, now: float) -> bool:
        """Re-judge freshness at local time ``now`` (heartbeats age); True if the online set changed (or the known
        devices did, as in :meth:`update`)."""
        server_now = self.server_now(now)
        offset = self.offset or 0.0
        known = tuple(
            DeviceStatus(
                PeerInfo(device_id, rec.label),
                rec.online and server_now - rec.last_seen_ms / 1000.0 <= self.stale_after,
                rec.last_seen_ms / 1000.0 - offset,
                rec.key,
            )
            for device_id, rec in sorted(self._records.items())
            if device_id != self.own_id
        )
        online = tuple(status.info for status in known if status.online)
        # Heartbeats move last_seen all the time: only who is known, and as what, counts as a change.
        changed = online != self._online or [(s.info, s.online, s.key) for s in known] != [
            (s.info, s.online, s.key) for s in self._known
        ]
        self._online = online
        self._known = known
        return changed

    def get(self, device_id: str) -> PeerInfo | None:
        for peer in self._online:
            if peer.id == device_id:
                return peer
        return None


def peer_from_record(device_id: str, raw: object) -> PeerInfo | None:
    """The device a single presence record (``presence/{userId}/{deviceId}``) describes, or None if malformed."""
    rec = _parse(device_id, raw)
    return None if rec is None else PeerInfo(device_id, rec.label)


def _parse(device_id: object, raw: object) -> _Record | None:
    if not valid_id(device_id) or not isinstance(raw, dict):
        return None
    label, last_seen, online = raw.get("label"), raw.get("lastSeen"), raw.get("online")
    if not valid_label(label) or not isinstance(online, bool):
        return None
    if isinstance(last_seen, bool) or not isinstance(last_seen, int | float):
        return None
    key = raw.get("key")
    try:
        parse_key_text(key)
    except ValueError:
        key = None  # no key (an older device) or a malformed one: shown without
    return _Record(label, float(last_seen), online, key)


class RelayHealth:
    """Whether the relay answers, judged from the outcomes of this device's own requests; no I/O.

    Each *source* (the heartbeat, a listener, ...) reports :meth:`success` and :meth:`failure`. The relay counts as
    unavailable once one source failed ``failures`` times in a row, and available again once every source that was
    failing has succeeded. Each call returns the transition it causes, if any: a
    :class:`~core.events.RelayUnavailable` (once per outage, ``since`` the first failure of that outage) or a
    :class:`~core.events.RelayRestored`; otherwise None.

    Args:
        failures: consecutive failures of one source that make an outage (1 or more).
    """

    def __init__(self, failures: int = 2) -> None:
        if not isinstance(failures, int) or isinstance(failures, bool) or failures < 1:
            raise ValueError(f"failures must be a whole number of at least 1, not {failures!r}")
        self._threshold = failures
        self._failing: dict[str, int] = {}
        self._first_failure: float | None = None
        self._outage: RelayUnavailable | None = None

    @property
    def available(self) -> bool:
        return self._outage is None

    @property
    def outage(self) -> RelayUnavailable | None:
        """The current outage (as it was reported), or None while the relay is available."""
        return self._outage

    def failure(self, source: str, error: BaseException, now: float) -> RelayUnavailable | None:
        """``source`` failed with ``error`` at wall-clock time ``now``."""
        if not self._failing:
            self._first_failure = now
        count = self._failing[source] = self._failing.get(source, 0) + 1
        if self._outage is not None or count < self._threshold:
            return None
        reason = str(error).strip()
        if not reason:
            doc = (type(error).__doc__ or "").strip()
            reason = doc.splitlines()[0] if doc else f"{source} failed ({type(error).__name__})"
        assert self._first_failure is not None
        self._outage = RelayUnavailable(reason=reason, since=self._first_failure, error=error)
        return self._outage

    def success(self, source: str, now: float) -> RelayRestored | None:
        """``source`` succeeded at wall-clock time ``now``."""
        self._failing.pop(source, None)
        if self._failing:
            return None
        outage, self._outage = self._outage, None
        self._first_failure = None
        if outage is None:
            return None
        return RelayRestored(since=outage.since, duration=max(0.0, now - outage.since))
