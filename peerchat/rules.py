"""Where peerchat's security rules (``database.rules.json``) are: inside the installed package (a wheel ships them
there), or in ``firebase/`` beside the source tree (a checkout). The embedded emulator never runs without them."""

from __future__ import annotations

from pathlib import Path

RULES_NAME = "database.rules.json"
CANDIDATES = (
    Path(__file__).resolve().parent / RULES_NAME,  # an installed wheel
    Path(__file__).resolve().parent.parent / "firebase" / RULES_NAME,  # a checkout
)


class RulesMissingError(Exception):
    """peerchat's security rules are not where this installation keeps them."""


def rules_file(candidates: tuple[Path, ...] | None = None) -> Path:
    """The first of ``candidates`` (default :data:`CANDIDATES`) that is a file.

    Raises:
        RulesMissingError: none is; the message is one line saying what to do.
    """
    candidates = CANDIDATES if candidates is None else candidates
    for path in candidates:
        if path.is_file():
            return path
    raise RulesMissingError(
        f"the security rules ({RULES_NAME}) are missing from this installation (looked in "
        + ", ".join(str(p.parent) for p in candidates)
        + "); reinstall peerchat, or pass --emulator HOST:PORT to use an emulator you started with rules"
    )
