"""Make the README's screenshots from the real app in real states, as SVG (and PNG when rsvg-convert is installed).

    uv run python scripts/screenshots.py [--out screenshots]

Each scene runs the app (``peerchat.app.create_app``) with a real manager on a local emulator that this script
starts, next to real managers for the user's other devices: the device list, a chat over the direct link with its delivery
marks, a file transfer in progress, the history of an offline device with a queued message, and the warning shown
while the relay does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import firebase_admin
from google.auth.credentials import AnonymousCredentials

from core import FirebasePeerConnectionManager, ManagerOptions, PeerInfo
from emulator import Emulator
from peerchat.app import create_app
from peerchat.backend import open_session
from peerchat.config import Settings
from peerchat.widgets import DeviceList, TransferRow

USER = "alice"
SIZE = (112, 30)
OPTIONS = ManagerOptions(webrtc=True)


class Devices:
    """Managers for the user's devices on one emulator namespace."""

    def __init__(self, emulator: Emulator, options: ManagerOptions = OPTIONS) -> None:
        self.url = emulator.database_url(f"shots-{uuid.uuid4().hex[:8]}")
        self.options = options
        self.managers: list[FirebasePeerConnectionManager] = []
        self.apps: list[firebase_admin.App] = []

    async def start(self, label: str, device_id: str) -> FirebasePeerConnectionManager:
        app = firebase_admin.initialize_app(
            AnonymousCredentials(), {"databaseURL": self.url, "databaseAuthVariableOverride": {"uid": USER}},
            name=f"shot-{label}-{uuid.uuid4().hex}")
        self.apps.append(app)
        manager = FirebasePeerConnectionManager(USER, PeerInfo(device_id, label), app=app, options=self.options)
        await manager.start()
        self.managers.append(manager)
        return manager

    async def close(self) -> None:
        for manager in reversed(self.managers):
            await manager.stop()
        for app in self.apps:
            firebase_admin.delete_app(app)


async def until(predicate: Callable[[], Any], pilot: Any, timeout: float = 30.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := predicate()):
            await pilot.pause(0.05)
        return result


def laptop_settings(downloads: Path, emulator: Emulator, *, webrtc: bool = True) -> Settings:
    """The laptop's settings; ``webrtc`` must match its manager's options (the app words the relay-only note by it)."""
    return Settings(user=USER, label="laptop", device_id="3f9a2c7e41b8", download_dir=downloads,
                    emulator=emulator.host_port, webrtc=webrtc)


async def shoot(app: Any, pilot: Any, out: Path, name: str) -> None:
    await pilot.pause(0.3)
    path = out / f"{name}.svg"
    app.save_screenshot(filename=path.name, path=str(out))
    print(f"wrote {path}")


async def open_session_with(app: Any, pilot: Any, label: str) -> Any:
    devices = app.main.query_one(DeviceList)
    await until(lambda: any(r.peer.label == label and r.online for r in devices._rows.values()), pilot)
    while devices.selected_peer is None or devices.selected_peer.label != label:
        await pilot.press("down")
    await pilot.press("enter")
    return await until(lambda: app.main.active_session, pilot)


async def scene_devices_and_chat(emulator: Emulator, out: Path, downloads: Path) -> None:
    devices = Devices(emulator)
    try:
        laptop = await devices.start("laptop", "3f9a2c7e41b8")
        desktop = await devices.start("desktop", "8c1d5e0b92f4")
        await devices.start("phone", "b27e9a4c6d13")
        old = await devices.start("work-pc", "51f0c8e2a7d9")
        incoming: list[Any] = []
        desktop.events.on("incoming_connection", lambda e: incoming.append(open_session(e.connection, downloads)))
        app = create_app(laptop_settings(downloads, emulator), manager=laptop)
        async with app.run_test(size=SIZE) as pilot:
            rows = app.main.query_one(DeviceList)
            await until(lambda: sum(r.online for r in rows._rows.values()) == 3, pilot)
            await old.stop()
            devices.managers.remove(old)
            await until(lambda: sum(r.online for r in rows._rows.values()) == 2, pilot)
            await shoot(app, pilot, out, "devices")

            view = await open_session_with(app, pilot, "desktop")
            link = (await until(lambda: incoming, pilot))[0]
            await until(lambda: view.status.transport == "direct" and view.status.rtt is not None, pilot)
            await pilot.press(*"Are the holiday photos on the desktop?", "enter")
            await pilot.pause(0.5)
            await link.connection.send("Yes, all 214 of them. Sending the album now.")
            await pilot.pause(0.5)
            await pilot.press(*"Great, thanks!", "enter")
            await pilot.pause(0.5)
            app.clear_notifications()
            await shoot(app, pilot, out, "chat")
            await link.close()
    finally:
        await devices.close()


async def scene_transfer(emulator: Emulator, out: Path, downloads: Path, work: Path) -> None:
    # Over the relay (WebRTC off), so that the transfer takes long enough to be seen in progress.
    devices = Devices(emulator, dataclasses.replace(OPTIONS, webrtc=False, direct=False))
    try:
        laptop = await devices.start("laptop", "3f9a2c7e41b8")
        desktop = await devices.start("desktop", "8c1d5e0b92f4")
        desktop_downloads = work / "desktop"
        desktop_downloads.mkdir()
        incoming: list[Any] = []

        def on_incoming(event: Any) -> None:
            link = open_session(event.connection, desktop_downloads)
            link.transfers.events.on("incoming_transfer", lambda e: e.offer.accept(desktop_downloads))
            incoming.append(link)

        desktop.events.on("incoming_connection", on_incoming)
        video = work / "holiday-2025.mp4"
        with video.open("wb") as file:
            file.write(os.urandom(48 * 1024 * 1024))
        app = create_app(laptop_settings(downloads, emulator, webrtc=False), manager=laptop)
        async with app.run_test(size=SIZE) as pilot:
            view = await open_session_with(app, pilot, "desktop")
            await until(lambda: incoming, pilot)
            view.send_files([video])
            row = await until(lambda: [r for r in view.query(TransferRow) if not r.preparing], pilot, timeout=60)
            await until(lambda: (row[0].query_one("ProgressBar").percentage or 0) > 0.3, pilot, timeout=120)
            app.clear_notifications()
            await shoot(app, pilot, out, "transfer")
            await view.link.transfers.close()
            for link in incoming:
                await link.close()
    finally:
        await devices.close()


