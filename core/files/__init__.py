"""File and folder transfers over ANY :class:`~core.peer.PeerConnection` (a feature, not a link).

``FileTransfers(connection, download_dir=...)`` sends files and folders in chunks, verified by SHA-256, resumable
after a dropped link or in a new session; the other side's ``incoming_transfer`` event carries an
:class:`IncomingOffer`. The wire format and the transfer state machines (no I/O) are in :mod:`core.files.protocol`;
the I/O and the disk in :mod:`core.files.transfers`. This package imports only core's vocabulary (``peer``,
``events``, ``options``, ``errors``), never a concrete connection: what it needs of one is declared on
``PeerConnection`` (``max_bytes_message``, ``keeps_call_order``).
"""

from .protocol import FileEntry
from .transfers import (
    FileTransfers,
    IncomingOffer,
    IncomingTransfer,
    Transfer,
    TransferDirection,
    TransferFailed,
    TransferFileDone,
    TransferFinished,
    TransferProgress,
    TransferState,
)

__all__ = [
    "FileEntry",
    "FileTransfers",
    "IncomingOffer",
    "IncomingTransfer",
    "Transfer",
    "TransferDirection",
    "TransferFailed",
    "TransferFileDone",
    "TransferFinished",
    "TransferProgress",
    "TransferState",
]
