"""The accept/decline dialog shown when another device opens a connection to this one."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from core.peer import PeerInfo


class IncomingConnectionDialog(ModalScreen[bool]):
    """Asks whether to accept a session from ``peer``; dismisses with True (accept) or False (decline)."""

    BINDINGS = [
        Binding("a", "answer(True)", "Accept", show=True),
        Binding("d,escape", "answer(False)", "Decline", show=True),
    ]

    def __init__(self, peer: PeerInfo) -> None:
        super().__init__(classes="dialog")
        self.peer = peer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Incoming connection", classes="dialog-title")
            yield Label(Text.assemble((self.peer.label, "bold"), f" ({self.peer.id}) wants to open a session with "
                                      "this device."))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Accept (a)", variant="success", id="accept")
                yield Button("Decline (d)", variant="error", id="decline")

    def on_mount(self) -> None:
        self.query_one("#accept", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "accept")

    def action_answer(self, accept: bool) -> None:
        self.dismiss(accept)
