"""The direct link between two managers on the emulator (TCP + TLS 1.3 on 127.0.0.1), tried together with WebRTC
by the manager's default upgrader (core.links)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core import events as ev
from core.direct.certs import session_certificate
from core.files import FileTransfers
from core.links import ConnectionLinks, LinkUpgrader, link_upgrader
from core.manager import FirebasePeerConnectionManager
from core.options import ManagerOptions
from core.peer import PeerConnection, PeerInfo

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
USER = "alice"
WAIT = 30.0  # upper bound for anything a test waits for; never an assertion about speed

FAST = ManagerOptions(
    heartbeat_interval=0.5, connect_timeout=15.0, ack_timeout=20.0, retransmit_interval=1.0, ping_interval=0.5,
    peer_timeout=10.0, upgrade_timeout=10.0, reupgrade_interval=0.5, addresses=("127.0.0.1",), direct_timeout=3.0,
    webrtc=False,
)
WEBRTC_LINK = {"keepalive_interval": 0.2, "idle_timeout": 1.5}


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Pair:
    def __init__(self, a: FirebasePeerConnectionManager, b: FirebasePeerConnectionManager) -> None:
        self.a, self.b = a, b
        self.incoming: asyncio.Queue[PeerConnection] = asyncio.Queue()
        b.events.on(ev.INCOMING_CONNECTION, lambda e: self.incoming.put_nowait(e.connection))

    async def connect(self) -> tuple[PeerConnection, PeerConnection]:
        conn_a = await self.a.connect_to_peer("phone")
        async with asyncio.timeout(WAIT):
            conn_b = await self.incoming.get()
        return conn_a, conn_b


@pytest.fixture
async def managers(firebase_app_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    firebase_app_factory.load_rules(RULES)
    started: list[FirebasePeerConnectionManager] = []

    async def make(upgrader_a: Any = None, upgrader_b: Any = None, options_a: ManagerOptions = FAST,
                   options_b: ManagerOptions | None = None) -> Pair:
        options_b = options_b or options_a
        a = FirebasePeerConnectionManager(USER, PeerInfo("laptop", "Laptop"), app=firebase_app_factory.make(
            {"uid": USER}), options=options_a, upgrader=upgrader_a or link_upgrader(options_a, **WEBRTC_LINK))
        b = FirebasePeerConnectionManager(USER, PeerInfo("phone", "Phone"), app=firebase_app_factory.make(
            {"uid": USER}), options=options_b, upgrader=upgrader_b or link_upgrader(options_b, **WEBRTC_LINK))
        for manager in (a, b):
            await manager.start()
            started.append(manager)
        await wait_for(lambda: a._view.get("phone") is not None, "the phone to be online")
        return Pair(a, b)

    yield make
    for manager in started:
        await manager.stop()


def spy(upgrader: LinkUpgrader) -> list[ConnectionLinks]:
    seen: list[ConnectionLinks] = []
    upgrader.on_upgrade = seen.append
    return seen


async def test_a_session_opens_a_direct_link_and_carries_messages_both_ways(managers: Any) -> None:
    upgrader_a, upgrader_b = link_upgrader(FAST), link_upgrader(FAST)
    links_a = spy(upgrader_a)
    pair = await managers(upgrader_a, upgrader_b)
    conn_a, conn_b = await pair.connect()
    assert (conn_a.transport, conn_b.transport) == ("direct", "direct")
    got_b: list[Any] = []
    got_a: list[Any] = []
    conn_b.events.on(ev.DATA, got_b.append)
    conn_b.events.on(ev.BINARY, got_b.append)
    conn_a.events.on(ev.DATA, got_a.append)
    await conn_a.send("hello, direct")
    await conn_a.send_bytes(b"\x00\xff" * 40_000)  # over one relay frame: split and joined again
    await conn_b.send("and back")
    await wait_for(lambda: len(got_b) == 2 and len(got_a) == 1, "messages both ways")
    assert got_b == [ev.Data("hello, direct"), ev.BinaryData(b"\x00\xff" * 40_000)]
    assert got_a == [ev.Data("and back")]
    link = links_a[0].direct.link
    assert link is not None and not link.is_closed
