"""Tests for peerchat.backend.Backend on real emulators: the embedded relay is reused or started, and restarted
when it goes away."""

from __future__ import annotations

import asyncio
import socket
import uuid

from app_helpers import wait_until
from core import ManagerOptions, PeerInfo
from emulator import Emulator
from peerchat.backend import Backend, relay_answers
from peerchat.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded(label: str, tmp_path) -> Settings:
    return Settings(user=f"u{uuid.uuid4().hex[:8]}", label=label, device_id=f"{label}-1", webrtc=False, direct=False,
                    download_dir=tmp_path)


async def test_embedded_relay_is_started_when_none_answers(tmp_path):
    port = free_port()
    assert not await relay_answers("127.0.0.1", port)
    backend = Backend(embedded("laptop", tmp_path), embedded_at=("127.0.0.1", port), watch_interval=0)
    async with backend as manager:
        assert backend.emulator is not None
        assert await relay_answers("127.0.0.1", port)
        assert await manager.get_online_peers() == []
    assert backend.emulator is None
    assert not await relay_answers("127.0.0.1", port)


async def test_embedded_relay_already_running_is_shared_and_restarted_when_it_goes_away(tmp_path):
    port = free_port()
    external = Emulator(port=port)
    await external.start()
    news: list[tuple[str, bool]] = []
    options = ManagerOptions(webrtc=False, direct=False, heartbeat_interval=0.5)
    laptop = Backend(embedded("laptop", tmp_path), embedded_at=("127.0.0.1", port), watch_interval=0.2,
                     on_relay_status=lambda text, ok: news.append((text, ok)), options=options)
    try:
        manager = await laptop.start()
        assert laptop.emulator is None  # it used the one that answered
        desktop = Backend(Settings(user=laptop.settings.user, label="desktop", device_id="desktop-1", webrtc=False, direct=False,
                                   download_dir=tmp_path), embedded_at=("127.0.0.1", port), watch_interval=0,
                          options=options)
        async with desktop:
            async with asyncio.timeout(20):
                while await manager.get_online_peers() != [PeerInfo("desktop-1", "desktop")]:
                    await asyncio.sleep(0.05)
        await external.stop()
        await wait_until(lambda: news, timeout=30, what="the watchdog's news")
        assert news[0] == (f"The embedded emulator stopped; restarted it on 127.0.0.1:{port}.", True)
        assert laptop.emulator is not None
        assert await relay_answers("127.0.0.1", port)
    finally:
        await laptop.stop()
        await external.stop()


async def test_a_named_emulator_that_goes_away_is_reported_not_replaced(tmp_path):
    external = Emulator(port=free_port())
    await external.start()
    news: list[tuple[str, bool]] = []
    settings = Settings(user="u1", label="laptop", device_id="laptop-1", emulator=external.host_port, webrtc=False, direct=False,
                        download_dir=tmp_path)
    backend = Backend(settings, watch_interval=0.2, on_relay_status=lambda text, ok: news.append((text, ok)))
    try:
        await backend.start()
        await external.stop()
        await wait_until(lambda: news, timeout=30, what="the watchdog's news")
        assert news[0] == (f"The relay at {external.host_port} stopped answering. Restart it (peerchat emulator "
                           f"--port {external.port}).", False)
        assert backend.emulator is None
        await external.start()
        await wait_until(lambda: len(news) == 2, timeout=30, what="the relay back")
        assert news[1] == (f"The relay at {external.host_port} is back.", True)
    finally:
        await backend.stop()
        await external.stop()
