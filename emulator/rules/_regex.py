"""Translation of a rules regex literal (`/pattern/i`) into a compiled Python `re` pattern.

Firebase supports a small regex dialect: `. * + ? ( ) | [...] [^...] {n,m}`, the classes `\\s \\w \\d \\S \\W \\D`,
`\\` before any other character meaning that character literally, `^` only as the first and `$` only as the last
character of the pattern, and only the `i` flag. The pattern is rewritten token by token so that nothing in it can
reach a Python-only construct: every literal character is escaped, `^`/`$` become `\\A`/`\\Z` (Python's `$` would
also match before a final newline), and `\\w \\d \\s` are ASCII as in JavaScript.
"""

from __future__ import annotations

import re

_CLASS_ESCAPES = frozenset("swdSWD")
_QUANTIFIERS = frozenset("*+?")


class RegexError(ValueError):
    """The regex literal uses something the rules dialect does not allow (the message says what)."""


def compile_regex(pattern: str, flags: str) -> re.Pattern[str]:
    """Return the Python pattern equivalent to the rules literal ``/pattern/flags`` (to be used with ``search``).

    Raises:
        RegexError: a flag other than ``i``, a misplaced anchor, or a pattern that does not compile.
    """
    for flag in flags:
        if flag != "i":
            raise RegexError(f"unsupported regex flag {flag!r} (only 'i' is allowed)")
    if len(flags) > 1:
        raise RegexError("the 'i' flag is given more than once")
    translated = _translate(pattern)
    re_flags = re.ASCII | (re.IGNORECASE if flags else 0)
    try:
        return re.compile(translated, re_flags)
    except re.error as exc:
        raise RegexError(f"invalid regular expression /{pattern}/: {exc.msg}") from exc


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise RegexError(f"regex /{pattern}/ ends with a lone backslash")
            nxt = pattern[i + 1]
            out.append("\\" + nxt if nxt in _CLASS_ESCAPES else re.escape(nxt))
            i += 2
        elif ch == "[":
            i = _translate_class(pattern, i, out)
        elif ch == "^":
            if i != 0:
                raise RegexError(f"'^' may only be the first character of a regex, not at {i} in /{pattern}/")
            out.append(r"\A")
            i += 1
        elif ch == "$":
            if i != n - 1:
                raise RegexError(f"'$' may only be the last character of a regex, not at {i} in /{pattern}/")
            out.append(r"\Z")
            i += 1
        elif ch == "(":
            if i + 1 < n and pattern[i + 1] == "?":
                raise RegexError(f"groups with '(?' are not supported in /{pattern}/")
            out.append(ch)
            i += 1
        elif ch in _QUANTIFIERS or ch in ".)|{}":
            out.append(ch)
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


def _translate_class(pattern: str, start: int, out: list[str]) -> int:
    """Copy the character class starting at ``pattern[start] == '['``; return the index after its ``]``."""
    i = start + 1
    n = len(pattern)
    parts = ["["]
    if i < n and pattern[i] == "^":
        parts.append("^")
        i += 1
    first = True
    while i < n:
        ch = pattern[i]
        if ch == "]" and not first:
            parts.append("]")
            out.append("".join(parts))
            return i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = pattern[i + 1]
            parts.append("\\" + nxt if nxt in _CLASS_ESCAPES else re.escape(nxt))
            i += 2
        elif ch == "-" and not first and i + 1 < n and pattern[i + 1] != "]":
            parts.append("-")
            i += 1
        else:
            parts.append(re.escape(ch))
            i += 1
        first = False
    raise RegexError(f"unterminated character class in /{pattern}/")
