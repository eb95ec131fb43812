"""The direct link's side of one connection (:class:`DirectUpgrade`): its attempts, signalled over the connection
(which it sees only as a :class:`core.link.LinkHost`), and the link each successful attempt attaches.

An attempt, started by the initiator (:meth:`DirectUpgrade.attempt`): it listens on its addresses and sends an
offer with its candidates and this session's certificate; the other side listens too, answers the same way and
dials at once; the initiator dials when the answer arrives. :func:`core.direct.link.race` settles the winner. A
successful attempt calls ``host.attach_link``; a failed one ``host.report_upgrade_failure`` with an
:class:`~core.errors.UpgradeError` saying what each candidate did. A side with the direct link turned off answers
every offer with a decline, and the initiator stops trying.

Security: the certificate travels only in the connection's signals (never in a database record of its own), and
each side trusts exactly the certificate the other signalled, so anyone who can reach the listener but did not
take part in the signalling is refused during the TLS handshake, before anything is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import events as ev
from .._tasks import emit_safely, spawn
from ..errors import PeerchatError, ProtocolError, UpgradeError
from ..link import LinkHost
from ..options import ManagerOptions
from ..protocol.direct import DirectSignal, parse_signal
from .certs import SessionCertificate, session_certificate
from .link import DirectLink, Listener, local_addresses, race

__all__ = ["DirectOptions", "DirectUpgrade", "TURNED_OFF_HERE", "TURNED_OFF_THERE"]

log = logging.getLogger(__name__)

TURNED_OFF_HERE = "the direct link is turned off on this device"
TURNED_OFF_THERE = "the direct link is turned off on the other device"


@dataclass(frozen=True)
class DirectOptions:
    """How a direct link connects.

    ``addresses``: the local addresses to listen on and offer (None: :func:`~core.direct.link.local_addresses`).
    ``timeout``: how long one attempt may take, from the offer to the chosen connection.
    ``idle_timeout``: an open link that hears nothing (not even the stream's pings) for this long is dropped.
    """

    enabled: bool = True
    addresses: tuple[str, ...] | None = None
    timeout: float = 3.0
    idle_timeout: float = 10.0

    @classmethod
    def from_manager_options(cls, options: ManagerOptions) -> DirectOptions:
        return cls(
            enabled=options.direct,
            addresses=options.addresses,
            timeout=options.direct_timeout,
            idle_timeout=max(10.0, options.ping_interval * 4),
        )


class DirectUpgrade:
    """The direct link of one connection for its whole life (see the module docstring).

    ``failures`` lists the reason of every failed attempt, oldest first; ``link`` is the open link, if any.
    """

    def __init__(self, host: LinkHost, options: DirectOptions) -> None:
        self.host = host
        self.options = options
        self.attempt_number = 0
        self.failures: list[str] = []
        self.link: DirectLink | None = None
        self.peer_declined = False
        self.decline_reason = TURNED_OFF_THERE
        self.listeners: list[Listener] = []  # every listener this side opened (diagnostics and tests)
        self.certificate: SessionCertificate | None = None
        self.on_declined: Callable[[], None] | None = None
        self._answers: dict[int, asyncio.Future[DirectSignal]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False

    # -- the outside ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the peer's signals; the initiator makes the first attempt, the other side waits (bounded) for it
        to end. The outcome goes to the host (attached link or reported failure); nothing is raised."""
        self.host.events.on(ev.CLOSED, lambda _event: self.close())
        if not self.options.enabled:
            await self._send(DirectSignal(0, "decline", reason=TURNED_OFF_THERE))
            self._settle_first()
            return
        if self.host.is_initiator:
            await self.attempt()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.timeout * 2 + 2):
                await asyncio.shield(self._first)

    async def attempt(self) -> None:
        """The initiator's next attempt (one at a time: a call while one runs waits for it)."""
        if self._running is not None and not self._running.done():
            await asyncio.shield(self._running)
            return
        if self._closed or not self.options.enabled:
            return
        if self.peer_declined:
            # The decline may arrive before the first attempt starts (the other side sends it at once).
            self._failed(self.attempt_number, UpgradeError(self.decline_reason))
            return
        self._running = asyncio.ensure_future(self._attempt_as_initiator(self.attempt_number + 1))
        await asyncio.shield(self._running)

    def handle_signal(self, signal: dict[str, Any]) -> None:
        """A signal with the ``direct`` key arrived from the peer."""
        try:
            parsed = parse_signal(signal)
        except ProtocolError as exc:
            log.warning("direct-link signal dropped: %s", exc)
            emit_safely(self.host.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(exc))
            return
        if parsed.type == "decline":
            self.peer_declined = True
            self.decline_reason = parsed.reason
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_exception(UpgradeError(parsed.reason))
            self._settle_first()
            if self.on_declined is not None:
                self.on_declined()
        elif parsed.type == "answer" and self.host.is_initiator:
            answer = self._answers.get(parsed.attempt)
            if answer is not None and not answer.done():
                answer.set_result(parsed)
        elif parsed.type == "offer" and not self.host.is_initiator:
            if not self.options.enabled:
                self._spawn(self._send(DirectSignal(parsed.attempt, "decline", reason=TURNED_OFF_THERE)))
            elif parsed.attempt > self.attempt_number:
                self.attempt_number = parsed.attempt
                self._spawn(self._attempt_as_answerer(parsed))
        else:
            log.info("direct-link signal %r ignored on this side", parsed.type)

    def close(self) -> None:
        """The connection closed: stop every attempt, close the link and the listeners."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._running is not None:
            self._running.cancel()
        for listener in self.listeners:
            listener.close()
        if self.link is not None:
            self.link.close()

    # -- attempts ------------------------------------------------------------------------------------------

    async def _attempt_as_initiator(self, number: int) -> None:
        self.attempt_number = number
        answer: asyncio.Future[DirectSignal] = asyncio.get_running_loop().create_future()
        self._answers = {number: answer}
        try:
            listener = await self._listen()
            await self._send(DirectSignal(number, "offer", listener.candidates, self._certificate().der))
            try:
                async with asyncio.timeout(self.options.timeout):
                    peer = await answer
            except TimeoutError:
                listener.close()
                raise UpgradeError(
                    f"the other device did not answer the direct-link offer within {self.options.timeout:g} s"
                ) from None
            except UpgradeError:
                listener.close()
                raise
            await self._race(peer, listener)
        except (UpgradeError, PeerchatError) as exc:
            self._failed(number, exc)
        finally:
            self._answers.pop(number, None)
            self._settle_first()

    async def _attempt_as_answerer(self, offer: DirectSignal) -> None:
        try:
            listener = await self._listen()
            await self._send(DirectSignal(offer.attempt, "answer", listener.candidates, self._certificate().der))
            await self._race(offer, listener)
        except (UpgradeError, PeerchatError) as exc:
            if offer.attempt == self.attempt_number:
                self._failed(offer.attempt, exc)
        finally:
            self._settle_first()

    async def _listen(self) -> Listener:
        listener = Listener()
        self.listeners.append(listener)
        del self.listeners[:-8]  # keep a few, for tests and diagnostics
        addresses = self.options.addresses or await asyncio.to_thread(local_addresses)
        await listener.start(addresses)
        if not listener.candidates:
            raise UpgradeError(f"cannot listen on any of {', '.join(addresses)} for the direct link")
        return listener

    async def _race(self, peer: DirectSignal, listener: Listener) -> None:
        wire = await race(
            initiator=self.host.is_initiator,
            own=self._certificate(),
            peer_cert=peer.cert,
            peer_candidates=peer.candidates,
            listener=listener,
            timeout=self.options.timeout,
        )
        if self._closed or self.host.is_closed:
            wire.abort()
            raise UpgradeError("the connection closed during the direct-link attempt")
        old = self.link
        if old is not None and not old.is_closed:
            self.host.detach_link(old, "a newer direct link replaced this one")
            old.close()
        link = DirectLink(wire, self.host, idle_timeout=self.options.idle_timeout)
        self.link = link
        peername = (wire.transport.get_extra_info("peername") if wire.transport else None) or ("?", 0)
        log.info("direct link open with %s:%s", peername[0], peername[1])
        self.host.attach_link(link, f"direct link opened ({peername[0]})")

    def _failed(self, number: int, exc: BaseException) -> None:
        reason = str(exc)
        self.failures.append(reason)
        log.info("direct-link attempt %d failed: %s", number, reason)
        if not self._closed:
            self.host.report_upgrade_failure(UpgradeError(f"direct link: {reason}"))

    def _certificate(self) -> SessionCertificate:
        if self.certificate is None:
            self.certificate = session_certificate()
        return self.certificate

    async def _send(self, signal: DirectSignal) -> None:
        try:
            await self.host.send_signal(signal.to_json())
        except PeerchatError as exc:
            raise UpgradeError(f"could not signal the other device: {exc}") from exc

    def _settle_first(self) -> None:
        if not self._first.done():
            self._first.set_result(None)

    def _spawn(self, coroutine: Any) -> None:
        spawn(self._tasks, coroutine)
