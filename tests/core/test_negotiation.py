"""Tests for core.negotiation: building and checking negotiation requests (no I/O)."""

from __future__ import annotations

import pytest

from core.protocol.negotiation import NegotiationIgnored, NegotiationRequest, make_request, new_session_id, read_request, valid_session_id

SID = "abcdefghijklmnopqrstuv"


def test_request_carries_a_server_timestamp():
    assert make_request("laptop", SID, "HELLO") == {
        "initiator": "laptop",
        "sessionId": SID,
        "hello": "HELLO",
        "updatedWhen": {".sv": "timestamp"},
    }


def test_make_request_refuses_bad_ids():
    with pytest.raises(ValueError):
        make_request("a/b", SID, "H")
    with pytest.raises(ValueError):
        make_request("a", "short", "H")
    with pytest.raises(ValueError):
        make_request("a", SID, "")


def test_session_ids_are_fresh_and_valid():
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(valid_session_id(i) for i in ids)


def test_fresh_request_is_accepted():
    offer = read_request({"initiator": "phone", "sessionId": SID, "hello": "H", "updatedWhen": 100_000},
                         own_id="laptop", server_now=101.0, max_age=30)
    assert offer == NegotiationRequest("phone", SID, 100_000.0, "H")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no request"),
        ("x", "object"),
        ({"initiator": "phone", "sessionId": SID}, "updatedWhen"),
        ({"initiator": "phone", "sessionId": SID, "updatedWhen": "now"}, "updatedWhen"),
        ({"initiator": "phone", "sessionId": SID, "updatedWhen": True}, "updatedWhen"),
        ({"initiator": 7, "sessionId": SID, "updatedWhen": 100_000}, "initiator"),
        ({"initiator": "laptop", "sessionId": SID, "updatedWhen": 100_000}, "itself"),
        ({"initiator": "phone", "sessionId": "x/y", "updatedWhen": 100_000}, "session id"),
        ({"initiator": "phone", "sessionId": SID, "updatedWhen": 100_000, "extra": 1}, "unknown"),
        ({"initiator": "phone", "sessionId": SID, "hello": "H", "updatedWhen": 60_000}, "stale"),
        ({"initiator": "phone", "sessionId": SID, "updatedWhen": 100_000}, "hello"),
        ({"initiator": "phone", "sessionId": SID, "hello": 5, "updatedWhen": 100_000}, "hello"),
    ],
)
def test_bad_or_stale_requests_are_ignored_with_a_reason(value, reason):
    with pytest.raises(NegotiationIgnored, match=reason):
        read_request(value, own_id="laptop", server_now=101.0, max_age=30)
