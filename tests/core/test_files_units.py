"""Small pieces of core.files without a connection: the fair sending queue and the frame size per connection."""

from __future__ import annotations

import asyncio

from core.files.transfers import _Outbox, max_chunk_payload, max_frame_bytes
from core.options import ManagerOptions
from core.files.protocol import CHUNK_HEADER_SIZE


async def test_outbox_sends_control_frames_first_then_one_chunk_per_transfer_in_turn() -> None:
    box = _Outbox()
    for i in range(3):
        box.chunk("a", b"\x10a%d" % i)
    box.chunk("b", b"\x10b0")
    box.control("b", b"\x04ack")
    order = [(await box.get())[1] for _ in range(5)]
    assert order == [b"\x04ack", b"\x10a0", b"\x10b0", b"\x10a1", b"\x10a2"]


async def test_outbox_waits_for_frames_and_drops_a_finished_transfer() -> None:
    box = _Outbox()
    box.chunk("a", b"\x10a0")
    box.drop("a")
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.chunk("b", b"\x10b0")
    assert await asyncio.wait_for(waiting, 5) == ("b", b"\x10b0")


class Link:
    """Just what max_frame_bytes reads of a connection: the declared capability (None: not declared)."""

    def __init__(self, transport: str, declared: int | None = None) -> None:
        self.transport = transport
        self.max_bytes_message = declared


def test_frame_size_is_one_relay_frame_unless_the_connection_declares_its_own() -> None:
    options = ManagerOptions()  # a whole message may hold 16 MiB; one relay frame 64 KiB of base64
    assert max_frame_bytes(Link("relay"), options) == 48 * 1024  # base64 of it is exactly 64 KiB
    assert max_frame_bytes(Link("webrtc"), options) == 48 * 1024
    assert max_frame_bytes(Link("webrtc", 65535), options) == 65535
    assert max_chunk_payload(Link("relay"), options) == 48 * 1024 - CHUNK_HEADER_SIZE
    assert max_frame_bytes(Link("relay"), ManagerOptions(relay_frame_bytes=1000)) == 750
    assert max_frame_bytes(Link("relay"), ManagerOptions(max_message_bytes=500)) == 500
