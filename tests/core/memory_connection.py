"""A test double: ``MemoryConnectionPair``, two in-memory PeerConnections joined back to back.

It implements the PeerConnection ABC only as far as the transfer layer needs (ordered ``send``/``send_bytes`` with
backpressure, ``data``/``binary``/``closed`` events, ``disconnect``), so the transfer tests run without a network
before the relay and WebRTC connections exist. Frames bigger than the link's limit are refused like aiortc does.
"""

from __future__ import annotations

import asyncio

from pyee.asyncio import AsyncIOEventEmitter

from core import events as ev
from core.errors import ConnectionClosedError, MessageTooLargeError
from core.events import Transport
from core.peer import PeerConnection, PeerInfo


class MemoryConnection(PeerConnection):
    def __init__(self, me: PeerInfo, peer: PeerInfo, transport: Transport, max_frame: int, depth: int) -> None:
        self.events = AsyncIOEventEmitter()
        self._me = me
        self._peer = peer
        self._transport: Transport = transport
        self.max_frame = max_frame
        self._outgoing: asyncio.Queue[tuple[str, object]] = asyncio.Queue(maxsize=depth)
        self.other: MemoryConnection | None = None
        self._closed = False
        self.binary_bytes_sent = 0
        self._task = asyncio.get_running_loop().create_task(self._deliver())

    @property
    def peer(self) -> PeerInfo:
        return self._peer

    @property
    def session_id(self) -> str:
        return "memory"

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def max_bytes_message(self) -> int:
        return self.max_frame  # declared, so core.files sizes its chunks by it

    @property
    def rtt(self) -> float | None:
        return None

    @property
    def is_slow(self) -> bool:
        return False

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def send(self, data: str) -> None:
        await self._put(ev.DATA, ev.Data(data))

    async def send_bytes(self, data: bytes) -> None:
        if len(data) > self.max_frame:
            raise MessageTooLargeError(f"{len(data)} bytes is over this link's {self.max_frame}",
                                       size=len(data), limit=self.max_frame)
        await self._put(ev.BINARY, ev.BinaryData(bytes(data)))
        self.binary_bytes_sent += len(data)

    async def _put(self, event: str, payload: object) -> None:
        if self._closed:
            raise ConnectionClosedError("The connection is closed.")
        await self._outgoing.put((event, payload))

    async def _deliver(self) -> None:
        while True:
            event, payload = await self._outgoing.get()
            if self.other is not None and not self.other._closed:
                self.other.events.emit(event, payload)
            await asyncio.sleep(0)

    def _close(self, reason: ev.CloseReason) -> None:
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        self.events.emit(ev.CLOSED, ev.ConnectionClosed(self, reason))

    async def disconnect(self) -> None:
        """Close both ends at once; frames still queued are lost, as on a dropped link."""
        self._close("local-closed")
        if self.other is not None:
            self.other._close("peer-requested-closed")


class MemoryConnectionPair:
    """``a`` and ``b``: what ``a`` sends, ``b`` receives, in order."""

    def __init__(self, transport: Transport = "webrtc", max_frame: int = 64 * 1024, depth: int = 16) -> None:
        self.a = MemoryConnection(PeerInfo("a", "laptop"), PeerInfo("b", "desktop"), transport, max_frame, depth)
        self.b = MemoryConnection(PeerInfo("b", "desktop"), PeerInfo("a", "laptop"), transport, max_frame, depth)
        self.a.other, self.b.other = self.b, self.a

    async def close(self) -> None:
        await self.a.disconnect()
        await asyncio.gather(self.a._task, self.b._task, return_exceptions=True)
