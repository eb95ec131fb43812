"""The accept/decline dialog frame shared by the incoming dialogs: :class:`AnswerDialog`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class AnswerDialog(ModalScreen[bool]):
    """A heading, the body a subclass composes in :meth:`body`, then Accept/Decline; dismisses True to accept."""

    HEADING = ""

    BINDINGS = [
        Binding("a", "answer(True)", "Accept", show=True),
        Binding("d,escape", "answer(False)", "Decline", show=True),
    ]

    def __init__(self) -> None:
        super().__init__(classes="dialog")

    def body(self) -> ComposeResult:
        """The widgets between the heading and the buttons."""
        return iter(())

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.HEADING, classes="dialog-title")
            yield from self.body()
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
