"""The session handshake, without I/O: an authenticated key exchange bound to both devices' identity keys.

Three messages, each a base64 string the relay carries (the negotiation value's ``hello``, then the ``handshake``
value of each side's inbox; see ``docs/relay-layout.md``). The hello starts with the session protocol's version and
a colon (``2:``), in the clear, so that a device answering a hello of another version can say which side to update
(:class:`~core.errors.PeerVersionError`, and the refusal ``outdated`` or ``too-new``) instead of failing to read it;
the version is also in the transcript every signature covers::

    hello     initiator -> responder   I || eI                          (identity key, fresh X25519 key)
    answer    responder -> initiator   R || eR || sign_R("responder" || th)
    confirm   initiator -> responder   sign_I("initiator" || th)

``th`` is the SHA-256 of the protocol name, the user id, the session id, both device ids, both identity keys and
both ephemeral keys, each length-prefixed: every signature covers both identities, both fresh keys and the session,
so neither message can be replayed into another session or attributed to another device. Each side derives the
session keys from X25519(eI, eR) with HKDF-SHA256 (salt ``th``): one ChaCha20-Poly1305 key per direction, new for
every session, and forgotten with it (forward secrecy: a stolen identity key does not open recorded sessions).

Who the other device *is* (its identity key against the remembered one) is the caller's decision
(:func:`core.protocol.identity.trust_of`); this module only proves that the other side holds that key.
A responder that refuses before answering writes ``refused:<reason>`` instead of an answer (:func:`refusal`); it
cannot be authenticated (no keys exist yet), so it only ever stops a session, never opens one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import HandshakeError, PeerVersionError
from .identity import KEY_BYTES, SIGNATURE_BYTES, DeviceKey, verify

VERSION = 2  # 1: a hello without a version (sealed frames without compression; file transfers hashed first)
PROTOCOL = b"peerchat relay session v%d" % VERSION
REFUSED = "refused:"
# outdated: the requesting device's version is older than the responder's; too-new: it is newer
REFUSAL_REASONS = ("key-changed", "unverified", "busy", "outdated", "too-new")


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one session, one per direction (32 bytes each), and the transcript hash they came from."""

    send: bytes
    receive: bytes
    transcript: bytes


@dataclass(frozen=True)
class _Ids:
    user_id: str
    session_id: str
    initiator_id: str
    responder_id: str


def _decode(text: object, size: int, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 400:
        raise HandshakeError(f"The {what} is not a handshake message.")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HandshakeError(f"The {what} is not base64.") from None
    if len(raw) != size:
        raise HandshakeError(f"The {what} holds {len(raw)} bytes, not {size}.")
    return raw


def _versioned(hello: object) -> object:
    """The hello without its version prefix.

    Raises:
        PeerVersionError: the hello is of another version (one without a prefix is version 1).
    """
    if not isinstance(hello, str):
        return hello
    head, colon, rest = hello.partition(":")
    if not colon:
        _decode(hello, KEY_BYTES * 2, "session request's hello")  # garbage is malformed, not an old version
        version = 1
    elif head.isdigit() and len(head) <= 4:
        version = int(head)
    else:
        raise HandshakeError("The session request's hello has no valid version.")
    if version < VERSION:
        raise PeerVersionError(f"The requesting device runs an older peerchat (session protocol {version}, this "
                               f"device speaks {VERSION}): update peerchat on it.",
                               peer_version=version, own_version=VERSION)
    if version > VERSION:
        raise PeerVersionError(f"The requesting device runs a newer peerchat (session protocol {version}, this "
                               f"device speaks {VERSION}): update peerchat on this device.",
                               peer_version=version, own_version=VERSION)
    return rest


def version_refusal(error: PeerVersionError) -> str:
    """The refusal a responder writes for a hello of another version."""
    return refusal("outdated" if error.peer_version < error.own_version else "too-new")


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _transcript(ids: _Ids, i_key: bytes, e_i: bytes, r_key: bytes, e_r: bytes) -> bytes:
    parts = [PROTOCOL, *(s.encode("utf-8") for s in (ids.user_id, ids.session_id, ids.initiator_id, ids.responder_id))]
    parts += [i_key, e_i, r_key, e_r]
    return hashlib.sha256(b"".join(_field(p) for p in parts)).digest()


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(private: X25519PrivateKey, peer_public: bytes, transcript: bytes, *, initiator: bool) -> SessionKeys:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # an all-zero result: a small-order point from a hostile peer
        raise HandshakeError(f"The other side's session key is unusable ({exc}).") from None
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript, info=PROTOCOL + b" keys").derive(shared)
    i2r, r2i = okm[:32], okm[32:]
    return SessionKeys(i2r, r2i, transcript) if initiator else SessionKeys(r2i, i2r, transcript)


