"""The direct link's I/O: :class:`DirectLink` carries a connection's frames over one TCP + TLS 1.3 connection, and
:func:`race` opens that connection: both sides dial each other's candidates at once and accept on their own
listener, and the first connection that both sides authenticated wins (the wire steps are in
:mod:`core.protocol.direct`).

Nothing is read from a socket before its TLS handshake verified the peer's pinned certificate: an accepted TCP
connection stays paused until the peer's certificate is known, then the handshake runs; a handshake that fails
closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConnectionClosedError, ProtocolError, UpgradeError
from ..link import Link, LinkHost
from ..protocol.direct import (
    CHOSEN,
    HEADER,
    HELLO,
    RUN,
    RUN_HEAD,
    decode_frames,
    decode_run,
    encode_stream_frames,
    fingerprint,
    parse_header,
)
from .certs import SessionCertificate, client_context, server_context

__all__ = ["DirectLink", "Listener", "local_addresses", "race"]

log = logging.getLogger(__name__)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def local_addresses() -> tuple[str, ...]:
    """Every local address a peer may reach: 127.0.0.1 first (devices on one machine), then each interface's IPv4
    address and global IPv6 address (link-local ones need a scope and are left out)."""
    import ifaddr

    found = ["127.0.0.1"]
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(address)
            except ValueError:
                continue
            if parsed.is_loopback or parsed.is_link_local or parsed.is_multicast or parsed.is_unspecified:
                continue
            if str(parsed) not in found:
                found.append(str(parsed))
    return tuple(found)


class _Paused(asyncio.Protocol):
    """An accepted TCP connection, paused before its first byte until its TLS handshake may start."""

    def __init__(self, on_accept: Callable[[asyncio.Transport], None]) -> None:
        self._on_accept = on_accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self._on_accept(transport)

    def data_received(self, data: bytes) -> None:  # never called while paused
        pass


class Listener:
    """A listener on ``addresses`` (an ephemeral port each) for one attempt: ``accepted`` gets every TCP connection
    (paused); :meth:`close` stops accepting at once."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        self.candidates: tuple[tuple[str, int], ...] = ()
        self._servers: list[asyncio.Server] = []
        self.closed = False

    async def start(self, addresses: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        candidates = []
        for address in addresses:
            try:
                server = await loop.create_server(lambda: _Paused(self._accept), address, 0, backlog=16)
            except OSError as exc:
                log.info("cannot listen on %s for the direct link: %s", address, exc)
                continue
            self._servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                candidates.append((host, port))
        self.candidates = tuple(candidates)

    def _accept(self, transport: asyncio.Transport) -> None:
        if self.closed:
            transport.abort()
            return
        self.accepted.put_nowait(transport)

    def close(self) -> None:
        self.closed = True
        for server in self._servers:
            server.close()
        while not self.accepted.empty():
            self.accepted.get_nowait().abort()


def _peer_fingerprint(writer: asyncio.StreamWriter) -> str | None:
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return fingerprint(der) if der else None


async def _upgrade_accepted(transport: asyncio.Transport, context: ssl.SSLContext, timeout: float) -> Stream:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    protocol = asyncio.StreamReaderProtocol(reader)
    try:
        tls = await loop.start_tls(transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout)
    except BaseException:
        transport.abort()
        raise
    if tls is None:
        transport.abort()
        raise ConnectionResetError("the connection closed during the TLS handshake")
    # start_tls does not call connection_made: without it the reader has no transport to pause (no flow control
    # on reading) and does not know it runs over TLS.
    protocol.connection_made(tls)
    return reader, asyncio.StreamWriter(tls, protocol, reader, loop)


async def race(
    *,
    initiator: bool,
    own: SessionCertificate,
    peer_cert: bytes,
    peer_candidates: tuple[tuple[str, int], ...],
    listener: Listener,
    timeout: float,
) -> Stream:
    """Dial every candidate and accept on ``listener`` at once; return the first connection both sides authenticated
    and chose; close every other one and the listener.

    Raises:
        UpgradeError: nothing authenticated within ``timeout`` (the message lists what each candidate did).
    """
    loop = asyncio.get_running_loop()
    pinned = fingerprint(peer_cert)
    client = client_context(own, peer_cert)
    server = server_context(own, peer_cert)
    won: asyncio.Future[Stream] = loop.create_future()
    problems: dict[str, str] = {}
    losers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def settle(where: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The TLS handshake checked the certificate against the pinned one; check again, to be sure of the
        # context, then prove to each other that both ends accepted the handshake.
        try:
            if _peer_fingerprint(writer) != pinned:
                raise ssl.SSLError("the peer's certificate does not match the one it signalled")
            writer.write(HELLO)
            await writer.drain()
            if await reader.readexactly(1) != HELLO:
                raise ProtocolError("the peer did not greet")
            if initiator:
                if won.done():
                    raise ConnectionAbortedError("another connection won")
                writer.write(CHOSEN)
                await writer.drain()
            elif await reader.readexactly(1) != CHOSEN:
                raise ProtocolError("the peer chose nothing")
        except BaseException as exc:
            writer.transport.abort()
            if not isinstance(exc, asyncio.CancelledError):
                problems.setdefault(where, _describe(exc))
            raise
        if won.done():
            losers.append(writer)
            writer.transport.abort()
        else:
            won.set_result((reader, writer))

    async def dial(host: str, port: int) -> None:
        where = f"{host}:{port}"
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client, server_hostname="peerchat", ssl_handshake_timeout=timeout, limit=2**20
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            problems[where] = _describe(exc)
            return
        with contextlib.suppress(Exception):
            await settle(where, reader, writer)

    async def accept(transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername") or ("?", 0)
        where = f"from {peername[0]}:{peername[1]}"
        try:
            reader, writer = await _upgrade_accepted(transport, server, timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            problems[where] = _describe(exc)
            return
        with contextlib.suppress(Exception):
            await settle(where, reader, writer)

    async def accept_all() -> None:
        while True:
            transport = await listener.accepted.get()
            spawn(accept(transport))

    def spawn(coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    spawn(accept_all())
    for host, port in peer_candidates:
        spawn(dial(host, port))
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(won)
    except TimeoutError:
        tried = "; ".join(f"{where}: {problem}" for where, problem in problems.items()) or "no connection arrived"
        raise UpgradeError(f"no direct connection within {timeout:g} s ({tried})") from None
    finally:
        listener.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not won.done():
            won.cancel()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "its certificate is not the one it signalled"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed during the handshake (it refused our certificate)"
    return str(exc) or type(exc).__name__


# Frames written during one turn of the event loop go out together, in one write (consecutive fragments of a
# message as one run); this many bytes of them are written at once without waiting for the turn to end.
FLUSH_BYTES = 2 * 1024 * 1024


class DirectLink(Link):
    """A connection's frames over one authenticated TCP + TLS connection (frames as :mod:`core.protocol.direct`
    says). When the connection breaks, or nothing arrives for ``idle_timeout`` seconds, the link calls
    ``host.detach_link``; the relay carries the frames again.

    Frames handed to :meth:`send_frame` during one turn of the event loop are written together at its end (or as
    soon as ``FLUSH_BYTES`` of them wait): one write and one record per message's fragments instead of one per
    fragment. A frame not yet written when the link breaks is unacknowledged, so the relay carries it after the
    fallback like any other."""

    transport = "direct"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: LinkHost, *,
                 idle_timeout: float = 10.0) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host
        self._idle_timeout = idle_timeout
        self._closed = False
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._last_heard = time.monotonic()
        self.error: str | None = None
        self._task = asyncio.ensure_future(self._read())
        self._watchdog = asyncio.ensure_future(self._watch())

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._writer.transport.get_write_buffer_size()

    def send_frame(self, frame: dict[str, Any]) -> None:
        # The stream bounds what is in flight (its window, in frames and bytes), so the write buffer stays bounded.
        if self._closed or self._writer.transport.is_closing():
            # Tell the host through the usual path first (the order of links learns of the loss), then refuse.
            self._lost("the direct link broke while sending")
            raise ConnectionClosedError("the direct link is closed")
        self._pending.append(frame)
        self._pending_bytes += len(frame.get("data", ""))
        if self._pending_bytes >= FLUSH_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write the frames handed over since the last flush, in one write."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        frames, self._pending, self._pending_bytes = self._pending, [], 0
        if not frames or self._closed:
            return
        if self._writer.transport.is_closing():
            self._lost("the direct link broke while sending")
            return
        try:
            # The parts as they are, without joining them: TLS encrypts each in turn (one copy of the data, not two).
            self._writer.writelines(encode_stream_frames(frames))
        except Exception as exc:  # noqa: BLE001 - a failed write is a broken link; its frames are unacknowledged
            self._lost(f"the direct link failed while sending: {exc}")

    async def drain(self) -> None:
        """Wait while the write buffer is over its high-water mark."""
        await self._writer.drain()

    async def _read(self) -> None:
        reader = self._reader
        try:
            while True:
                length, kind = parse_header(await reader.readexactly(HEADER.size))
                run = kind == RUN and length >= RUN_HEAD.size
                if run:
                    # A run's data read apart from its header: a whole message in it is delivered as these very
                    # bytes (the stream joins nothing).
                    head = await reader.readexactly(RUN_HEAD.size)
                    body = await reader.readexactly(length - RUN_HEAD.size)
                else:
                    body = await reader.readexactly(length)
                self._last_heard = time.monotonic()
                try:
                    frames = decode_run(head, body) if run else decode_frames(kind, body)
                except ProtocolError as exc:
                    log.warning("direct link: %s", exc)
                    continue
                for frame in frames:
                    self._host.receive_frame(frame)
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            self._lost("the other device closed the direct link")
        except ProtocolError as exc:
            self._lost(f"the direct link broke its framing: {exc}")
        except (OSError, ssl.SSLError) as exc:
            self._lost(f"the direct link failed: {_describe(exc)}")

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(1.0, self._idle_timeout / 4))
            if time.monotonic() - self._last_heard > self._idle_timeout:
                self._lost(f"nothing arrived on the direct link for {self._idle_timeout:g} s")

    def _lost(self, reason: str) -> None:
        if self._closed:
            return
        self.error = reason
        log.info("%s", reason)
        self._host.detach_link(self, reason)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending, self._pending_bytes = [], 0
        self._watchdog.cancel()
        if asyncio.current_task() is not self._task:
            self._task.cancel()
        transport = self._writer.transport
        if not transport.is_closing():
            # Frames still buffered are resent on the next link (they are unacknowledged).
            transport.abort()

    def abort(self) -> None:
        """Break the TCP connection as a failing network would (tests and diagnostics)."""
        self._writer.transport.abort()
