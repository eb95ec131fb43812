"""The direct link's I/O: :class:`DirectLink` carries a connection's frames over one TCP + TLS 1.3 connection, and
:func:`race` opens that connection: both sides dial each other's candidates at once and accept on their own
listener, and the first connection that both sides authenticated wins (the wire steps are in
:mod:`core.protocol.direct`).

Nothing is read from a socket before its TLS handshake verified the peer's pinned certificate: an accepted TCP
connection stays paused until the peer's certificate is known, then the handshake runs; a handshake that fails
closes the socket.

Each connection's protocol is a :class:`Wire` from its TLS handshake on: asyncio decrypts what arrives straight into
the buffers of the wire's :class:`~core.protocol.direct.FrameReader`, so a file chunk's bytes are not copied from
buffer to buffer on their way to the stream.
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
from ..protocol.direct import CHOSEN, HELLO, FrameReader, encode_stream_frames, fingerprint
from .certs import SessionCertificate, client_context, server_context

__all__ = ["DirectLink", "Listener", "Wire", "local_addresses", "race"]

log = logging.getLogger(__name__)


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


class Wire(asyncio.BufferedProtocol):
    """One direct connection from its TLS handshake on. While the race settles, :meth:`read_exactly` reads the few
    bytes that settle it; once :meth:`start` hands it to a link, every record is parsed as it is decrypted, into
    the buffers of a :class:`~core.protocol.direct.FrameReader`, and its frames are handed on at once.

    Writing is :attr:`transport`'s; :meth:`drain` waits while its buffer is over the high-water mark."""

    # Bytes a peer may send after settling and before the link starts reading them (frames: the stream's window
    # bounds them); past this the socket is not read until then.
    EARLY_LIMIT = 1024 * 1024

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._frames = FrameReader()
        self._early = bytearray()
        self._scratch = bytearray(16 * 1024)
        self._waiter: asyncio.Future[None] | None = None
        self._on_frames: Callable[[list[dict[str, Any]]], None] | None = None
        self._on_lost: Callable[[str], None] | None = None
        self._lost: str | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    @property
    def malformed(self) -> list[str]:
        """Why records were left out (see :class:`~core.protocol.direct.FrameReader`); the holder clears it."""
        return self._frames.malformed

    # -- asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._on_frames is None:
            return memoryview(self._scratch)
        return self._frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._on_frames is None:
            self._early += memoryview(self._scratch)[:nbytes]
            if len(self._early) > self.EARLY_LIMIT and self.transport is not None and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            self._wake()
            return
        self._deliver(lambda: self._frames.buffer_updated(nbytes))

    def eof_received(self) -> bool:
        return False  # close: a half-open link is no use

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"the direct link failed: {_describe(exc)}" if exc else "the other device closed the direct link"
        self._break(reason, abort=False)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- ours

    async def read_exactly(self, count: int) -> bytes:
        """The next ``count`` bytes, before :meth:`start` (settling the race).

        Raises:
            asyncio.IncompleteReadError: the connection ended first.
        """
        while len(self._early) < count:
            if self._lost is not None:
                raise asyncio.IncompleteReadError(bytes(self._early), count)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._early[:count])
        del self._early[:count]
        return data

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the write buffer is over its high-water mark.

        Raises:
            ConnectionResetError: the connection is lost.
        """
        if self._lost is not None:
            raise ConnectionResetError(self._lost)
        if self._writing_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
            if self._lost is not None:
                raise ConnectionResetError(self._lost)

    def start(self, on_frames: Callable[[list[dict[str, Any]]], None], on_lost: Callable[[str], None]) -> None:
        """Hand every frame from now on (and those that arrived early) to ``on_frames``, and a loss to
        ``on_lost`` (once, with why)."""
        self._on_frames, self._on_lost = on_frames, on_lost
        lost, early, self._early = self._lost, self._early, bytearray()
        if early:
            self._deliver(lambda: self._frames.feed(early))
        if lost is not None:  # lost while nobody listened: say so now, after the frames that came first
            on_lost(lost)
        elif self._lost is None and self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _deliver(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        """Hand on the frames ``read`` parses; a stream that breaks its framing ends the connection."""
        try:
            frames = read()
        except ProtocolError as exc:
            self._break(f"the direct link broke its framing: {exc}")
            return
        if frames and self._on_frames is not None:
            self._on_frames(frames)

    def _break(self, reason: str, *, abort: bool = True) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if abort:
            self.abort()
        if self._on_lost is not None:
            self._on_lost(reason)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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


def _peer_fingerprint(wire: Wire) -> str | None:
    ssl_object = wire.transport.get_extra_info("ssl_object") if wire.transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return fingerprint(der) if der else None


async def _upgrade_accepted(transport: asyncio.Transport, context: ssl.SSLContext, timeout: float) -> Wire:
    loop = asyncio.get_running_loop()
    wire = Wire()
    try:
        tls = await loop.start_tls(transport, wire, context, server_side=True, ssl_handshake_timeout=timeout)
    except BaseException:
        transport.abort()
        raise
    if tls is None:
        transport.abort()
        raise ConnectionResetError("the connection closed during the TLS handshake")
    wire.connection_made(tls)  # start_tls does not call it
    return wire


async def race(
    *,
    initiator: bool,
    own: SessionCertificate,
    peer_cert: bytes,
    peer_candidates: tuple[tuple[str, int], ...],
    listener: Listener,
    timeout: float,
) -> Wire:
    """Dial every candidate and accept on ``listener`` at once; return the first connection both sides authenticated
    and chose; close every other one and the listener.

    Raises:
        UpgradeError: nothing authenticated within ``timeout`` (the message lists what each candidate did).
    """
    loop = asyncio.get_running_loop()
    pinned = fingerprint(peer_cert)
    client = client_context(own, peer_cert)
    server = server_context(own, peer_cert)
    won: asyncio.Future[Wire] = loop.create_future()
    problems: dict[str, str] = {}
    losers: list[Wire] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def settle(where: str, wire: Wire) -> None:
        # The TLS handshake checked the certificate against the pinned one; check again, to be sure of the
        # context, then prove to each other that both ends accepted the handshake.
        try:
            if _peer_fingerprint(wire) != pinned:
                raise ssl.SSLError("the peer's certificate does not match the one it signalled")
            wire.write(HELLO)
            await wire.drain()
            if await wire.read_exactly(1) != HELLO:
                raise ProtocolError("the peer did not greet")
            if initiator:
                if won.done():
                    raise ConnectionAbortedError("another connection won")
                wire.write(CHOSEN)
                await wire.drain()
            elif await wire.read_exactly(1) != CHOSEN:
                raise ProtocolError("the peer chose nothing")
        except BaseException as exc:
            wire.abort()
            if not isinstance(exc, asyncio.CancelledError):
                problems.setdefault(where, _describe(exc))
            raise
        if won.done():
            losers.append(wire)
            wire.abort()
        else:
            won.set_result(wire)

    async def dial(host: str, port: int) -> None:
        where = f"{host}:{port}"
        try:
            _, wire = await loop.create_connection(
                Wire, host, port, ssl=client, server_hostname="peerchat", ssl_handshake_timeout=timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            problems[where] = _describe(exc)
            return
        with contextlib.suppress(Exception):
            await settle(where, wire)

    async def accept(transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername") or ("?", 0)
        where = f"from {peername[0]}:{peername[1]}"
        try:
            wire = await _upgrade_accepted(transport, server, timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            problems[where] = _describe(exc)
            return
        with contextlib.suppress(Exception):
            await settle(where, wire)

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

    def __init__(self, wire: Wire, host: LinkHost, *, idle_timeout: float = 10.0) -> None:
        assert wire.transport is not None
        self._wire = wire
        self._transport = wire.transport
        self._host = host
        self._idle_timeout = idle_timeout
        self._closed = False
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._last_heard = time.monotonic()
        self.error: str | None = None
        self._watchdog = asyncio.ensure_future(self._watch())
        # Reading starts on the next turn of the loop, once the host attached this link.
        self._starting: asyncio.Handle | None = asyncio.get_running_loop().call_soon(self._start)

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        return self._transport.get_write_buffer_size()

    def send_frame(self, frame: dict[str, Any]) -> None:
        # The stream bounds what is in flight (its window, in frames and bytes), so the write buffer stays bounded.
        if self._closed or self._transport.is_closing():
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
        if self._transport.is_closing():
            self._lost("the direct link broke while sending")
            return
        try:
            # The parts as they are, without joining them: TLS encrypts each in turn (one copy of the data, not two).
            self._transport.writelines(encode_stream_frames(frames))
        except Exception as exc:  # noqa: BLE001 - a failed write is a broken link; its frames are unacknowledged
            self._lost(f"the direct link failed while sending: {exc}")

    async def drain(self) -> None:
        """Wait while the write buffer is over its high-water mark."""
        await self._wire.drain()

    def _start(self) -> None:
        self._starting = None
        self._wire.start(self._receive, self._lost)

    def _receive(self, frames: list[dict[str, Any]]) -> None:
        """Frames the wire just read (called from asyncio's reading of the socket)."""
        if self._closed:
            return
        self._last_heard = time.monotonic()
        if self._wire.malformed:
            for problem in self._wire.malformed:
                log.warning("direct link: %s", problem)
            self._wire.malformed.clear()
        try:
            if len(frames) > 1:
                self._host.receive_frames(frames)
            else:
                self._host.receive_frame(frames[0])
        except Exception:  # noqa: BLE001 - a failure above must not leave asyncio's TLS reading half done
            log.exception("direct link: a received frame could not be handled")
            self._lost("a received frame could not be handled")

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
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        transport = self._transport
        if not transport.is_closing():
            # Frames still buffered are resent on the next link (they are unacknowledged).
            transport.abort()

    def abort(self) -> None:
        """Break the TCP connection as a failing network would (tests and diagnostics)."""
        self._transport.abort()
