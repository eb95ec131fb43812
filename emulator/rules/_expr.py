"""Rule expressions: a lexer, a Pratt parser to a small AST, a static type check, and a compiler to closures.

`compile_expression(text, scope)` parses one rule expression, checks it against what can be known before any data
exists (the rule must be boolean, operand types, known variables, methods and their argument types), and returns a
function ``(Context) -> bool``. Everything that can only be known with data (a method on null, arithmetic on a
string read from the database, ``parent()`` of the root) raises `EvalFailure` inside the closures; the compiled rule
turns that into ``False``, as Firebase makes a rule that errors deny.

Static types are sets of kinds. A type is *dynamic* when it comes from data that the checker cannot see (`auth`,
its members, ``val()``, ``query.startAt``): a dynamic type passes a check when any of its kinds fits, a literal's
type only when all of them fit. That is exactly the line live Firebase draws between ``'foo'.contains(auth.foo)``
(accepted, fails at run time) and ``auth.foo.contains(7)`` (refused at load).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._regex import RegexError, compile_regex


class ExpressionError(ValueError):
    """An expression is invalid; ``column`` is the 1-based position of the offending token."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.reason = message
        self.column = column


class EvalFailure(Exception):
    """A rule hit a run-time error (the rule is then false)."""


# ---------------------------------------------------------------------------------------------------------------
# Lexer

_PUNCTUATION = ("===", "!==", "==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":",
                ".", ",", "(", ")", "[", "]")
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "str", "ident", "regex", "op", "eof"
    value: Any
    pos: int

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of expression"
        if self.kind == "str":
            return f"string {self.value!r}"
        if self.kind == "regex":
            return "regex literal"
        return repr(str(self.value))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            value, i2 = _read_string(text, i)
            tokens.append(_Token("str", value, i))
            i = i2
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER_RE.match(text, i)
            assert m is not None
            literal = m.group()
            number: int | float = float(literal) if any(c in literal for c in ".eE") else int(literal)
            tokens.append(_Token("num", number, i))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tokens.append(_Token("ident", m.group(), i))
            i = m.end()
            continue
        if ch == "/" and not _ends_operand(tokens):
            value, i2 = _read_regex(text, i)
            tokens.append(_Token("regex", value, i))
            i = i2
            continue
        for punct in _PUNCTUATION:
            if text.startswith(punct, i):
                tokens.append(_Token("op", punct, i))
                i += len(punct)
                break
        else:
            if ch == "=":
                raise ExpressionError("assignment ('=') is not allowed; compare with '==' or '==='", i + 1)
            if ch == ";":
                raise ExpressionError("';' is not allowed: a rule is one expression", i + 1)
            raise ExpressionError(f"unexpected character {ch!r}", i + 1)
    tokens.append(_Token("eof", None, n))
    return tokens


