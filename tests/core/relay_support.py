"""Shared test code for the relay tests: ``wait_for`` (a bounded polling wait) and ``manager_pairs`` (managers on an
emulator of the test's own, stopped and cleaned up afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import firebase_admin
from google.auth.credentials import AnonymousCredentials

from emulator import Emulator
from core.peer import PeerInfo
from core.manager import FirebasePeerConnectionManager

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"


async def wait_for(predicate, timeout=15.0, what="condition"):
    """Poll ``predicate`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def manager_pairs(prefix: str) -> AsyncIterator:
    """Start an emulator with the real rules and yield ``make(device_id, options)``, a factory of managers for user
    ``alice`` in a fresh namespace; ``make.emulator`` is the emulator. On exit the emulator is started again if the
    test left it stopped, then every manager is stopped, every app deleted and the emulator stopped."""
    emu = Emulator(rules=RULES)
    await emu.start()
    apps: list[firebase_admin.App] = []
    managers: list[FirebasePeerConnectionManager] = []
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def make(device_id, options):
        app = firebase_admin.initialize_app(
            AnonymousCredentials(),
            {"databaseURL": emu.database_url(namespace), "databaseAuthVariableOverride": {"uid": "alice"}},
            name=f"{prefix}-{uuid.uuid4().hex}",
        )
        apps.append(app)
        m = FirebasePeerConnectionManager("alice", PeerInfo(device_id, device_id.title()), app=app, options=options)
        managers.append(m)
        return m

    make.emulator = emu
    try:
        yield make
    finally:
        if not emu.running:
            await emu.start()
        for m in managers:
            await m.stop()
        for app in apps:
            firebase_admin.delete_app(app)
        await emu.stop()
