"""Negotiation: how one device asks another to open a session, without I/O.

A device that wants to connect writes ONE value at ``relay/negotiation/{userId}/{targetDeviceId}``::

    {"initiator": "<its device id>", "sessionId": "<new random id>", "hello": "<handshake>", "updatedWhen": <server timestamp>}

``hello`` is the first message of the session's key exchange (:mod:`core.protocol.handshake`).

The target listens at its own negotiation path. For every value that arrives it calls :func:`read_request`, which
returns an :class:`NegotiationRequest` or raises :class:`NegotiationIgnored` (malformed, from itself, or older than
``negotiation_max_age`` on the server's clock: a leftover of a crashed initiator). The target deletes the value,
starts listening to its inbox in the session, and answers by writing its first acknowledgement (``seq`` 0) into the
initiator's inbox: that is the "accepted" the initiator waits for (see :mod:`core.relay.connection` for the session layout).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from .records import SERVER_TIMESTAMP, valid_id

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_HELLO = 400


class NegotiationIgnored(Exception):
    """A negotiation value that is not a usable request; ``str()`` says why."""


@dataclass(frozen=True)
class NegotiationRequest:
    initiator: str
    session_id: str
    updated_when_ms: float
    hello: str


def new_session_id() -> str:
    """A fresh random session id (22 URL-safe characters, 128 bits)."""
    return secrets.token_urlsafe(16)


def valid_session_id(value: object) -> bool:
    return isinstance(value, str) and SESSION_ID_RE.match(value) is not None


def make_request(initiator: str, session_id: str, hello: str) -> dict[str, Any]:
    """The value an initiator writes at ``relay/negotiation/{userId}/{targetDeviceId}``."""
    if not valid_id(initiator):
        raise ValueError(f"invalid device id {initiator!r}")
    if not valid_session_id(session_id):
        raise ValueError(f"invalid session id {session_id!r}")
    if not isinstance(hello, str) or not 1 <= len(hello) <= MAX_HELLO:
        raise ValueError("invalid handshake hello")
    return {"initiator": initiator, "sessionId": session_id, "hello": hello, "updatedWhen": SERVER_TIMESTAMP}


def read_request(value: object, *, own_id: str, server_now: float, max_age: float) -> NegotiationRequest:
    """Check a negotiation value that arrived for ``own_id``.

    Args:
        value: the value at this device's negotiation path.
        own_id: this device's id.
        server_now: the server's current time in seconds (local time plus the estimated offset).
        max_age: requests older than this many seconds are stale.

    Raises:
        NegotiationIgnored: the value is missing, malformed, from this device itself, or stale.
    """
    if value is None:
        raise NegotiationIgnored("no request")
    if not isinstance(value, dict):
        raise NegotiationIgnored(f"a request must be an object, not {type(value).__name__}")
    extra = set(value) - {"initiator", "sessionId", "hello", "updatedWhen"}
    if extra:
        raise NegotiationIgnored(f"unknown fields {sorted(extra)}")
    initiator, session_id, updated = value.get("initiator"), value.get("sessionId"), value.get("updatedWhen")
    if not valid_id(initiator):
        raise NegotiationIgnored(f"invalid initiator {initiator!r}")
    if initiator == own_id:
        raise NegotiationIgnored("a request from this device to itself")
    if not valid_session_id(session_id):
        raise NegotiationIgnored(f"invalid session id {session_id!r}")
    if isinstance(updated, bool) or not isinstance(updated, int | float):
        raise NegotiationIgnored(f"invalid updatedWhen {updated!r}")
    age = server_now - updated / 1000.0
    if age > max_age:
        raise NegotiationIgnored(f"stale: written {age:.1f} s ago (limit {max_age:g} s)")
    hello = value.get("hello")
    if not isinstance(hello, str) or not 1 <= len(hello) <= MAX_HELLO:
        raise NegotiationIgnored("no handshake hello (a device of an older peerchat, or a forged request)")
    assert isinstance(initiator, str) and isinstance(session_id, str)
    return NegotiationRequest(initiator, session_id, float(updated), hello)