def _ends_operand(tokens: list[_Token]) -> bool:
    """True when a '/' here would be division (after an operand), not the start of a regex literal."""
    if not tokens:
        return False
    last = tokens[-1]
    return last.kind in ("num", "str", "ident", "regex") or (last.kind == "op" and last.value in (")", "]"))


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            esc = text[i + 1]
            if esc == "u":
                digits = text[i + 2:i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ExpressionError("invalid \\u escape in string", i + 1)
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            out.append(_STRING_ESCAPES.get(esc, esc))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ExpressionError("unterminated string literal", start + 1)


def _read_regex(text: str, start: int) -> tuple[tuple[str, str], int]:
    i = start + 1
    n = len(text)
    in_class = False
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "/" and not in_class:
            pattern = text[start + 1:i]
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            return (pattern, text[i + 1:j]), j
        i += 1
    raise ExpressionError("unterminated regex literal", start + 1)


# ---------------------------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True, slots=True)
class Literal:
    pos: int
    value: Any  # None, bool, int, float, str


@dataclass(frozen=True, slots=True)
class RegexLiteral:
    pos: int
    pattern: str
    flags: str


@dataclass(frozen=True, slots=True)
class ArrayLiteral:
    pos: int
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Variable:
    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    """``obj.name`` or ``obj['name']`` (name set), or ``obj[key]`` with a computed key (key set)."""

    pos: int
    obj: Any
    name: str | None
    key: Any = None


@dataclass(frozen=True, slots=True)
class Call:
    pos: int
    callee: Any
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    pos: int
    op: str
    operand: Any


@dataclass(frozen=True, slots=True)
class Binary:
    pos: int
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class Ternary:
    pos: int
    cond: Any
    then: Any
    other: Any


# ---------------------------------------------------------------------------------------------------------------
# Parser (Pratt)

_BINARY_POWER = {
    "||": 2, "&&": 3,
    "==": 4, "===": 4, "!=": 4, "!==": 4,
    "<": 5, "<=": 5, ">": 5, ">=": 5,
    "+": 6, "-": 6,
    "*": 7, "/": 7, "%": 7,
}
# Deeper expressions are refused at load, so that neither parsing nor evaluation can exhaust Python's stack.
MAX_NESTING = 100
_TERNARY_POWER = 1
_PREFIX_POWER = 8
_POSTFIX_POWER = 9


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> _Token:
        tok = self.advance()
        if tok.kind != "op" or tok.value != op:
            raise ExpressionError(f"expected {op!r} but found {tok.describe()}", tok.pos + 1)
        return tok

    def parse(self) -> Any:
        if self.peek().kind == "eof":
            raise ExpressionError("the rule is empty", 1)
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise ExpressionError(f"unexpected {tok.describe()} after a complete expression", tok.pos + 1)
        return node

    def expression(self, rbp: int) -> Any:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"the expression is nested more than {MAX_NESTING} levels deep",
                                  self.peek().pos + 1)
        try:
            return self._expression(rbp)
        finally:
            self.depth -= 1

    def _expression(self, rbp: int) -> Any:
        left = self.prefix(self.advance())
        while True:
            tok = self.peek()
            if tok.kind != "op":
                if tok.kind == "eof":
                    return left
                raise ExpressionError(f"unexpected {tok.describe()}: an operator is missing", tok.pos + 1)
            op = tok.value
            if op in (".", "[", "("):
                power = _POSTFIX_POWER
            elif op == "?":
                power = _TERNARY_POWER
            else:
                power = _BINARY_POWER.get(op, 0)
            if power <= rbp:
                return left
            self.advance()
            left = self.infix(tok, left)

    def prefix(self, tok: _Token) -> Any:
        if tok.kind == "num" or tok.kind == "str":
            return Literal(tok.pos, tok.value)
        if tok.kind == "regex":
            pattern, flags = tok.value
            return RegexLiteral(tok.pos, pattern, flags)
        if tok.kind == "ident":
            if tok.value == "true":
                return Literal(tok.pos, True)
            if tok.value == "false":
                return Literal(tok.pos, False)
            if tok.value == "null":
                return Literal(tok.pos, None)
            return Variable(tok.pos, tok.value)
        if tok.kind == "op":
            if tok.value == "(":
                inner = self.expression(0)
                self.expect(")")
                return inner
            if tok.value in ("!", "-"):
                return Unary(tok.pos, tok.value, self.expression(_PREFIX_POWER - 1))
            if tok.value == "[":
                items: list[Any] = []
                if not (self.peek().kind == "op" and self.peek().value == "]"):
                    while True:
                        items.append(self.expression(0))
                        if self.peek().kind == "op" and self.peek().value == ",":
                            self.advance()
                            continue
                        break
                self.expect("]")
                return ArrayLiteral(tok.pos, tuple(items))
        raise ExpressionError(f"unexpected {tok.describe()}", tok.pos + 1)

    def infix(self, tok: _Token, left: Any) -> Any:
        op = tok.value
        if op == ".":
            name = self.advance()
            if name.kind != "ident":
                raise ExpressionError(f"expected a name after '.' but found {name.describe()}", name.pos + 1)
            return Member(name.pos, left, name.value)
        if op == "[":
            key = self.expression(0)
            self.expect("]")
            if isinstance(key, Literal) and isinstance(key.value, str):
                return Member(key.pos, left, key.value)
            return Member(tok.pos, left, None, key)
        if op == "(":
            args: list[Any] = []
            if not (self.peek().kind == "op" and self.peek().value == ")"):
                while True:
                    args.append(self.expression(0))
                    if self.peek().kind == "op" and self.peek().value == ",":
                        self.advance()
                        continue
                    break
            self.expect(")")
            return Call(tok.pos, left, tuple(args))
        if op == "?":
            then = self.expression(0)
            self.expect(":")
            other = self.expression(_TERNARY_POWER - 1)
            return Ternary(tok.pos, left, then, other)
        right = self.expression(_BINARY_POWER[op])
        return Binary(tok.pos, op, left, right)


