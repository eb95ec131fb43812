"""Helpers for the app's tests: settings for a test device, waiting on the app, reading a chat log."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import ManagerOptions
from peerchat.config import Settings

USER = "alice"
# Managers in tests: relay only unless a test asks for WebRTC, and time-outs that fail a broken test quickly.
FAST = ManagerOptions(webrtc=False, direct=False, connect_timeout=10.0, close_timeout=2.0)


def settings_for(label: str, tmp_path: Path, **changes: Any) -> Settings:
    download = tmp_path / f"{label}-downloads"
    download.mkdir(exist_ok=True)
    return dataclasses.replace(Settings(user=USER, label=label, device_id=f"{label}-id", download_dir=download,
                                        data_dir=tmp_path / f"{label}-data"), **changes)


async def wait_until(predicate: Callable[[], Any], pilot: Any = None, *, timeout: float = 20.0,
                     what: str = "the condition") -> Any:
    """Poll ``predicate`` (letting the app run) until it is truthy; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                if pilot is not None:
                    await pilot.pause(0.05)
                else:
                    await asyncio.sleep(0.05)
            return result
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def log_text(widget: Any) -> str:
    """The plain text of a RichLog."""
    return "\n".join(line.text for line in widget.lines)


def in_log(needle: str, widget: Any) -> bool:
    """Whether ``needle`` is in the RichLog, ignoring how its lines were wrapped."""
    squash = "".join
    return squash(needle.split()) in squash(log_text(widget).split())
