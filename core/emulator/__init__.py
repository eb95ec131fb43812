"""A local Firebase Realtime Database emulator that the unchanged firebase-admin SDK can talk to.

``Emulator`` runs the server (``async with Emulator() as emu:`` or ``with Emulator.in_thread() as emu:``);
``RuleSet`` and ``RulesParseError`` are the security rules it enforces, ``DataError`` a refused write.
Run it from a shell with ``peerchat emulator`` or ``python -m core.emulator``.
"""

from .rules import RuleSet, RulesParseError
from .server import DEFAULT_PORT, Emulator, load_ruleset
from .tree import DataError

__all__ = ["DEFAULT_PORT", "DataError", "Emulator", "RuleSet", "RulesParseError", "load_ruleset"]
