"""A session's certificate and the TLS 1.3 contexts that pin the other side's: the security of the direct link.

Each session makes its own key and self-signed certificate (:func:`session_certificate`); the other side learns it
only through the session's signalling. :func:`server_context` and :func:`client_context` require TLS 1.3 and a
certificate from the peer, and trust exactly the peer's certificate: a handshake with anyone else fails before any
data is read.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..protocol.direct import fingerprint

__all__ = ["SessionCertificate", "client_context", "server_context", "session_certificate"]


@dataclass(frozen=True)
class SessionCertificate:
    """A self-signed certificate (``der``) and its private key (``key_pem``, never sent anywhere)."""

    der: bytes
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.der)


def session_certificate(days: int = 2) -> SessionCertificate:
    """A fresh P-256 key and a self-signed certificate for it, valid from a day ago for ``days`` days (so that a
    peer's clock a little off does not matter)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerchat session")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SessionCertificate(cert.public_bytes(serialization.Encoding.DER), key_pem)


def _context(purpose: int, own: SessionCertificate, peer_der: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # The peer's certificate is the only trust anchor: its fingerprint came through the signalling.
    context.load_verify_locations(cadata=peer_der)
    _load_own(context, own)
    return context


def _load_own(context: ssl.SSLContext, own: SessionCertificate) -> None:
    # The ssl module loads a key only from a file: write both to a private temporary file, load, delete.
    pem = ssl.DER_cert_to_PEM_cert(own.der).encode("ascii") + own.key_pem
    fd, path = tempfile.mkstemp(prefix="peerchat-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


def server_context(own: SessionCertificate, peer_der: bytes) -> ssl.SSLContext:
    """The context of the accepting side: TLS 1.3, its own certificate, a client certificate required and pinned."""
    return _context(ssl.PROTOCOL_TLS_SERVER, own, peer_der)


def client_context(own: SessionCertificate, peer_der: bytes) -> ssl.SSLContext:
    """The context of the dialling side: TLS 1.3, its own certificate, the server's certificate pinned."""
    return _context(ssl.PROTOCOL_TLS_CLIENT, own, peer_der)
