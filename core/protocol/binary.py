"""Binary frame data on its way to the relay: base64 text that keeps its bytes. No I/O, and no imports from the rest
of ``core``.

The reliable stream and the links other than the relay hold binary data as raw bytes; only the relay stores it as
base64 (:func:`core.protocol.records.frame_to_store`). :class:`Base64Text` is that text, remembering the bytes it
encodes, so that whatever handles the stored frame next (sealing it) can take the bytes without decoding again.
"""

from __future__ import annotations

import base64

__all__ = ["Base64Text"]


class Base64Text(str):
    """Base64 text that remembers the bytes it encodes (``raw``): CPython's base64 decoding costs several times its
    encoding. It is a ``str`` in every other respect (the relay stores it as one)."""

    __slots__ = ("raw",)
    raw: bytes | memoryview

    @classmethod
    def of(cls, raw: bytes | memoryview) -> Base64Text:
        text = cls(base64.b64encode(raw).decode("ascii"))
        text.raw = raw
        return text
