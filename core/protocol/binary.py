"""Binary frame data that keeps its bytes, so that links carrying raw bytes never convert it twice. No I/O, and no
imports from the rest of ``core`` (the reliable stream and the link codecs both use it).

- :class:`Base64Text`: base64 text (a ``str``, which the relay stores) that remembers the bytes it encodes.
- :class:`RawBinary`: data that arrived as raw bytes, counted as its base64 length; the text is made only if asked.

:func:`core.protocol.linkframes.raw_of` reads the bytes of either, or decodes (and checks) plain text.
"""

from __future__ import annotations

import base64

__all__ = ["Base64Text", "RawBinary"]


class Base64Text(str):
    """Base64 text that remembers the bytes it encodes (``raw``), so that a binary frame going from bytes to a link
    that carries raw bytes, or from such a link to the application, is never decoded again: CPython's base64
    decoding costs several times its encoding, and was the largest single cost of a file transfer on a fast link.
    It is a ``str`` in every other respect (the relay stores it as one)."""

    __slots__ = ("raw",)
    raw: bytes

    @classmethod
    def of(cls, raw: bytes) -> Base64Text:
        text = cls(base64.b64encode(raw).decode("ascii"))
        text.raw = raw
        return text


class RawBinary:
    """A received binary frame's data as the raw bytes a link carried (``raw``): the stream counts it as its base64
    length and joins fragments by their bytes, and the connection hands the bytes to the application, so nothing
    encodes it to base64 unless something asks for the text (``str()``, comparison with a string)."""

    __slots__ = ("raw", "_text")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._text: str | None = None

    def __len__(self) -> int:
        return 4 * ((len(self.raw) + 2) // 3)

    def __str__(self) -> str:
        if self._text is None:
            self._text = base64.b64encode(self.raw).decode("ascii")
        return self._text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RawBinary):
            return self.raw == other.raw
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"RawBinary({len(self.raw)} bytes)"