def parse(text: str) -> Any:
    """Parse one rule expression into its AST (raises `ExpressionError`)."""
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------------------------
# Run-time values


class ObjectValue:
    """What ``val()`` gives for a location that has children: usable in ``==``/``!=`` (never equal), nothing else.

    Firebase documents that ``val()`` on a RuleDataSnapshot with children returns "a special sentinel value" rather
    than the object; reading its members is refused at load time, and here it compares unequal to everything.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<object>"


OBJECT_VALUE = ObjectValue()


def _child_value(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, list) and key.isdigit():
        index = int(key)
        return value[index] if index < len(value) else None
    return None


class Snapshot:
    """A RuleDataSnapshot: a location (path) in one version of the tree (root value)."""

    __slots__ = ("_root", "_path", "_value")

    def __init__(self, root: Any, path: tuple[str, ...], value: Any) -> None:
        self._root = root
        self._path = path
        self._value = value

    def val(self) -> Any:
        value = self._value
        if isinstance(value, (dict, list)):
            return OBJECT_VALUE if value else None
        return value

    def child(self, path: Any) -> Snapshot:
        segments = _path_segments(path)
        value = self._value
        for segment in segments:
            value = _child_value(value, segment)
        return Snapshot(self._root, self._path + segments, value)

    def parent(self) -> Snapshot:
        if not self._path:
            raise EvalFailure("parent() of the root")
        parent_path = self._path[:-1]
        value = self._root
        for segment in parent_path:
            value = _child_value(value, segment)
        return Snapshot(self._root, parent_path, value)

    def has_child(self, path: Any) -> bool:
        value = self._value
        for segment in _path_segments(path):
            value = _child_value(value, segment)
            if value is None:
                return False
        return value is not None

    def has_children(self, names: list[Any] | None = None) -> bool:
        value = self._value
        if names is None:
            return isinstance(value, (dict, list)) and bool(value)
        return all(self.has_child(name) for name in names)

    def get_priority(self) -> None:
        """Priorities are not stored by this emulator: every location's priority is null."""
        return None

    def exists(self) -> bool:
        return self._value is not None

    def is_number(self) -> bool:
        return _is_number(self._value)

    def is_string(self) -> bool:
        return isinstance(self._value, str)

    def is_boolean(self) -> bool:
        return isinstance(self._value, bool)


def _path_segments(path: Any) -> tuple[str, ...]:
    if not isinstance(path, str):
        raise EvalFailure(f"a child path must be a string, not {_kind_of(path)}")
    return tuple(segment for segment in path.split("/") if segment)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float))) and not isinstance(value, bool)


def _kind_of(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float)):
        return NUM
    if isinstance(value, str):
        return STR
    return OBJ


def js_number_to_string(number: int | float) -> str:
    """Format a number as JavaScript's ``String(number)`` does (``1.0`` -> ``"1"``, NaN -> ``"NaN"``)."""
    if isinstance(number, int):
        return str(number)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(number))  # Python '1e-07' is JavaScript '1e-7'


def _utf16_length(text: str) -> int:
    if text.isascii():  # the common case, without a look at each character (frames of 64 KiB are checked often)
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class Context:
    """The variables of one rule evaluation."""

    __slots__ = ("auth", "now", "root", "data", "new_data", "wildcards", "query")

    def __init__(self, *, auth: Any, now: int, root: Snapshot, data: Snapshot, new_data: Snapshot | None,
                 wildcards: dict[str, str], query: dict[str, Any] | None) -> None:
        self.auth = auth
        self.now = now
        self.root = root
        self.data = data
        self.new_data = new_data
        self.wildcards = wildcards
        self.query = query


# ---------------------------------------------------------------------------------------------------------------
# Static types

BOOL, NUM, STR, NULL, OBJ = "boolean", "number", "string", "null", "object"
SNAP, QUERY = "snapshot", "query"