async def scene_warning(out: Path, downloads: Path) -> None:
    options = dataclasses.replace(OPTIONS, webrtc=False, direct=False, ping_interval=0.5, slow_after=1.0, peer_timeout=120.0,
                                  ack_timeout=120.0)
    async with Emulator() as own:
        devices = Devices(own, options)
        try:
            laptop = await devices.start("laptop", "3f9a2c7e41b8")
            await devices.start("desktop", "8c1d5e0b92f4")
            app = create_app(laptop_settings(downloads, own, webrtc=False), manager=laptop)
            async with app.run_test(size=SIZE) as pilot:
                view = await open_session_with(app, pilot, "desktop")
                await pilot.press(*"Still there?", "enter")
                await own.stop()
                await pilot.press(*"Hello?", "enter")
                await until(lambda: view.status.warnings, pilot, timeout=60)
                await pilot.pause(1.5)
                await shoot(app, pilot, out, "warning")
                await own.start()
                await until(lambda: not view.status.warnings, pilot, timeout=60)
        finally:
            await devices.close()


async def scene_history(emulator: Emulator, out: Path, downloads: Path, work: Path) -> None:
    """Yesterday's conversation with the desktop, which is offline now, and a message written since: queued."""
    import time

    from peerchat.history import History, history_file

    data = work / "data"
    history = History(history_file(data, "3f9a2c7e41b8"))
    now = time.time()
    yesterday = now - 86400
    for at, direction, kind, body, status, path, size in (
        (yesterday - 600, "in", "text", "Can you send me the slides for tomorrow?", "received", None, None),
        (yesterday - 540, "out", "text", "Sure, here they are.", "delivered", None, None),
        (yesterday - 530, "out", "file", "slides.pdf", "delivered", "/home/alice/talks/slides.pdf", 2_411_520),
        (yesterday - 300, "in", "file", "notes.md", "received", "/home/alice/Downloads/peerchat/notes.md", 5_120),
        (yesterday - 120, "in", "text", "Thanks! Got them.", "received", None, None),
    ):
        history.add("8c1d5e0b92f4", "desktop", direction, kind, body, status, path=path, size=size, at=at)
    history.close()
    devices = Devices(emulator, dataclasses.replace(OPTIONS, webrtc=False))
    try:
        laptop = await devices.start("laptop", "3f9a2c7e41b8")
        desktop = await devices.start("desktop", "8c1d5e0b92f4")
        await devices.start("phone", "b27e9a4c6d13")
        settings = dataclasses.replace(laptop_settings(downloads, emulator, webrtc=False), data_dir=data)
        app = create_app(settings, manager=laptop)
        async with app.run_test(size=SIZE) as pilot:
            rows = app.main.query_one(DeviceList)
            await until(lambda: sum(r.online for r in rows._rows.values()) == 2, pilot)
            await desktop.stop()
            devices.managers.remove(desktop)
            await until(lambda: sum(r.online for r in rows._rows.values()) == 1, pilot)
            while rows.selected_peer is None or rows.selected_peer.label != "desktop":
                await pilot.press("down")
            await pilot.press("enter")
            view = await until(lambda: app.main.active_session, pilot)
            await until(lambda: view.loaded, pilot)
            view.query_one("Input").focus()
            await pilot.press(*"How did the talk go?", "enter")
            await until(lambda: view.queued, pilot)
            await pilot.pause(0.5)
            app.clear_notifications()
            await shoot(app, pilot, out, "history")
    finally:
        await devices.close()


def to_png(svg: Path) -> bool:
    """Convert with rsvg-convert; Textual's non-breaking spaces become preserved plain spaces so text lines up."""
    converter = shutil.which("rsvg-convert")
    if converter is None:
        return False
    text = svg.read_text(encoding="utf-8").replace("&#160;", " ")
    text = re.sub(r"<svg ", '<svg xml:space="preserve" ', text, count=1)
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False, encoding="utf-8") as tmp:
        tmp.write(text)
    try:
        subprocess.run([converter, "--zoom", "1.5", tmp.name, "-o", str(svg.with_suffix(".png"))], check=True)
    finally:
        os.unlink(tmp.name)
    print(f"wrote {svg.with_suffix('.png')}")
    return True


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        downloads = work / "Downloads"
        downloads.mkdir()
        async with Emulator() as emulator:
            await scene_devices_and_chat(emulator, out, downloads)
            await scene_transfer(emulator, out, downloads, work)
            await scene_history(emulator, out, downloads, work)
        await scene_warning(out, downloads)
    converted = [to_png(svg) for svg in sorted(out.glob("*.svg"))]
    if not all(converted):
        print("rsvg-convert is not installed (apt-get install librsvg2-bin): only SVG files were written",
              file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots")
    asyncio.run(main(parser.parse_args().out))
