"""Device identity, without I/O: an Ed25519 key pair per device, its short fingerprint, the comparison code two
devices show to verify each other, and the trust decision for a key a device presents.

A device's public key travels as standard base64 of its 32 raw bytes (44 characters, :func:`key_text`): in its
presence record and inside the session handshake (:mod:`core.protocol.handshake`). The private key never leaves
the key store (:mod:`core.trust`).

Trust, like SSH's known hosts: the first accepted session with a device remembers its key ("trusted"); a person
who compared the comparison code on both screens marks it "verified"; a device that later presents another key
under the same id is "key-changed" and refused until the person forgets the old key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_BYTES = 32
KEY_TEXT_CHARS = 44
SIGNATURE_BYTES = 64

Trust = Literal["verified", "trusted", "new", "key-changed"]
"""What this device knows about another device's key: compared by a person, remembered from an earlier session,
never seen, or different from the one remembered."""


class DeviceKey:
    """This device's Ed25519 key pair (the private half stays in memory and in the key store)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> DeviceKey:
        """Raises ValueError for anything but 32 raw bytes."""
        if len(raw) != KEY_BYTES:
            raise ValueError(f"a device's private key is {KEY_BYTES} bytes, not {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_text(self) -> str:
        return key_text(self.public)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def key_text(public: bytes) -> str:
    """A public key as stored and published: standard base64 of its 32 bytes."""
    return base64.b64encode(public).decode("ascii")


def parse_key_text(text: object) -> bytes:
    """The 32 bytes of a published public key.

    Raises:
        ValueError: not a string of 44 base64 characters holding 32 bytes.
    """
    if not isinstance(text, str) or len(text) != KEY_TEXT_CHARS:
        raise ValueError(f"a device key is {KEY_TEXT_CHARS} base64 characters, not {str(text)[:60]!r}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a device key is base64 text: {exc}") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a device key holds {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _raw_key(key: bytes | str) -> bytes:
    return parse_key_text(key) if isinstance(key, str) else key


def fingerprint(public: bytes | str) -> str:
    """A short readable name of a key (raw or base64): 80 bits of its SHA-256 in base32, four groups of four
    (``K7QD-2M4X-...``)."""
    public = _raw_key(public)
    digest = hashlib.sha256(b"peerchat-fingerprint-v1\0" + public).digest()[:10]
    text = base64.b32encode(digest).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def comparison_code(key_a: bytes | str, key_b: bytes | str) -> str:
    """The code both devices show to verify each other: 12 digits in three groups, the same whichever device
    computes it (the two keys are taken in sorted order). A person who sees the same code on both screens knows
    each device has the other's real key."""
    first, second = sorted((_raw_key(key_a), _raw_key(key_b)))
    digest = hashlib.sha256(b"peerchat-comparison-v1\0" + first + second).digest()
    number = int.from_bytes(digest[:8], "big") % 10**12
    text = f"{number:012d}"
    return " ".join(text[i : i + 4] for i in range(0, 12, 4))


@dataclass(frozen=True)
class KnownDevice:
    """What this device remembers of another one: its key (base64), whether a person verified it, its label."""

    device_id: str
    key: str
    verified: bool = False
    label: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def trust_of(known: KnownDevice | None, key: str | None) -> Trust:
    """The trust of a device presenting ``key``, given what is remembered of it (``known``, or None).

    A device that presents no key at all (an old record) is "new" unless one is remembered, then "key-changed".
    """
    if known is None:
        return "new"
    if key != known.key:
        return "key-changed"
    return "verified" if known.verified else "trusted"
