"""The manager's default upgrade: the direct link and WebRTC tried together on every connection, in the order
:class:`core.protocol.linkorder.LinkOrder` decides (direct whenever it opens, WebRTC when only it opens, the relay
otherwise; after a break, the relay at once, then direct again, then WebRTC).

A connection has one signal handler and one attached link; two upgrades share them here. Each upgrade sees its own
:class:`core.link.LinkHost` (a slot): its signals are the connection's signals that carry its key (``"direct"`` or
``"webrtc"``), and what it attaches, detaches or reports goes to the :class:`LinkOrder` first, whose actions this
module carries out on the connection. Like the manager, it is the only place that knows both link packages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

from . import events as ev
from ._tasks import emit_safely, spawn
from .direct.upgrade import DirectOptions, DirectUpgrade
from .errors import ProtocolError, UpgradeError
from .link import Link, LinkHost, Upgrader
from .options import ManagerOptions
from .peer import PeerInfo
from .protocol.linkorder import Attach, Detach, LinkKind, LinkOrder, Report, Retry
from .webrtc.upgrade import webrtc_upgrader

__all__ = ["ConnectionLinks", "LinkUpgrader", "link_upgrader"]

log = logging.getLogger(__name__)

KINDS: tuple[LinkKind, ...] = ("direct", "webrtc")
MAX_EARLY_SIGNALS = 64


def link_upgrader(options: ManagerOptions, **webrtc_link_overrides: Any) -> LinkUpgrader:
    """The manager's default upgrader for ``options``: direct (``options.direct``, ``addresses``,
    ``direct_timeout``) and WebRTC (:func:`core.webrtc.upgrade.webrtc_upgrader` with ``webrtc_link_overrides``)."""
    return LinkUpgrader(options, webrtc=webrtc_upgrader(options, **webrtc_link_overrides))


class LinkUpgrader:
    """``await upgrader(connection)``: starts both links on a connection and returns when the direct link opened,
    or when both first attempts ended. Raises :class:`~core.errors.UpgradeError` when neither opened (the relay
    keeps working, and the links keep being retried).

    Args:
        options: the manager's options (the direct link's settings, the retry interval).
        webrtc: the WebRTC upgrader (default: ``webrtc_upgrader(options)``).
        direct: the direct link's options (default: from ``options``).
    """

    def __init__(self, options: ManagerOptions, *, webrtc: Upgrader | None = None,
                 direct: DirectOptions | None = None) -> None:
        self.options = options
        self.webrtc = webrtc if webrtc is not None else webrtc_upgrader(options)
        self.direct = direct or DirectOptions.from_manager_options(options)
        # Called with each new ConnectionLinks before it starts (diagnostics and tests).
        self.on_upgrade: Callable[[ConnectionLinks], None] | None = None

    async def __call__(self, connection: LinkHost) -> None:
        links = ConnectionLinks(connection, self.webrtc, self.direct, retry_interval=self.options.reupgrade_interval)
        if self.on_upgrade is not None:
            self.on_upgrade(links)
        await links.start()


class _Slot:
    """The :class:`LinkHost` one upgrade sees: the connection, with attach/detach/report routed to the order."""

    def __init__(self, owner: ConnectionLinks, kind: LinkKind) -> None:
        self._owner = owner
        self.kind = kind
        self.handler: Callable[[dict[str, Any]], Any] | None = None

    @property
    def events(self) -> AsyncIOEventEmitter:
        return self._owner.host.events

    @property
    def is_initiator(self) -> bool:
        return self._owner.host.is_initiator

    @property
    def peer(self) -> PeerInfo:
        return self._owner.host.peer

    @property
    def session_id(self) -> str:
        return self._owner.host.session_id

    @property
    def is_closed(self) -> bool:
        return self._owner.host.is_closed

    def attach_link(self, link: Link, reason: str = "upgraded") -> None:
        self._owner.opened(self.kind, link, reason)

    def detach_link(self, link: Link, reason: str = "link failed") -> None:
        self._owner.lost(self.kind, link, reason)

    def receive_frame(self, frame: object) -> None:
        self._owner.host.receive_frame(frame)

    def receive_frames(self, frames: list[Any]) -> None:
        self._owner.host.receive_frames(frames)

    async def send_signal(self, signal: dict[str, Any]) -> None:
        await self._owner.host.send_signal(signal)

    def set_signal_handler(self, handler: Callable[[dict[str, Any]], Any] | None) -> None:
        self.handler = handler
        self._owner.replay(self)

    def report_upgrade_failure(self, error: BaseException) -> None:
        self._owner.failed(self.kind, str(error) or type(error).__name__, error)


class ConnectionLinks:
    """The links of one connection for its whole life (see the module docstring)."""

    def __init__(self, host: LinkHost, webrtc: Upgrader, direct: DirectOptions, *,
                 retry_interval: float | None = 15.0) -> None:
        self.host = host
        self.order = LinkOrder(initiator=host.is_initiator, direct=direct.enabled, retry_interval=retry_interval)
        self.slots = {kind: _Slot(self, kind) for kind in KINDS}
        self.links: dict[LinkKind, Link] = {}
        self.direct = DirectUpgrade(self.slots["direct"], direct)
        self.direct.on_declined = lambda: self.order.declined("direct")
        self._webrtc = webrtc
        self._early: list[dict[str, Any]] = []
        self._starting = True
        self._start_failures: list[str] = []
        self._errors: dict[LinkKind, BaseException] = {}
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.host.events.on(ev.CLOSED, self._on_closed)
        self.host.set_signal_handler(self._on_signal)
        direct = asyncio.ensure_future(self.direct.start())
        webrtc = asyncio.ensure_future(self._start_webrtc())
        self._tasks.update((direct, webrtc))
        try:
            # Until direct carries the data, or both first attempts ended; each attempt is bounded by its time-out.
            while self.order.attached != "direct" and not (direct.done() and webrtc.done()):
                self._changed.clear()
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({direct, webrtc, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        finally:
            self._starting = False
        if self.order.attached is None:
            webrtc_error = self._errors.get("webrtc")
            if isinstance(webrtc_error, UpgradeError) and type(webrtc_error) is not UpgradeError:
                # A specific WebRTC failure (no route through the NATs) says what would help; keep it as it is.
                raise webrtc_error
            raise UpgradeError("; ".join(self._start_failures) or "no link opened")

    async def _start_webrtc(self) -> None:
        try:
            await self._webrtc(self.slots["webrtc"])
        except Exception as exc:  # noqa: BLE001 - any failure of the first try leaves the relay working
            self.failed("webrtc", str(exc) or type(exc).__name__, exc)

    # -- what the upgrades report, through their slots -----------------------------------------------------

    def opened(self, kind: LinkKind, link: Link, reason: str) -> None:
        self.links[kind] = link
        self._run(self.order.opened(kind), reason)

    def lost(self, kind: LinkKind, link: Link, reason: str) -> None:
        if self.links.get(kind) is not link:
            link.close()
            return
        self._run(self.order.lost(kind, reason), reason)
        if self.order.attached != kind:
            del self.links[kind]
            link.close()

    def failed(self, kind: LinkKind, reason: str, error: BaseException | None = None) -> None:
        if error is not None:
            self._errors[kind] = error
        self._run(self.order.failed(kind, reason), reason)

    # -- signals -------------------------------------------------------------------------------------------

    def _on_signal(self, signal: dict[str, Any]) -> None:
        kind = next((k for k in KINDS if k in signal), None)
        if kind is None:
            error = ProtocolError(f"a signal for no known link: {str(signal)[:100]}")
            log.warning("%s", error)
            emit_safely(self.host.events, ev.PROTOCOL_ERROR, ev.ProtocolErrorEvent(error))
            return
        if kind == "direct":
            self.direct.handle_signal(signal)
            return
        handler = self.slots[kind].handler
        if handler is None:
            if len(self._early) < MAX_EARLY_SIGNALS:
                self._early.append(signal)
            return
        self._call(handler, signal)

    def replay(self, slot: _Slot) -> None:
        if slot.handler is None:
            return
        mine = [s for s in self._early if slot.kind in s]
        self._early = [s for s in self._early if slot.kind not in s]
        for signal in mine:
            self._call(slot.handler, signal)

    def _call(self, handler: Callable[[dict[str, Any]], Any], signal: dict[str, Any]) -> None:
        try:
            result = handler(signal)
        except Exception:  # noqa: BLE001
            log.exception("signal handler failed")
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    # -- carrying out the order's actions ------------------------------------------------------------------

    def _run(self, actions: list[Any], reason: str) -> None:
        for action in actions:
            if isinstance(action, Attach):
                link = self.links.get(action.kind)
                if link is not None and not self.host.is_closed:
                    self.host.attach_link(link, action.reason if action.reason != "upgraded" else reason)
            elif isinstance(action, Detach):
                link = self.links.get(action.kind)
                if link is not None and not self.host.is_closed:
                    self.host.detach_link(link, action.reason)
            elif isinstance(action, Retry):
                self._spawn(self._retry(action.delay))
            elif isinstance(action, Report):
                message = f"{action.kind}: {action.reason}" if not action.reason.startswith(action.kind) \
                    else action.reason
                if self._starting:
                    self._start_failures.append(message)
                elif not self.host.is_closed:
                    error = self._errors.get(action.kind)
                    specific = isinstance(error, UpgradeError) and type(error) is not UpgradeError
                    self.host.report_upgrade_failure(error if specific else UpgradeError(message))
        self._changed.set()

    async def _retry(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.host.is_closed:
            await self.direct.attempt()

    def _on_closed(self, _event: object) -> None:
        self.order.close()
        self.direct.close()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coroutine: Any) -> None:
        spawn(self._tasks, coroutine)