@dataclass(frozen=True, slots=True)
class _Type:
    kinds: frozenset[str]
    dynamic: bool = False

    def fits(self, allowed: frozenset[str]) -> bool:
        if self.dynamic:
            return bool(self.kinds & allowed)
        return self.kinds <= allowed

    def describe(self) -> str:
        if self.dynamic and len(self.kinds) > 1:
            return "a value of unknown type"
        names = sorted(self.kinds)
        return " or ".join(("an " if k[0] in "aeiou" else "a ") + k for k in names)


def _static(*kinds: str) -> _Type:
    return _Type(frozenset(kinds))


T_BOOL = _static(BOOL)
T_NUM = _static(NUM)
T_STR = _static(STR)
T_SNAP = _static(SNAP)
T_QUERY = _static(QUERY)
T_ANY = _Type(frozenset({NULL, BOOL, NUM, STR, OBJ}), dynamic=True)
T_PRIM = _Type(frozenset({NULL, BOOL, NUM, STR}), dynamic=True)

_K_BOOL = frozenset({BOOL})
_K_NUM = frozenset({NUM})
_K_STR = frozenset({STR})
_K_NUM_STR = frozenset({NUM, STR})
_K_KEY = frozenset({NUM, STR})
_K_VALUES = frozenset({NULL, BOOL, NUM, STR, OBJ})

QUERY_FIELDS: dict[str, _Type] = {
    "orderByKey": T_BOOL,
    "orderByValue": T_BOOL,
    "orderByPriority": T_BOOL,
    "orderByChild": _Type(frozenset({STR, NULL}), dynamic=True),
    "startAt": T_PRIM,
    "endAt": T_PRIM,
    "equalTo": T_PRIM,
    "limitToFirst": _Type(frozenset({NUM, NULL}), dynamic=True),
    "limitToLast": _Type(frozenset({NUM, NULL}), dynamic=True),
}

SNAPSHOT_METHODS = frozenset({"val", "child", "parent", "hasChild", "hasChildren", "exists", "getPriority",
                              "isNumber", "isString", "isBoolean"})
STRING_METHODS = frozenset({"contains", "beginsWith", "endsWith", "replace", "toLowerCase", "toUpperCase",
                            "matches"})


@dataclass(frozen=True)
class Scope:
    """What an expression may refer to: its kind of rule and the wildcards bound above it."""

    kind: str  # ".read", ".write" or ".validate"
    wildcards: frozenset[str]


# ---------------------------------------------------------------------------------------------------------------
# Compiler: AST -> (static type, closure)

Fn = Callable[[Context], Any]


def compile_expression(text: str, scope: Scope) -> Callable[[Context], bool]:
    """Parse, check and compile a rule; the result evaluates to True only when the rule is true.

    Raises:
        ExpressionError: the expression is not a valid rule (syntax, types, names).
    """
    node = parse(text)
    compiler = _Compiler(scope)
    type_, fn = compiler.compile(node)
    if not type_.fits(_K_BOOL):
        raise ExpressionError(f"a rule must be a boolean expression, this one is {type_.describe()}", 1)

    def rule(ctx: Context) -> bool:
        try:
            return fn(ctx) is True
        except EvalFailure:
            return False
        except ArithmeticError:
            # A float overflow (1e308 * 10 ** 400) is a run-time error too.
            return False

    return rule


def _fail(message: str) -> EvalFailure:
    return EvalFailure(message)


