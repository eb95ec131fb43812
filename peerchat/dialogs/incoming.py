"""The accept/decline dialog shown when another device opens a connection to this one."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Label

from core import PeerInfo

from ..models import shown
from .answer import AnswerDialog


class IncomingConnectionDialog(AnswerDialog):
    """Asks whether to accept a session from ``peer``; dismisses with True (accept) or False (decline)."""

    HEADING = "Incoming connection"

    def __init__(self, peer: PeerInfo) -> None:
        super().__init__()
        self.peer = peer

    def body(self) -> ComposeResult:
        yield Label(Text.assemble((shown(self.peer.label), "bold"), f" ({shown(self.peer.id)}) wants to open a session with "
                                  "this device."))
