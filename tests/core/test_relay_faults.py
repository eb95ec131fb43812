"""Relay faults with an emulator of the test's own: a restart mid-session is survived without loss; an outage longer
than the peer time-out closes the connection with ``connection-error``."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from core import events as ev
from core.errors import PeerTimeoutError
from core.options import ManagerOptions

try:
    from .relay_support import manager_pairs, wait_for
except ImportError:  # tests/ is not a package
    from relay_support import manager_pairs, wait_for


OPTIONS = ManagerOptions(
    heartbeat_interval=0.5,
    connect_timeout=10.0,
    ack_timeout=20.0,
    retransmit_interval=1.0,
    ping_interval=0.3,
    slow_after=0.5,
    peer_timeout=8.0,
    listener_silence_timeout=10.0,
    close_timeout=0.5,
    webrtc=False, direct=False,
)


@pytest.fixture
async def own_emulator():
    async with manager_pairs("faults") as make:
        yield make


async def open_pair(make, options):
    a, b = make("laptop", options), make("phone", options)
    await a.start()
    await b.start()
    await wait_for(lambda: a._view.get("phone") is not None)
    incoming = asyncio.get_running_loop().create_future()
    b.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
    conn_a = await a.connect_to_peer("phone", confirm_data_receival=True)
    conn_b = await asyncio.wait_for(incoming, 10)
    return a, b, conn_a, conn_b


async def test_emulator_restart_mid_session_loses_nothing(own_emulator):
    emu = own_emulator.emulator
    a, b, conn_a, conn_b = await open_pair(own_emulator, OPTIONS)
    got = []
    conn_b.events.on(ev.DATA, lambda e: got.append(e.data))
    slow = []
    conn_a.events.on(ev.SLOW, slow.append)
    await asyncio.gather(*(conn_a.send(f"before {i}") for i in range(20)))
    # The relay goes away while messages are being sent, then comes back with its data.
    sending = [asyncio.ensure_future(conn_a.send(f"during {i}")) for i in range(20)]
    await asyncio.sleep(0)
    await emu.stop()
    await asyncio.sleep(1.0)
    await emu.start()
    async with asyncio.timeout(30):
        await asyncio.gather(*sending)
    await conn_a.send("after")
    assert got == [f"before {i}" for i in range(20)] + [f"during {i}" for i in range(20)] + ["after"]
    assert not conn_a.is_closed and not conn_b.is_closed
    assert slow, "the outage was reported as slowness"
    # The outage cut both inbox streams: each side resubscribed and caught up.
    assert conn_a._listener.subscriptions >= 2 and conn_b._listener.subscriptions >= 2
    # Presence recovered too: each side still sees the other.
    await wait_for(lambda: a._view.get("phone") is not None and b._view.get("laptop") is not None)


async def test_outage_longer_than_the_peer_timeout_closes_with_connection_error(own_emulator):
    emu = own_emulator.emulator
    options = dataclasses.replace(OPTIONS, peer_timeout=1.5)
    a, b, conn_a, conn_b = await open_pair(own_emulator, options)
    closed = []
    a.events.on(ev.CONNECTION_CLOSED, closed.append)
    await emu.stop()
    await wait_for(lambda: closed, timeout=options.peer_timeout + 10, what="connection-error")
    assert closed[0].reason == "connection-error" and isinstance(closed[0].error, PeerTimeoutError)
