"""The app without a relay: it says clearly that it is offline and what to do, and stays usable."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from textual.widgets import Static

from peerchat.app import create_app
from peerchat.config import Settings
from peerchat.widgets import DeviceList


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for(predicate, pilot, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await pilot.pause(0.05)


async def test_missing_emulator_is_reported_with_what_to_do(tmp_path: Path):
    port = free_port()
    settings = Settings(label="laptop", device_id="d-laptop", emulator=f"127.0.0.1:{port}", download_dir=tmp_path)
    app = create_app(settings)
    async with app.run_test() as pilot:
        relay = app.main.query_one("#relay", Static)
        await wait_for(lambda: "offline" in str(relay.render()), pilot)
        text = str(relay.render())
        assert f"no emulator answers at 127.0.0.1:{port}" in text
        assert "peerchat emulator" in text
        assert relay.has_class("error")
        # Enter on the (empty) device list and the session commands do not crash; they explain.
        assert app.focused is app.main.query_one(DeviceList)
        await pilot.press("enter", "ctrl+f", "ctrl+w")
        assert app.manager is None


async def test_the_app_comes_online_by_itself_when_the_emulator_appears(tmp_path: Path, monkeypatch):
    from emulator import Emulator

    from peerchat.app import PeerchatApp

    port = free_port()
    settings = Settings(label="laptop", device_id="d-laptop", emulator=f"127.0.0.1:{port}", download_dir=tmp_path,
                        webrtc=False)
    monkeypatch.setattr(PeerchatApp, "RETRY_RELAY_EVERY", 0.2)
    app = create_app(settings)
    async with app.run_test() as pilot:
        relay = app.main.query_one("#relay", Static)
        await wait_for(lambda: "retrying every 0.2 s" in str(relay.render()), pilot)
        await pilot.pause(0.5)  # several attempts: said once
        assert sum("Not connected" == n.title for n in app._notifications) == 1
        async with Emulator(port=port):
            await wait_for(lambda: "online via emulator" in str(relay.render()), pilot, timeout=20)
            assert not relay.has_class("error")
            assert app.manager is not None
