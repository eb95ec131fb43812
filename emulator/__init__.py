"""A local Firebase Realtime Database emulator that the unchanged firebase-admin SDK can talk to.

``Emulator`` runs the server (``async with Emulator() as emu:`` or ``with Emulator.in_thread() as emu:``);
``RuleSet`` and ``RulesParseError`` are the security rules it enforces, ``DataError`` a refused write.
Run it from a shell with ``peerchat emulator`` or ``python -m emulator``.

This package imports nothing from ``core`` or ``peerchat``. Its parts load on first use, so that importing
``emulator`` for its argument parser costs nothing (aiohttp loads with ``Emulator``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

DEFAULT_PORT = 9000
"""The port the real emulator uses, and so ours."""

if TYPE_CHECKING:
    from .rules import RuleSet, RulesParseError
    from .server import Emulator, load_ruleset
    from .tree import DataError

_LAZY = {
    "DataError": ".tree",
    "Emulator": ".server",
    "RuleSet": ".rules",
    "RulesParseError": ".rules",
    "load_ruleset": ".server",
}

__all__ = ["DEFAULT_PORT", "DataError", "Emulator", "RuleSet", "RulesParseError", "load_ruleset"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