def refusal(reason: str) -> str:
    """What a responder writes instead of an answer when it refuses before any key exists."""
    if reason not in REFUSAL_REASONS:
        raise ValueError(f"unknown refusal reason {reason!r}")
    return REFUSED + reason


class InitiatorHandshake:
    """The initiator's side: :meth:`hello` to send, then :meth:`on_answer` gives the confirmation and the keys."""

    def __init__(self, identity: DeviceKey, *, user_id: str, session_id: str, own_id: str, peer_id: str) -> None:
        self._identity = identity
        self._ids = _Ids(user_id, session_id, own_id, peer_id)
        self._ephemeral = X25519PrivateKey.generate()
        self._e_i = _raw(self._ephemeral.public_key())
        self.peer_key: bytes | None = None

    def hello(self) -> str:
        return f"{VERSION}:" + base64.b64encode(self._identity.public + self._e_i).decode("ascii")

    @staticmethod
    def refused(text: object) -> str | None:
        """The responder's refusal reason when ``text`` is a refusal, else None."""
        if isinstance(text, str) and text.startswith(REFUSED):
            reason = text[len(REFUSED) :]
            return reason if reason in REFUSAL_REASONS else "refused"
        return None

    def on_answer(self, text: object) -> tuple[str, SessionKeys]:
        """Check the responder's answer; returns the confirmation to send and the session keys. The responder's
        identity key is :attr:`peer_key` afterwards (the caller decides whether to trust it).

        Raises:
            HandshakeError: malformed, or its signature does not hold for the key it names.
        """
        raw = _decode(text, KEY_BYTES * 2 + SIGNATURE_BYTES, "answer to the session request")
        r_key, e_r, signature = raw[:KEY_BYTES], raw[KEY_BYTES : 2 * KEY_BYTES], raw[2 * KEY_BYTES :]
        th = _transcript(self._ids, self._identity.public, self._e_i, r_key, e_r)
        if not verify(r_key, signature, b"responder" + th):
            raise HandshakeError("The answer to the session request is not signed by the key it names.")
        keys = _derive(self._ephemeral, e_r, th, initiator=True)
        self.peer_key = r_key
        confirm = base64.b64encode(self._identity.sign(b"initiator" + th)).decode("ascii")
        return confirm, keys


class ResponderHandshake:
    """The responder's side: made from the initiator's ``hello`` (raises :class:`HandshakeError` if malformed);
    :attr:`peer_key` is the initiator's identity key, :meth:`answer` the reply, :meth:`on_confirm` the keys."""

    def __init__(
        self, identity: DeviceKey, hello: object, *, user_id: str, session_id: str, own_id: str, peer_id: str
    ) -> None:
        raw = _decode(_versioned(hello), KEY_BYTES * 2, "session request's hello")
        self.peer_key = raw[:KEY_BYTES]
        self._e_i = raw[KEY_BYTES:]
        self._identity = identity
        self._ephemeral = X25519PrivateKey.generate()
        e_r = _raw(self._ephemeral.public_key())
        self._th = _transcript(_Ids(user_id, session_id, peer_id, own_id), self.peer_key, self._e_i, identity.public, e_r)
        self._e_r = e_r

    def answer(self) -> str:
        signature = self._identity.sign(b"responder" + self._th)
        return base64.b64encode(self._identity.public + self._e_r + signature).decode("ascii")

    def on_confirm(self, text: object) -> SessionKeys:
        """Check the initiator's confirmation; returns the session keys.

        Raises:
            HandshakeError: malformed, or not signed by the initiator's identity key over this handshake.
        """
        signature = _decode(text, SIGNATURE_BYTES, "session confirmation")
        if not verify(self.peer_key, signature, b"initiator" + self._th):
            raise HandshakeError("The session confirmation is not signed by the requesting device's key.")
        return _derive(self._ephemeral, self._e_i, self._th, initiator=False)
