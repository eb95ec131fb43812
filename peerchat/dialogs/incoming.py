"""The accept/decline dialog shown when another device asks to open a session with this one."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from core import PeerInfo

from ..models import shown
from .answer import AnswerDialog

TRUST_WORDS = {
    "new": "a device this one has never seen",
    "trusted": "known from an earlier session, not verified",
    "verified": "verified",
}


class IncomingConnectionDialog(AnswerDialog):
    """Asks whether to accept a session from ``peer``; dismisses with True (accept) or False (decline).

    Shows how far the device is trusted, its key fingerprint and the comparison code; ``v`` accepts and marks the
    device verified (:attr:`verified`), for when the other device shows the same code.
    """

    HEADING = "Incoming session"

    BINDINGS = [Binding("v", "verify", "Codes match: accept and verify", show=True)]

    def __init__(self, peer: PeerInfo, *, trust: str = "new", fingerprint: str = "", code: str = "") -> None:
        super().__init__()
        self.peer = peer
        self.trust = trust
        self.fingerprint = fingerprint
        self.code = code
        self.verified = False

    def body(self) -> ComposeResult:
        yield Label(Text.assemble((shown(self.peer.label), "bold"), f" ({shown(self.peer.id)}) wants to open a session with "
                                  "this device."))
        if self.fingerprint:
            yield Label(Text.assemble(("Trust: ", "dim"), TRUST_WORDS.get(self.trust, self.trust),
                                      ("   key ", "dim"), self.fingerprint))
        if self.code:
            yield Label(Text.assemble(("Comparison code: ", "dim"), (self.code, "bold"),
                                      ("  (v: the other device shows the same code)", "dim")))

    def action_verify(self) -> None:
        self.verified = True
        self.dismiss(True)
