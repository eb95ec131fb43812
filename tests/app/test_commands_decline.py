"""`peerchat send` to a device that declines the session: one clear line, exit code 6."""

from __future__ import annotations

import argparse
import asyncio
import io

import pytest

from app_helpers import settings_for
from core.events import INCOMING_CONNECTION
from peerchat.commands import EXIT_FAILED, CommandError, exit_code_for, register, send_main


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="peerchat")
    register(root.add_subparsers(dest="command"))
    return root


@pytest.mark.parametrize("reason", [None, "busy"])
async def test_send_to_a_device_that_declines_fails_with_code_6(make_manager, emulator, namespace, tmp_path, reason):
    desktop = await make_manager("desktop")
    declines: list = []

    def decline(event) -> None:
        declines.append(asyncio.ensure_future(event.connection.decline(reason)))

    desktop.events.on(INCOMING_CONNECTION, decline)
    payload = tmp_path / "notes.txt"
    payload.write_text("hello")
    settings = settings_for("laptop", tmp_path, emulator=emulator.host_port, namespace=namespace, webrtc=False)
    args = parser().parse_args(["send", "desktop", str(payload), "--wait", "20"])
    with pytest.raises(CommandError) as info:
        async with asyncio.timeout(60):
            await send_main(settings, args, io.StringIO(), io.StringIO())
    assert declines
    assert str(info.value) == "desktop declined the session" + (f" ({reason})" if reason else "")
    assert exit_code_for(info.value) == EXIT_FAILED == 6


async def test_send_waits_for_acceptance_and_reports_a_decline_in_connect(make_manager, emulator, namespace, tmp_path):
    asked = asyncio.Event()

    async def accept(request) -> bool:
        asked.set()
        await asyncio.sleep(0.3)  # a person reading the dialog
        return False

    await make_manager("desktop", accept=accept)
    settings = settings_for("laptop", tmp_path, emulator=emulator.host_port, namespace=namespace, webrtc=False)
    args = parser().parse_args(["send", "desktop", "--text", "hello", "--wait", "20"])
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        async with asyncio.timeout(60):
            await send_main(settings, args, io.StringIO(), err)
    assert asked.is_set()
    assert "waiting for desktop to accept…" in err.getvalue()
    assert str(info.value) == "desktop declined the session"
    assert exit_code_for(info.value) == EXIT_FAILED


async def test_send_to_a_device_whose_key_changed_names_it_and_fails(make_manager, emulator, namespace, tmp_path):
    from core import FileKeyStore, MemoryKeyStore

    settings = settings_for("laptop", tmp_path, emulator=emulator.host_port, namespace=namespace, webrtc=False,
                            keys_dir=tmp_path / "keys")
    # This device remembers another key for the desktop than the one it has now.
    FileKeyStore(settings.key_store_dir).remember("desktop-id", MemoryKeyStore().identity().public_text, "desktop")
    await make_manager("desktop")
    args = parser().parse_args(["send", "desktop", "--text", "hello", "--wait", "20"])
    with pytest.raises(Exception) as info:
        async with asyncio.timeout(60):
            await send_main(settings, args, io.StringIO(), io.StringIO())
    assert "key of desktop changed" in str(info.value) and "forget desktop-id" in str(info.value)
    assert exit_code_for(info.value) == EXIT_FAILED
