"""Relay connections between two OS processes on the emulator: echo in order, clean stop, and a killed peer
(``connection-error``, and offline within three heartbeats)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import events as ev
from core.errors import PeerTimeoutError
from core.options import ManagerOptions
from core.peer import PeerInfo
from core.manager import FirebasePeerConnectionManager
from core.webrtc.upgrade import webrtc_upgrader

try:
    from .relay_support import wait_for
except ImportError:  # tests/ is not a package
    from relay_support import wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "firebase" / "database.rules.json"
PEER = Path(__file__).with_name("relay_peer.py")
HEARTBEAT = 0.5
OPTIONS = ManagerOptions(
    heartbeat_interval=HEARTBEAT,
    connect_timeout=15.0,
    ack_timeout=15.0,
    ping_interval=0.5,
    peer_timeout=3.0,
    close_timeout=1.0,
    webrtc=False, direct=False,
)


class PeerProcess:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[dict] = []

    async def expect(self, event: str, timeout: float = 30.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    err = (await self.proc.stderr.read()).decode(errors="replace")
                    raise AssertionError(f"peer exited ({self.proc.returncode}) before {event!r}: {err[-2000:]}")
                msg = json.loads(line)
                self.lines.append(msg)
                if msg.get("event") == "failed":
                    raise AssertionError(f"peer failed: {msg}")
                if msg.get("event") == event:
                    return msg


@pytest.fixture
async def peer_process(firebase_app_factory):
    firebase_app_factory.load_rules(RULES)
    procs: list[asyncio.subprocess.Process] = []

    async def start(device: str, *extra: str) -> PeerProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PEER), "--database-url", firebase_app_factory.database_url, "--user", "alice",
            "--device", device, "--heartbeat", str(HEARTBEAT), "--peer-timeout", "3", *extra,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(ROOT),
        )
        procs.append(proc)
        peer = PeerProcess(proc)
        await peer.expect("ready")
        return peer

    start.factory = firebase_app_factory
    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            pass


async def test_two_processes_echo_in_order_then_stop_cleanly(peer_process):
    child = await peer_process("phone")
    app = peer_process.factory.make({"uid": "alice"})
    async with FirebasePeerConnectionManager("alice", PeerInfo("laptop", "Laptop"), app=app, options=OPTIONS) as m:
        await wait_for(lambda: m._view.get("phone") is not None, what="the other process online")
        assert await m.get_online_peers() == [PeerInfo("phone", "Phone")]
        conn = await m.connect_to_peer("phone", confirm_data_receival=True)
        await child.expect("incoming")
        got: list[object] = []
        conn.events.on(ev.DATA, lambda e: got.append(e.data))
        conn.events.on(ev.BINARY, lambda e: got.append(e.data))
        await asyncio.gather(*(conn.send(f"m{i}") for i in range(200)), conn.send_bytes(b"\x00\x01"))
        await wait_for(lambda: len(got) == 201, what="echoes")
        assert got == [f"echo:m{i}" for i in range(200)] + [b"\x00\x01"]
        # A clean stop of the other process closes the connection as peer-requested and shows it offline at once.
        closed = []
        conn.events.on(ev.CLOSED, closed.append)
        child.proc.stdin.close()
        await wait_for(lambda: closed, what="close")
        assert closed[0].reason == "peer-requested-closed"
        await wait_for(lambda: m._presence_tree["phone"]["online"] is False, what="offline record")
        assert m._view.get("phone") is None  # at once: not by waiting for the heartbeat to go stale
        assert await asyncio.wait_for(child.proc.wait(), 15) == 0


async def test_killed_peer_process_is_a_connection_error_and_goes_offline(peer_process):
    child = await peer_process("phone")
    app = peer_process.factory.make({"uid": "alice"})
    async with FirebasePeerConnectionManager("alice", PeerInfo("laptop", "Laptop"), app=app, options=OPTIONS) as m:
        await wait_for(lambda: m._view.get("phone") is not None, what="the other process online")
        conn = await m.connect_to_peer("phone")
        await child.expect("incoming")
        closed = []
        m.events.on(ev.CONNECTION_CLOSED, closed.append)
        child.proc.kill()
        await child.proc.wait()
        # Offline within three heartbeats (plus a margin for a loaded machine), judged on the server's clock.
        await wait_for(lambda: m._view.get("phone") is None, timeout=HEARTBEAT * 3 + 10, what="offline")
        await wait_for(lambda: closed, timeout=OPTIONS.peer_timeout + 10, what="connection-error")
        assert closed[0].reason == "connection-error" and closed[0].connection is conn
        assert isinstance(closed[0].error, PeerTimeoutError)


async def test_two_processes_upgrade_to_webrtc_and_echo_in_order(peer_process):
    child = await peer_process("phone", "--webrtc")
    app = peer_process.factory.make({"uid": "alice"})
    options = dataclasses.replace(OPTIONS, webrtc=True)
    upgrader = webrtc_upgrader(options, host_addresses=("127.0.0.1",))
    async with FirebasePeerConnectionManager("alice", PeerInfo("laptop", "Laptop"), app=app, options=options,
                                             upgrader=upgrader) as m:
        await wait_for(lambda: m._view.get("phone") is not None, what="the other process online")
        conn = await m.connect_to_peer("phone", confirm_data_receival=True)
        incoming = await child.expect("incoming")
        # Both sides were upgraded before the connection was handed out.
        assert conn.transport == "webrtc" and incoming["transport"] == "webrtc"
        got: list[object] = []
        conn.events.on(ev.DATA, lambda e: got.append(e.data))
        conn.events.on(ev.BINARY, lambda e: got.append(e.data))
        await asyncio.gather(*(conn.send(f"m{i}") for i in range(300)), conn.send_bytes(bytes(range(256))))
        await wait_for(lambda: len(got) == 301, what="echoes over WebRTC")
        assert got == [f"echo:m{i}" for i in range(300)] + [bytes(range(256))]
        assert conn.transport == "webrtc"
        await conn.disconnect()
        closed = await child.expect("closed")
        assert closed["reason"] == "peer-requested-closed"