class _Compiler:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.depth = 0

    def compile(self, node: Any) -> tuple[_Type, Fn]:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"the expression is nested more than {MAX_NESTING} levels deep", node.pos + 1)
        try:
            return getattr(self, "_" + type(node).__name__)(node)
        finally:
            self.depth -= 1

    def value(self, node: Any, what: str) -> tuple[_Type, Fn]:
        """Compile an operand that must be a plain value (not a snapshot, list, regex or query)."""
        type_, fn = self.compile(node)
        if not type_.fits(_K_VALUES):
            raise ExpressionError(f"{what} cannot be {type_.describe()}", node.pos + 1)
        return type_, fn

    def typed(self, node: Any, allowed: frozenset[str], what: str) -> tuple[_Type, Fn]:
        type_, fn = self.compile(node)
        if not type_.fits(allowed):
            wanted = " or ".join(sorted(allowed))
            raise ExpressionError(f"{what} must be a {wanted}, not {type_.describe()}", node.pos + 1)
        return type_, fn

    # -- leaves

    def _Literal(self, node: Literal) -> tuple[_Type, Fn]:
        value = node.value
        return _static(_kind_of(value)), lambda ctx: value

    def _RegexLiteral(self, node: RegexLiteral) -> tuple[_Type, Fn]:
        raise ExpressionError("a regex literal may only be the argument of matches()", node.pos + 1)

    def _ArrayLiteral(self, node: ArrayLiteral) -> tuple[_Type, Fn]:
        raise ExpressionError("a list may only be the argument of hasChildren()", node.pos + 1)

    def _Variable(self, node: Variable) -> tuple[_Type, Fn]:
        name = node.name
        if name == "auth":
            return T_ANY, lambda ctx: ctx.auth
        if name == "now":
            return T_NUM, lambda ctx: ctx.now
        if name == "root":
            return T_SNAP, lambda ctx: ctx.root
        if name == "data":
            return T_SNAP, lambda ctx: ctx.data
        if name == "newData":
            if self.scope.kind == ".read":
                raise ExpressionError("newData is not available in .read rules", node.pos + 1)
            return T_SNAP, lambda ctx: ctx.new_data
        if name == "query":
            if self.scope.kind != ".read":
                raise ExpressionError(f"query is only available in .read rules, not in {self.scope.kind}",
                                      node.pos + 1)
            return T_QUERY, lambda ctx: ctx.query
        if name.startswith("$"):
            if name not in self.scope.wildcards:
                raise ExpressionError(f"unknown variable {name!r}: no such wildcard above this rule", node.pos + 1)
            return T_STR, lambda ctx: ctx.wildcards[name]
        raise ExpressionError(f"unknown variable {name!r}", node.pos + 1)

    # -- members and calls

    def _Member(self, node: Member) -> tuple[_Type, Fn]:
        obj_type, obj_fn = self.compile(node.obj)
        name = node.name
        if node.key is not None:
            if not (obj_type.dynamic and OBJ in obj_type.kinds):
                raise ExpressionError(f"cannot index {obj_type.describe()} with [...]", node.pos + 1)
            key_type, key_fn = self.typed(node.key, _K_KEY, "an index")

            def index(ctx: Context) -> Any:
                key = key_fn(ctx)
                if isinstance(key, bool) or not isinstance(key, (str, int, float)):
                    raise _fail(f"cannot index with {_kind_of(key)}")
                return _member(obj_fn(ctx), key if isinstance(key, str) else js_number_to_string(key))

            return T_ANY, index
        assert name is not None
        if obj_type == T_QUERY:
            if name not in QUERY_FIELDS:
                known = ", ".join(QUERY_FIELDS)
                raise ExpressionError(f"query has no member {name!r} (it has {known})", node.pos + 1)
            return QUERY_FIELDS[name], lambda ctx: ctx.query[name]
        if SNAP in obj_type.kinds:
            hint = f" (did you mean {name}()?)" if name in SNAPSHOT_METHODS else ""
            raise ExpressionError(f"a snapshot has no property {name!r}{hint}", node.pos + 1)
        if obj_type.dynamic and OBJ in obj_type.kinds:
            return T_ANY, lambda ctx: _member(obj_fn(ctx), name)
        if STR in obj_type.kinds and name == "length":
            if not obj_type.dynamic:
                return T_NUM, lambda ctx: _utf16_length(obj_fn(ctx))
            return _Type(frozenset({NUM, NULL}), dynamic=True), lambda ctx: _member(obj_fn(ctx), name)
        raise ExpressionError(f"{obj_type.describe()} has no property {name!r}", node.pos + 1)

    def _Call(self, node: Call) -> tuple[_Type, Fn]:
        callee = node.callee
        if not isinstance(callee, Member):
            raise ExpressionError("only methods can be called (like data.exists())", node.pos + 1)
        if callee.name is None:
            raise ExpressionError("a method name must be written literally, not computed", callee.pos + 1)
        obj_type, obj_fn = self.compile(callee.obj)
        name = callee.name
        if obj_type == T_SNAP:
            return self._snapshot_method(callee, name, obj_fn, node.args)
        if STR in obj_type.kinds and obj_type.fits(_K_STR):
            return self._string_method(callee, name, obj_fn, node.args, obj_type)
        raise ExpressionError(f"{obj_type.describe()} has no method {name!r}", callee.pos + 1)

    def _arity(self, callee: Member, args: tuple[Any, ...], count: int) -> None:
        if len(args) != count:
            plural = "argument" if count == 1 else "arguments"
            raise ExpressionError(f"{callee.name}() takes {count} {plural}, {len(args)} given", callee.pos + 1)

    def _snapshot_method(self, callee: Member, name: str, snap_fn: Fn, args: tuple[Any, ...]) -> tuple[_Type, Fn]:
        if name not in SNAPSHOT_METHODS:
            known = ", ".join(sorted(SNAPSHOT_METHODS))
            raise ExpressionError(f"a snapshot has no method {name!r} (it has {known})", callee.pos + 1)
        if name == "hasChildren" and args:
            self._arity(callee, args, 1)
            arg = args[0]
            if not isinstance(arg, ArrayLiteral):
                raise ExpressionError("hasChildren() takes a list literal of child names, like ['a', 'b']",
                                      arg.pos + 1)
            if not arg.items:
                raise ExpressionError("hasChildren() needs at least one child name in its list", arg.pos + 1)
            item_fns = [self.typed(item, _K_STR, "a child name")[1] for item in arg.items]

            def has_children(ctx: Context) -> bool:
                snap = snap_fn(ctx)
                names = [fn(ctx) for fn in item_fns]
                for value in names:
                    if not isinstance(value, str):
                        raise _fail(f"hasChildren() got {_kind_of(value)} as a child name")
                return snap.has_children(names)

            return T_BOOL, has_children
        if name in ("child", "hasChild"):
            self._arity(callee, args, 1)
            _, arg_fn = self.typed(args[0], _K_STR, f"the argument of {name}()")
            if name == "child":
                return T_SNAP, lambda ctx: snap_fn(ctx).child(arg_fn(ctx))
            return T_BOOL, lambda ctx: snap_fn(ctx).has_child(arg_fn(ctx))
        self._arity(callee, args, 0)
        simple: dict[str, tuple[_Type, Fn]] = {
            "val": (T_PRIM, lambda ctx: snap_fn(ctx).val()),
            "parent": (T_SNAP, lambda ctx: snap_fn(ctx).parent()),
            "hasChildren": (T_BOOL, lambda ctx: snap_fn(ctx).has_children()),
            "exists": (T_BOOL, lambda ctx: snap_fn(ctx).exists()),
            "getPriority": (T_PRIM, lambda ctx: snap_fn(ctx).get_priority()),
            "isNumber": (T_BOOL, lambda ctx: snap_fn(ctx).is_number()),
            "isString": (T_BOOL, lambda ctx: snap_fn(ctx).is_string()),
            "isBoolean": (T_BOOL, lambda ctx: snap_fn(ctx).is_boolean()),
        }
        return simple[name]

    def _string_method(self, callee: Member, name: str, str_fn: Fn, args: tuple[Any, ...],
                       obj_type: _Type) -> tuple[_Type, Fn]:
        if name not in STRING_METHODS:
            known = ", ".join(sorted(STRING_METHODS))
            what = "a string" if not obj_type.dynamic else "a string (the only kind of value with methods)"
            raise ExpressionError(f"{what} has no method {name!r} (it has {known} and .length)", callee.pos + 1)

        def receiver(ctx: Context) -> str:
            value = str_fn(ctx)
            if not isinstance(value, str):
                raise _fail(f"{name}() called on {_kind_of(value)}")
            return value

        if name == "matches":
            self._arity(callee, args, 1)
            arg = args[0]
            if not isinstance(arg, RegexLiteral):
                raise ExpressionError("matches() takes a regex literal like /^a+$/, not a string", arg.pos + 1)
            try:
                regex = compile_regex(arg.pattern, arg.flags)
            except RegexError as exc:
                raise ExpressionError(str(exc), arg.pos + 1) from exc
            search = regex.search
            return T_BOOL, lambda ctx: search(receiver(ctx)) is not None
        if name in ("toLowerCase", "toUpperCase"):
            self._arity(callee, args, 0)
            if name == "toLowerCase":
                return T_STR, lambda ctx: receiver(ctx).lower()
            return T_STR, lambda ctx: receiver(ctx).upper()
        count = 2 if name == "replace" else 1
        self._arity(callee, args, count)
        arg_fns = [self.typed(arg, _K_STR, f"an argument of {name}()")[1] for arg in args]

        def string_args(ctx: Context) -> list[str]:
            values = [fn(ctx) for fn in arg_fns]
            for value in values:
                if not isinstance(value, str):
                    raise _fail(f"{name}() got {_kind_of(value)} as an argument")
            return values

        if name == "replace":
            def replace(ctx: Context) -> str:
                text = receiver(ctx)
                old, new = string_args(ctx)
                return text.replace(old, new)

            return T_STR, replace
        if name == "contains":
            def contains(ctx: Context) -> bool:
                text = receiver(ctx)
                return string_args(ctx)[0] in text

            return T_BOOL, contains
        if name == "beginsWith":
            def begins_with(ctx: Context) -> bool:
                text = receiver(ctx)
                return text.startswith(string_args(ctx)[0])

            return T_BOOL, begins_with

        def ends_with(ctx: Context) -> bool:
            text = receiver(ctx)
            return text.endswith(string_args(ctx)[0])

        return T_BOOL, ends_with

    # -- operators

    def _Unary(self, node: Unary) -> tuple[_Type, Fn]:
        if node.op == "!":
            _, fn = self.typed(node.operand, _K_BOOL, "the operand of '!'")

            def not_(ctx: Context) -> bool:
                value = fn(ctx)
                if not isinstance(value, bool):
                    raise _fail(f"'!' applied to {_kind_of(value)}")
                return not value

            return T_BOOL, not_
        _, fn = self.typed(node.operand, _K_NUM, "the operand of unary '-'")

        def negate(ctx: Context) -> Any:
            value = fn(ctx)
            if not _is_number(value):
                raise _fail(f"unary '-' applied to {_kind_of(value)}")
            return -value

        return T_NUM, negate

    def _Ternary(self, node: Ternary) -> tuple[_Type, Fn]:
        _, cond_fn = self.typed(node.cond, _K_BOOL, "the condition of '?:'")
        then_type, then_fn = self.compile(node.then)
        other_type, other_fn = self.compile(node.other)
        if SNAP in then_type.kinds | other_type.kinds or QUERY in then_type.kinds | other_type.kinds:
            raise ExpressionError("the branches of '?:' must be plain values", node.pos + 1)
        type_ = _Type(then_type.kinds | other_type.kinds, then_type.dynamic or other_type.dynamic)

        def ternary(ctx: Context) -> Any:
            cond = cond_fn(ctx)
            if not isinstance(cond, bool):
                raise _fail(f"'?:' condition is {_kind_of(cond)}")
            return then_fn(ctx) if cond else other_fn(ctx)

        return type_, ternary

    def _Binary(self, node: Binary) -> tuple[_Type, Fn]:
        op = node.op
        if op in ("&&", "||"):
            return self._logical(node)
        if op in ("==", "===", "!=", "!=="):
            _, left = self.value(node.left, f"an operand of {op!r}")
            _, right = self.value(node.right, f"an operand of {op!r}")
            if op in ("==", "==="):
                return T_BOOL, lambda ctx: _equals(left(ctx), right(ctx))
            return T_BOOL, lambda ctx: not _equals(left(ctx), right(ctx))
        if op in ("<", "<=", ">", ">="):
            left_type, left = self.typed(node.left, _K_NUM_STR, f"an operand of {op!r}")
            right_type, right = self.typed(node.right, _K_NUM_STR, f"an operand of {op!r}")
            if not left_type.dynamic and not right_type.dynamic and not (left_type.kinds & right_type.kinds):
                raise ExpressionError(f"{op!r} compares {left_type.describe()} with {right_type.describe()}",
                                      node.pos + 1)
            return T_BOOL, _comparison(op, left, right)
        if op == "+":
            left_type, left = self.typed(node.left, _K_NUM_STR, "an operand of '+'")
            right_type, right = self.typed(node.right, _K_NUM_STR, "an operand of '+'")
            if left_type.dynamic or right_type.dynamic:
                result = _Type(_K_NUM_STR, dynamic=True)
            elif left_type == T_NUM and right_type == T_NUM:
                result = T_NUM
            elif left_type.kinds == _K_STR or right_type.kinds == _K_STR:
                result = T_STR
            else:
                result = _Type(_K_NUM_STR)
            return result, _plus(left, right)
        _, left = self.typed(node.left, _K_NUM, f"an operand of {op!r}")
        _, right = self.typed(node.right, _K_NUM, f"an operand of {op!r}")
        return T_NUM, _arithmetic(op, left, right)

    def _logical(self, node: Binary) -> tuple[_Type, Fn]:
        # 'a && b && c' is compiled as one n-ary node: long chains cost no recursion depth and no nested calls.
        op = node.op
        operands: list[Any] = []
        left_spine: Any = node
        while isinstance(left_spine, Binary) and left_spine.op == op:
            operands.append(left_spine.right)
            left_spine = left_spine.left
        operands.append(left_spine)
        operands.reverse()
        fns = tuple(self.typed(operand, _K_BOOL, f"an operand of {op!r}")[1] for operand in operands)
        # As in JavaScript, evaluation stops at the first operand that decides; a run-time error before that makes
        # the whole rule fail ('(error) || true' is false in live Firebase).
        decisive = op == "||"

        def logical(ctx: Context) -> bool:
            for fn in fns:
                value = fn(ctx)
                if value is decisive:
                    return decisive
                if value is not (not decisive):
                    raise _fail(f"{op!r} applied to {_kind_of(value)}")
            return not decisive

        return T_BOOL, logical


