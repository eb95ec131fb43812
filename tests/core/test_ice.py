"""Tests for the sans-I/O ICE helpers: naming a route from its candidate pair, and the advice when none works."""

from __future__ import annotations

import pytest

from core.errors import NoRouteError, UpgradeError
from core.peer import Route
from core.protocol.ice import no_route_error


@pytest.mark.parametrize(
    ("local", "remote", "kind", "text"),
    [
        ("host", "host", "host", "via host"),
        ("srflx", "srflx", "nat", "via NAT"),
        ("host", "srflx", "nat", "via NAT"),
        ("prflx", "host", "nat", "via NAT"),
        ("relay", "srflx", "turn", "via TURN relay"),
        ("host", "relay", "turn", "via TURN relay"),
    ],
)
def test_a_candidate_pair_names_its_route(local: str, remote: str, kind: str, text: str) -> None:
    route = Route.from_candidates(local, remote)
    assert route == Route(kind, local, remote)  # type: ignore[arg-type]
    assert str(route) == text


@pytest.mark.parametrize(
    ("local", "remote", "stun", "turn", "missing", "says"),
    [
        (["host"], ["host"], False, False, "stun", "no STUN or TURN server is set"),
        (["host"], ["host"], True, False, "turn", "the STUN server did not answer"),
        (["host", "srflx"], ["host", "srflx"], True, False, "turn", "strict (symmetric) NAT"),
        (["host"], ["host", "srflx"], False, False, "turn", "a TURN server is needed"),
        (["host", "srflx"], ["host"], True, True, "turn", "gave this device no relay address"),
        (["host", "srflx", "relay"], ["host"], True, True, None, "not even through the TURN server"),
        (["host"], ["relay"], False, False, None, "not even through the TURN server"),
    ],
)
def test_the_advice_follows_what_each_side_had(
    local: list[str], remote: list[str], stun: bool, turn: bool, missing: str | None, says: str
) -> None:
    error = no_route_error(local, remote, stun=stun, turn=turn, within="within 5 s")
    assert isinstance(error, NoRouteError) and isinstance(error, UpgradeError)
    assert error.missing == missing
    assert says in str(error)
    assert str(error).startswith("no network path to the other device was found within 5 s")
