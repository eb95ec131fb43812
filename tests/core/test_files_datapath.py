"""The file transfer's data path: a window counted in bytes on a direct link, and reads and writes off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

import core.files.disk as disk_module
import core.files.transfers as files_module
from core import events as ev
from core.files import FileTransfers
from core.files.protocol import MAX_WINDOW
from core.files.protocol import CHUNK_HEADER_SIZE
from core.files.transfers import DEFAULT_WINDOW, DIRECT_CHUNK_BYTES, MIN_WINDOW, max_chunk_payload
from core.options import ManagerOptions

from memory_connection import MemoryConnectionPair


async def test_the_window_holds_a_number_of_bytes_whatever_the_chunk_size() -> None:
    pair = MemoryConnectionPair(transport="direct")
    other = MemoryConnectionPair(transport="webrtc")
    try:
        assert FileTransfers(other.a)._window() == DEFAULT_WINDOW  # slower links: what is in flight delays chat
        chunk = DIRECT_CHUNK_BYTES - CHUNK_HEADER_SIZE  # a direct link takes large chunks
        assert FileTransfers(pair.a)._offered_chunk_size() == chunk
        assert FileTransfers(pair.a)._window() == 16 * 1024 * 1024 // chunk
        assert FileTransfers(pair.a, window_bytes=chunk * 100)._window() == 100
        assert FileTransfers(pair.a, window_bytes=1)._window() == MIN_WINDOW
        assert FileTransfers(pair.a, window=7)._window() == 7
        small = FileTransfers(pair.a, chunk_size=10_000)
        assert small._offered_chunk_size() == 10_000 and small._window() == min(MAX_WINDOW, 16 * 1024 * 1024 // 10_000)
        assert FileTransfers(other.a)._offered_chunk_size() == 64 * 1024 - CHUNK_HEADER_SIZE  # as before
        with pytest.raises(ValueError, match="window must be 1 to"):
            FileTransfers(pair.a, window=MAX_WINDOW + 1)
    finally:
        await pair.close()
        await other.close()


async def test_chunks_are_written_and_hashed_off_the_event_loop(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[int] = set()
    real = disk_module._write_and_hash

    def spy(*args) -> None:
        threads.add(threading.get_ident())
        real(*args)

    monkeypatch.setattr(disk_module, "_write_and_hash", spy)
    pair = MemoryConnectionPair()
    try:
        source = tmp_path / "out.bin"
        source.write_bytes(bytes(range(256)) * 4000)
        sender, receiver = FileTransfers(pair.a), FileTransfers(pair.b)
        offers: asyncio.Queue = asyncio.Queue()
        receiver.events.on(ev.INCOMING_TRANSFER, lambda e: offers.put_nowait(e.offer))
        outgoing = await sender.send_files([source])
        incoming = await (await asyncio.wait_for(offers.get(), 30)).accept(tmp_path / "in")
        await asyncio.wait_for(asyncio.gather(outgoing.wait(), incoming.wait()), 30)
        saved = (tmp_path / "in" / "out.bin").read_bytes()
        assert hashlib.sha256(saved).digest() == hashlib.sha256(source.read_bytes()).digest()
        assert threads and threading.get_ident() not in threads
    finally:
        await pair.close()