def _member(obj: Any, name: str) -> Any:
    """``obj.name`` at run time: a member of null is null; a string has only ``length``."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    if isinstance(obj, list):
        return _child_value(obj, name)
    if isinstance(obj, str) and name == "length":
        return _utf16_length(obj)
    raise _fail(f"{_kind_of(obj)} has no member {name!r}")


def _equals(a: Any, b: Any) -> bool:
    """Strict equality: no coercion between kinds (``1 == '1'`` and ``1 == true`` are false)."""
    if a is OBJECT_VALUE or b is OBJECT_VALUE:
        return False
    kind = _kind_of(a)
    if kind != _kind_of(b):
        return False
    return bool(a == b)


def _comparison(op: str, left: Fn, right: Fn) -> Fn:
    def compare(ctx: Context) -> bool:
        a = left(ctx)
        b = right(ctx)
        if _is_number(a) and _is_number(b) or isinstance(a, str) and isinstance(b, str):
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            return a >= b
        raise _fail(f"{op!r} between {_kind_of(a)} and {_kind_of(b)}")

    return compare


def _plus(left: Fn, right: Fn) -> Fn:
    def plus(ctx: Context) -> Any:
        a = left(ctx)
        b = right(ctx)
        a_num = _is_number(a)
        b_num = _is_number(b)
        if a_num and b_num:
            return a + b
        a_str = isinstance(a, str)
        b_str = isinstance(b, str)
        if a_str and b_str:
            return a + b
        # Live Firebase concatenates a string with a number ('one' + 1 is 'one1', 1/0 + '' is 'NaN').
        if a_str and b_num:
            return a + js_number_to_string(b)
        if a_num and b_str:
            return js_number_to_string(a) + b
        raise _fail(f"'+' between {_kind_of(a)} and {_kind_of(b)}")

    return plus


def _arithmetic(op: str, left: Fn, right: Fn) -> Fn:
    def arithmetic(ctx: Context) -> Any:
        a = left(ctx)
        b = right(ctx)
        if not (_is_number(a) and _is_number(b)):
            raise _fail(f"{op!r} between {_kind_of(a)} and {_kind_of(b)}")
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            # Live Firebase gives NaN for a division by zero (1/0 + '' == 'NaN'), not Infinity.
            return math.nan
        if op == "/":
            return a / b
        if isinstance(a, int) and isinstance(b, int):
            return int(math.fmod(a, b))  # JavaScript's %: the sign follows the dividend
        if math.isinf(a) or math.isnan(a) or math.isnan(b):
            return math.nan  # as JavaScript: Infinity % 2 is NaN (math.fmod would raise)
        return math.fmod(a, b)

    return arithmetic
