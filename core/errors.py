"""The one error tree of `core`: every failure a consumer can see, each with a message a person can act on.

    PeerchatError
    ├── ClosedError                  using a manager or connection after it was closed
    ├── RelayError                   the Realtime Database (the relay) misbehaved
    │   ├── RelayUnavailableError      it cannot be reached (network down, server gone)
    │   └── PermissionDeniedError      the security rules refused an operation
    ├── ConnectError                 a connection could not be opened
    │   ├── PeerOfflineError           the device is unknown or not online
    │   ├── ConnectionDeclinedError    the other device refused the connection
    │   ├── PeerKeyChangedError        the device shows another key than the one remembered for it
    │   └── PeerNotVerifiedError       the settings refuse devices not verified with the comparison code
    ├── PeerTimeoutError             something did not happen within its time-out
    ├── MessageTooLargeError         a message is over the size the relay accepts
    ├── ConnectionClosedError        the connection closed while an operation waited on it
    ├── ProtocolError                malformed or unexpected data from the peer or the relay
    │   └── HandshakeError             the session's key exchange failed (forged or broken messages)
    ├── KeyStoreError                the device's key store cannot be read or written
    ├── UpgradeError                 a direct-link or WebRTC upgrade failed (the relay link keeps working)
    │   └── NoRouteError               no network path between the devices (NAT traversal failed)
    └── TransferError                a file transfer failed
        ├── TransferDeclinedError      the receiver declined the offer
        ├── TransferCancelledError     one side cancelled
        ├── IntegrityError             the received file's SHA-256 did not match
        ├── InsufficientSpaceError     not enough free disk space for the offer
        ├── DiskError                  reading or writing a file failed
        └── TransferInterruptedError   the connection closed mid-transfer (send again to resume)

Third-party errors (firebase-admin, requests, aiortc, OSError) are mapped to these at the boundary, to the most
specific class, with ``raise X(...) from exc``. ``str(error)`` is written for a person and may be shown as is.
"""

from __future__ import annotations


class PeerchatError(Exception):
    """Something went wrong in peerchat's connection library."""


class ClosedError(PeerchatError):
    """This object is closed: create a new one (or start it again) before using it."""


class RelayError(PeerchatError):
    """The relay (the Firebase Realtime Database) did not do what was asked."""


class RelayUnavailableError(RelayError):
    """The relay cannot be reached. Check the network connection and the database URL, then try again."""


class PermissionDeniedError(RelayError):
    """The database's security rules refused this operation. Check the user id and the deployed rules."""


class ConnectError(PeerchatError):
    """The connection to the other device could not be opened."""


class PeerOfflineError(ConnectError):
    """The device is not online (or not known). Start peerchat on it and try again."""


class ConnectionDeclinedError(ConnectError):
    """The other device declined the connection.

    Attributes:
        label: the label of the device that declined ("desktop"), or None.
        reason: the reason it gave, or None.
    """

    def __init__(self, message: str, *, label: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.label = label
        self.reason = reason


class PeerKeyChangedError(ConnectError):
    """This device shows another identity key than the one remembered for it, so the session was refused before
    any data moved. It may have been reinstalled; or someone who can write to the database pretends to be it.
    Check on the device itself (its fingerprint is in its device list), then forget the old key
    (``peerchat devices forget ID``) and connect again.

    Attributes:
        device_id: the device's id.
        label: its label.
        remembered: the fingerprint of the key remembered for it.
        presented: the fingerprint of the key it showed now.
    """

    def __init__(
        self, message: str, *, device_id: str = "", label: str = "", remembered: str = "", presented: str = ""
    ) -> None:
        super().__init__(message)
        self.device_id = device_id
        self.label = label
        self.remembered = remembered
        self.presented = presented


class PeerNotVerifiedError(ConnectError):
    """The settings allow sessions only with verified devices, and this one is not verified. Compare the code both
    devices show (``peerchat devices verify ID``) and confirm it, then connect again."""

    def __init__(self, message: str, *, device_id: str = "", label: str = "") -> None:
        super().__init__(message)
        self.device_id = device_id
        self.label = label


class PeerTimeoutError(PeerchatError):
    """Something took longer than its time-out.

    Attributes:
        what: what was being waited for, in words ("acknowledgement of message 12").
        seconds: the time-out that expired.
    """

    def __init__(self, message: str, *, what: str = "", seconds: float | None = None) -> None:
        super().__init__(message)
        self.what = what
        self.seconds = seconds


class MessageTooLargeError(PeerchatError):
    """The message is larger than the relay accepts. Split it, or send it as a file."""

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ConnectionClosedError(PeerchatError):
    """The connection is closed: reconnect to the device to continue."""


class ProtocolError(PeerchatError):
    """Malformed or unexpected data arrived from the peer or the relay; it was ignored."""


class HandshakeError(ProtocolError):
    """The key exchange that opens a session failed: a message was malformed or not signed by the device it names.
    The session did not open. If it happens again, someone may be tampering with the database."""


class PeerVersionError(HandshakeError):
    """The other device speaks another version of peerchat's session protocol, so no session can open between the
    two. The message says which device runs the older peerchat: update it."""

    def __init__(self, message: str, *, peer_version: int, own_version: int) -> None:
        super().__init__(message)
        self.peer_version = peer_version
        self.own_version = own_version


class KeyStoreError(PeerchatError):
    """This device's key store (its identity key and the devices it trusts) cannot be read or written; the message
    names the file and what to do. Nothing was overwritten."""


class UpgradeError(PeerchatError):
    """The direct WebRTC link could not be opened; messages keep flowing through the relay."""


class NoRouteError(UpgradeError):
    """No direct network path to the other device was found, so the relay carries the data. Behind home NATs a
    STUN server finds one; behind a strict (symmetric) NAT or a firewall it takes a TURN server.

    ``missing`` says what would most likely help: ``"stun"`` (no device knew a public address: add a STUN server),
    ``"turn"`` (public addresses were tried and failed: add a TURN server), or None (a TURN server was tried too:
    check that UDP or TCP to it is allowed, and its credentials).
    """

    def __init__(self, message: str, *, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing


class TransferError(PeerchatError):
    """A file transfer failed."""


class TransferDeclinedError(TransferError):
    """The other device declined the files."""


class TransferCancelledError(TransferError):
    """The transfer was cancelled."""


class IntegrityError(TransferError):
    """The received file did not match the sender's SHA-256; the partial data was deleted. Send it again."""


class InsufficientSpaceError(TransferError):
    """There is not enough free disk space for these files. Free some space or choose another folder."""


class DiskError(TransferError):
    """Reading or writing a file failed (see the reason). Check the path, permissions and free space."""


class TransferInterruptedError(TransferError):
    """The connection closed during the transfer. Send the files again: it continues where it stopped."""
