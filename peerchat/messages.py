"""App-wide Textual messages (dataclasses): what workers and core's event handlers report to the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from core import DeviceStatus, PeerConnectionManager, PeerInfo

from .backend import SessionLink


@dataclass
class BackendReady(Message):
    """The manager is started and this device is online."""

    manager: PeerConnectionManager
    relay: str


@dataclass
class BackendFailed(Message):
    """Starting the relay or the manager failed; the app cannot work until it is fixed, or, with ``retrying``
    (seconds), until the relay answers (the app tries again by itself; ``first`` is the first failure)."""

    error: BaseException
    retrying: float | None = None
    first: bool = True


@dataclass
class RelayStatus(Message):
    """News about the relay itself (the embedded emulator went away, was restarted, ...)."""

    text: str
    ok: bool


@dataclass
class RelayHealthChanged(Message):
    """The manager says the relay stopped or started answering: core's ``RelayUnavailable`` or ``RelayRestored``."""

    event: Any


@dataclass
class PeersChanged(Message):
    """The set of this user's online devices changed; ``devices`` lists every known one, online or not, with its
    last-seen time (empty when the manager does not keep them)."""

    peers: tuple[PeerInfo, ...]
    devices: tuple[DeviceStatus, ...] = ()


@dataclass
class AcceptRequested(Message):
    """Core asks whether to accept a session (``request``); the answer goes into ``answer``."""

    request: Any
    code: str
    answer: asyncio.Future[Any]


@dataclass
class KeyChanged(Message):
    """A device showed another key than the one remembered for it; its session was refused."""

    event: Any


@dataclass
class AcceptWithdrawn(Message):
    """The device behind ``request`` stopped waiting: its dialog goes away."""

    request: Any


@dataclass
class IncomingConnection(Message):
    """Another device opened a connection to this one; the person accepts or declines it.

    ``link.tap`` has listened to the connection since it arrived, so nothing sent while the dialog is open is lost.
    """

    link: SessionLink


@dataclass
class SessionOpened(Message):
    """A connection this device asked for is open (``link.tap`` has listened to it since it opened)."""

    link: SessionLink


@dataclass
class ActionFailed(Message):
    """A worker's operation failed; ``what`` says what was being done, in words ("Connecting to laptop")."""

    what: str
    error: BaseException
