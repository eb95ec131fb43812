"""Declining a connection: the initiator learns it was declined, on every event and pending send."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from core import events as ev
from core.errors import ConnectionDeclinedError
from core.relay.firebase import Database
from core.peer import MAX_DECLINE_REASON

from test_relay import FAST, USER, Recorder, cleanup, pair, relay, wait_for  # noqa: F401 - fixtures

OPTIONS = dataclasses.replace(FAST, close_timeout=0.5)


async def test_decline_closes_the_initiator_with_a_declined_error_and_deletes_the_session(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=OPTIONS)
    manager_a, manager_b = Recorder(a.events, ev.CONNECTION_CLOSED), Recorder(b.events, ev.CONNECTION_CLOSED)
    closed_a = Recorder(conn_a.events, ev.CLOSED)
    await conn_b.decline()
    await conn_b.decline()  # twice is fine
    await wait_for(lambda: closed_a.items and manager_a.items, what="the initiator to see the decline")
    (event,) = closed_a.of(ev.CLOSED)
    assert manager_a.of(ev.CONNECTION_CLOSED) == [event]
    assert event.reason == "peer-requested-closed" and event.connection is conn_a
    assert isinstance(event.error, ConnectionDeclinedError)
    assert str(event.error) == "Phone declined the connection."
    assert event.error.label == "Phone" and event.error.reason is None
    (own,) = manager_b.of(ev.CONNECTION_CLOSED)
    assert own.reason == "local-closed" and own.error is None
    with pytest.raises(ConnectionDeclinedError, match="Phone declined"):
        await conn_a.send("late")
    admin = Database(relay.factory.make())
    try:
        assert await admin.get(f"relay/sessions/{USER}/{conn_a.session_id}") is None
    finally:
        await admin.close()


async def test_a_pending_confirmed_send_fails_with_the_declined_error_and_its_reason(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, confirm=True, options=OPTIONS)
    # The declining side stops reading its inbox, so the message below stays unconfirmed until the decline lands.
    await conn_b._listener.close()
    sending = asyncio.ensure_future(conn_a.send("are you there?"))
    await wait_for(lambda: conn_a.stats["in_flight"] >= 1, what="the message in flight")
    await conn_b.decline("busy right now")
    with pytest.raises(ConnectionDeclinedError) as info:
        async with asyncio.timeout(15):
            await sending
    assert str(info.value) == "Phone declined the connection: busy right now."
    assert info.value.reason == "busy right now"
    assert isinstance(conn_a.close_error, ConnectionDeclinedError)


async def test_a_plain_disconnect_is_not_a_decline(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=OPTIONS)
    closed_a = Recorder(conn_a.events, ev.CLOSED)
    await conn_b.disconnect()
    await wait_for(lambda: closed_a.items, what="the close")
    assert closed_a.of(ev.CLOSED)[0].error is None


async def test_bad_decline_reasons_are_refused_and_the_connection_stays_open(relay, cleanup):
    a, b, conn_a, conn_b = await pair(relay, cleanup, options=OPTIONS)
    with pytest.raises(TypeError, match="str"):
        await conn_b.decline(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=str(MAX_DECLINE_REASON)):
        await conn_b.decline("x" * (MAX_DECLINE_REASON + 1))
    assert not conn_b.is_closed
    got = Recorder(conn_a.events, ev.DATA)
    await conn_b.send("still here")
    await wait_for(lambda: got.items, what="the message after the refused declines")


def test_a_declined_close_frame_crosses_a_webrtc_link_unchanged():
    from core.protocol.linkframes import decode_frame, encode_frame

    frame = {"kind": "close", "seq": 47, "data": "declined\nbusy"}
    assert decode_frame(encode_frame(frame)) == frame
