"""Why no direct path was found, from what ICE knew: the advice a person gets when NAT traversal fails.

Sans-I/O: it takes the ICE candidate types each side gathered and the servers this side was given, and returns a
:class:`~core.errors.NoRouteError` whose message says what would help. The WebRTC link (``core.webrtc.link``)
reads those from aiortc and raises the error.

Candidate types (RFC 8445): ``host`` (an address of the device itself), ``srflx`` (its public address as a STUN
server saw it, through a NAT), ``prflx`` (the same, as the other device saw it during the checks), ``relay`` (an
address on a TURN server).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import NoRouteError

_REFLEXIVE = {"srflx", "prflx"}


def no_route_error(
    local: Iterable[str],
    remote: Iterable[str],
    *,
    stun: bool,
    turn: bool,
    within: str = "",
) -> NoRouteError:
    """The error for ICE checks that found no path, with advice.

    Args:
        local: the types of the candidates this device gathered.
        remote: the types of the candidates the other device sent.
        stun: this device was given a STUN server.
        turn: this device was given a TURN server.
        within: how long it tried, for the message ("within 5 s"; empty: not said).
    """
    local_types, remote_types = set(local), set(remote)
    when = f" {within}" if within else ""
    head = f"no network path to the other device was found{when}"
    if "relay" in local_types or "relay" in remote_types:
        return NoRouteError(
            f"{head}, not even through the TURN server: a firewall may block UDP to it or between it and the "
            "devices (try a TURN server over TCP, turn:HOST:PORT?transport=tcp, or turns:)", missing=None)
    if turn:
        return NoRouteError(
            f"{head}: the TURN server gave this device no relay address (is it reachable, and are the user name "
            "and password right?)", missing="turn")
    if local_types & _REFLEXIVE or remote_types & _REFLEXIVE:
        return NoRouteError(
            f"{head}: the public addresses a STUN server saw did not let the checks through, as happens behind a "
            "strict (symmetric) NAT or a firewall; a TURN server is needed", missing="turn")
    if stun:
        return NoRouteError(
            f"{head}: the STUN server did not answer, so only local addresses were tried (they work on one "
            "network only); check that it is reachable over UDP, or add a TURN server", missing="turn")
    return NoRouteError(
        f"{head}: no STUN or TURN server is set, so only local addresses were tried (they work on one network "
        "only); add a STUN server, and a TURN server for strict NATs", missing="stun")
