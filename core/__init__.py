"""peerchat's reusable peer-to-peer connection library (no Textual, no peerchat imports).

Everything a consumer needs is importable from here::

    from core import FirebasePeerConnectionManager, ManagerOptions, PeerInfo, PeerOfflineError, ...

A manager upgrades each connection by default: the direct link (TCP with mutual TLS 1.3, ``ManagerOptions.direct``)
and WebRTC (``ManagerOptions.webrtc``) are tried together, and direct wins whenever it opens.
``link_upgrader(options, **webrtc_link_options)`` makes that upgrader to pass as ``upgrader=`` when WebRTC's link
needs other options; ``webrtc_upgrader(options, **link_options)`` makes a WebRTC-only one.

Sessions are end-to-end encrypted and open only when accepted: a manager takes ``accept=`` (asked with a
``ConnectionRequest``) and ``keys=`` (a ``KeyStore``: ``MemoryKeyStore`` by default, ``FileKeyStore`` for apps).

Files travel with ``FileTransfers(connection, download_dir=...)`` on a connection: ``send_files(paths)`` returns a
``Transfer``; the other side's ``incoming_transfer`` event carries an ``IncomingOffer`` to accept or decline.

The modules themselves are internal (``docs/architecture.md`` draws their layers); event names are the constants
in ``core.events`` (``"incoming_connection"``, ``"data"``, ...), their payloads the classes exported here.

Importing ``core`` is cheap: the vocabulary (errors, options, peers, events) loads at once, and the parts that need
firebase-admin, aiortc or the disk load on first use of a name that needs them (``FirebasePeerConnectionManager``,
``webrtc_upgrader``, ``FileTransfers``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


from .errors import (
    ClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectionDeclinedError,
    DiskError,
    HandshakeError,
    PeerVersionError,
    InsufficientSpaceError,
    IntegrityError,
    KeyStoreError,
    MessageTooLargeError,
    NoRouteError,
    PeerchatError,
    PeerKeyChangedError,
    PeerNotVerifiedError,
    PeerOfflineError,
    PeerTimeoutError,
    PermissionDeniedError,
    ProtocolError,
    RelayError,
    RelayUnavailableError,
    TransferCancelledError,
    TransferDeclinedError,
    TransferError,
    TransferInterruptedError,
    UpgradeError,
)
from .events import (
    AwaitingAccept,
    BinaryData,
    ConnectionClosed,
    Data,
    IncomingConnection,
    Latency,
    LinkChanged,
    PeerKeyChanged,
    PeersChanged,
    ProtocolErrorEvent,
    Recovered,
    RelayRestored,
    RelayUnavailable,
    Slow,
    UpgradeFailed,
)
from .options import IceServer, ManagerOptions
from .peer import ConnectionRequest, DeviceStatus, PeerConnection, PeerConnectionManager, PeerInfo, Route, Transport

if TYPE_CHECKING:
    from .files import (
        FileEntry,
        FileTransfers,
        IncomingOffer,
        IncomingTransfer,
        Transfer,
        TransferFailed,
        TransferFileDone,
        TransferFinished,
        TransferProgress,
        TransferState,
    )
    from .links import LinkUpgrader, link_upgrader
    from .manager import FirebasePeerConnectionManager
    from .protocol.identity import KnownDevice, Trust, comparison_code, fingerprint
    from .trust.store import FileKeyStore, KeyStore, MemoryKeyStore
    from .webrtc.upgrade import WebRTCUpgrader, webrtc_upgrader

# Names whose modules load on first use: module -> names.
_LAZY_MODULES = {
    ".manager": ("FirebasePeerConnectionManager",),
    ".links": ("LinkUpgrader", "link_upgrader"),
    ".webrtc.upgrade": ("WebRTCUpgrader", "webrtc_upgrader"),
    ".protocol.identity": ("KnownDevice", "Trust", "comparison_code", "fingerprint"),
    ".trust.store": ("FileKeyStore", "KeyStore", "MemoryKeyStore"),
    ".files": (
        "FileEntry", "FileTransfers", "IncomingOffer", "IncomingTransfer", "Transfer", "TransferFailed",
        "TransferFileDone", "TransferFinished", "TransferProgress", "TransferState",
    ),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    # interfaces and the Firebase implementation
    "ConnectionRequest",
    "DeviceStatus",
    "FirebasePeerConnectionManager",
    "IceServer",
    "ManagerOptions",
    "PeerConnection",
    "PeerConnectionManager",
    "PeerInfo",
    "Route",
    "Transport",
    # device identity and trust
    "FileKeyStore",
    "KeyStore",
    "KnownDevice",
    "MemoryKeyStore",
    "Trust",
    "comparison_code",
    "fingerprint",
    # file transfers over any PeerConnection
    "FileEntry",
    "FileTransfers",
    "IncomingOffer",
    "Transfer",
    "TransferState",
    # the upgrades: direct and WebRTC together (the manager's default), or WebRTC alone; make one to change link
    # options or to observe upgrades
    "LinkUpgrader",
    "link_upgrader",
    "WebRTCUpgrader",
    "webrtc_upgrader",
    # event payloads
    "AwaitingAccept",
    "BinaryData",
    "ConnectionClosed",
    "Data",
    "IncomingConnection",
    "IncomingTransfer",
    "Latency",
    "LinkChanged",
    "PeerKeyChanged",
    "PeersChanged",
    "ProtocolErrorEvent",
    "Recovered",
    "RelayRestored",
    "RelayUnavailable",
    "Slow",
    "TransferFailed",
    "TransferFileDone",
    "TransferFinished",
    "TransferProgress",
    "UpgradeFailed",
    # errors
    "ClosedError",
    "ConnectError",
    "ConnectionClosedError",
    "ConnectionDeclinedError",
    "DiskError",
    "HandshakeError",
    "PeerVersionError",
    "InsufficientSpaceError",
    "IntegrityError",
    "KeyStoreError",
    "MessageTooLargeError",
    "NoRouteError",
    "PeerKeyChangedError",
    "PeerNotVerifiedError",
    "PeerOfflineError",
    "PeerTimeoutError",
    "PeerchatError",
    "PermissionDeniedError",
    "ProtocolError",
    "RelayError",
    "RelayUnavailableError",
    "TransferCancelledError",
    "TransferDeclinedError",
    "TransferError",
    "TransferInterruptedError",
    "UpgradeError",
]
