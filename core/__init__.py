"""peerchat's reusable peer-to-peer connection library (no Textual, no peerchat imports).

Everything a consumer needs is importable from here::

    from core import FirebasePeerConnectionManager, ManagerOptions, PeerInfo, PeerOfflineError, ...

A manager upgrades each connection to WebRTC by default (``ManagerOptions.webrtc``); ``webrtc_upgrader(options,
**link_options)`` makes the upgrader to pass as ``upgrader=`` when the link needs other options.

Files travel with ``FileTransfers(connection, download_dir=...)`` on a connection: ``send_files(paths)`` returns a
``Transfer``; the other side's ``incoming_transfer`` event carries an ``IncomingOffer`` to accept or decline.

The modules themselves (``core.relay``, ``core.session``, ...) are internal; event names are the constants in
``core.events`` (``"incoming_connection"``, ``"data"``, ...), their payloads the classes exported here.
"""

from .errors import (
    ClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectionDeclinedError,
    DiskError,
    InsufficientSpaceError,
    IntegrityError,
    MessageTooLargeError,
    PeerchatError,
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
    BinaryData,
    ConnectionClosed,
    Data,
    IncomingConnection,
    IncomingTransfer,
    Latency,
    LinkChanged,
    PeersChanged,
    ProtocolErrorEvent,
    Recovered,
    RelayRestored,
    RelayUnavailable,
    Slow,
    TransferFailed,
    TransferFileDone,
    TransferFinished,
    TransferProgress,
    UpgradeFailed,
)
from .files import FileTransfers, IncomingOffer, Transfer, TransferState
from .options import IceServer, ManagerOptions
from .peer import DeviceStatus, PeerConnection, PeerConnectionManager, PeerInfo
from .relay import FirebasePeerConnectionManager
from .transfer import FileEntry
from .upgrade import WebRTCUpgrader, webrtc_upgrader

__all__ = [
    # interfaces and the Firebase implementation
    "DeviceStatus",
    "FirebasePeerConnectionManager",
    "IceServer",
    "ManagerOptions",
    "PeerConnection",
    "PeerConnectionManager",
    "PeerInfo",
    # file transfers over any PeerConnection
    "FileEntry",
    "FileTransfers",
    "IncomingOffer",
    "Transfer",
    "TransferState",
    # the WebRTC upgrade (the manager's default; make one to change link options or to observe upgrades)
    "WebRTCUpgrader",
    "webrtc_upgrader",
    # event payloads
    "BinaryData",
    "ConnectionClosed",
    "Data",
    "IncomingConnection",
    "IncomingTransfer",
    "Latency",
    "LinkChanged",
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
    "InsufficientSpaceError",
    "IntegrityError",
    "MessageTooLargeError",
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
