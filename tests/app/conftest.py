"""Fixtures for the app's tests: real managers on the shared emulator, and helpers to wait on the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app_helpers import FAST, USER
from core import FirebasePeerConnectionManager, ManagerOptions, PeerInfo


@pytest.fixture
async def make_manager(firebase_app_factory) -> AsyncIterator[Callable[..., Any]]:
    """``await make_manager("laptop")``: a started manager for device ``laptop`` of user alice (stopped after);
    ``upgrader`` replaces core's default WebRTC upgrade (None keeps it); ``accept`` and ``keys`` go to the manager."""
    managers: list[FirebasePeerConnectionManager] = []

    async def make(label: str, *, options: ManagerOptions = FAST, user: str = USER,
                   upgrader: Any = None, accept: Any = None, keys: Any = None) -> FirebasePeerConnectionManager:
        app = firebase_app_factory.make({"uid": user})
        manager = FirebasePeerConnectionManager(user, PeerInfo(f"{label}-id", label), app=app, options=options,
                                                upgrader=upgrader, accept=accept, keys=keys)
        await manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in reversed(managers):
        await manager.stop()
