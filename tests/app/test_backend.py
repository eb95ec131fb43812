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
        assert laptop.relay_description == f"emulator 127.0.0.1:{port} (shared with another peerchat)"
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
        assert laptop.relay_description == f"embedded emulator 127.0.0.1:{port}"
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


async def test_a_web_server_on_the_port_is_named_in_one_line(tmp_path):
    from aiohttp import web

    from peerchat.backend import RelayGoneError, probe_relay

    async def page(request):
        return web.Response(text="<html><body>It works!</body></html>", content_type="text/html", status=404)

    server = web.Application()
    server.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        probe = await probe_relay("127.0.0.1", port)
        assert not probe.ok
        assert probe.what.startswith("an HTTP server that is not a Realtime Database (HTTP 404, text/html")
        for settings, advice in (
            (Settings(label="laptop", device_id="l-1", emulator=f"127.0.0.1:{port}", download_dir=tmp_path),
             "Point --emulator (or FIREBASE_DATABASE_EMULATOR_HOST) at a Realtime Database emulator"),
            (embedded("laptop", tmp_path), "Stop that server, or run peerchat with --emulator HOST:PORT"),
        ):
            backend = Backend(settings, embedded_at=("127.0.0.1", port), watch_interval=0)
            try:
                await backend.start()
            except RelayGoneError as exc:
                text = str(exc)
            else:
                raise AssertionError("started on a web server")
            finally:
                await backend.stop()
            assert "\n" not in text and "<html" not in text and advice in text
            assert f"an HTTP server that is not a Realtime Database (HTTP 404, text/html" in text
            assert f"at 127.0.0.1:{port}" in text
    finally:
        await runner.cleanup()


async def test_nothing_at_the_address_says_why():
    from peerchat.backend import probe_relay

    probe = await probe_relay("127.0.0.1", free_port())
    assert (probe.ok, probe.what) == (False, "nothing answers (connection refused)")
