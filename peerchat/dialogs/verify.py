"""The dialog that verifies another device: both fingerprints and the comparison code both devices show."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Label

from core import PeerInfo

from .answer import AnswerDialog


class VerifyDeviceDialog(AnswerDialog):
    """Shows the comparison code of this device and ``peer``; dismisses True when the person says both devices show
    the same code (then the device is marked verified), False otherwise."""

    HEADING = "Verify a device"

    def __init__(self, peer: PeerInfo, *, own_fingerprint: str, fingerprint: str, code: str) -> None:
        super().__init__()
        self.peer = peer
        self.own_fingerprint = own_fingerprint
        self.fingerprint = fingerprint
        self.code = code

    def body(self) -> ComposeResult:
        yield Label(Text.assemble(("This device   ", "dim"), self.own_fingerprint))
        yield Label(Text.assemble((f"{self.peer.label:<14}", "dim"), self.fingerprint))
        yield Label(Text.assemble(("Comparison code: ", "dim"), (self.code, "bold")))
        yield Label(Text.assemble("Verify this device on ", (self.peer.label, "bold"), " too. Accept only if it "
                                  "shows the same code; decline if not."))
