"""`RuleSet`: a loaded rules file compiled into a tree of rule nodes, answering can_read / can_write / index_on."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from ._expr import (
    QUERY_FIELDS,
    Context,
    ExpressionError,
    Scope,
    Snapshot,
    _child_value,
    compile_expression,
)

_EXPRESSION_KEYS = (".read", ".write", ".validate")
_RULE_KEYS = frozenset(_EXPRESSION_KEYS + (".indexOn",))
_FORBIDDEN_KEY_CHARS = frozenset("/.#[]$") | frozenset(chr(c) for c in range(0x20)) | {chr(0x7F)}
_NO_WILDCARDS: dict[str, str] = {}
# Data is at most 32 levels deep, so deeper rules could never apply; the margin is for readability, not need.
MAX_RULES_DEPTH = 64


class RulesParseError(ValueError):
    """The rules could not be loaded; ``str(error)`` starts with "Parse error" and says where and why."""


# A compiled rule: True or False for a boolean rule, else a function of the evaluation context.
_Rule = Any


@dataclass(eq=False)
class _Node:
    read: _Rule = None
    write: _Rule = None
    validate: _Rule = None
    index_on: tuple[str, ...] = ()
    children: dict[str, _Node] = field(default_factory=dict)
    wildcard: str | None = None
    wildcard_node: _Node | None = None
    validates_below: bool = False  # some strict descendant has a .validate

    def step(self, key: str, wildcards: dict[str, str]) -> tuple[_Node | None, dict[str, str]]:
        """The rule node for child ``key`` (a literal name wins over the wildcard) and the wildcards bound there."""
        child = self.children.get(key)
        if child is not None:
            return child, wildcards
        if self.wildcard is None:
            return None, wildcards
        return self.wildcard_node, {**wildcards, self.wildcard: key}


class RuleSet:
    """Security rules of one database, compiled once at load.

    Data given to the methods is in the emulator's stored form: dicts with str keys, no None inside, no empty dicts;
    an absent value is None. Paths are tuples of keys from the root.
    """

    __slots__ = ("_source", "_root")

    def __init__(self, source: dict[str, Any], root: _Node) -> None:
        self._source = source
        self._root = root

    # -- loading

    @classmethod
    def allow_all(cls) -> RuleSet:
        """The rules in force when none were loaded: everyone may read and write everything."""
        return cls.from_json({"rules": {".read": True, ".write": True}})

    @classmethod
    def from_text(cls, text: str) -> RuleSet:
        """Load a rules file: JSON that may contain ``//`` and ``/* */`` comments.

        Raises:
            RulesParseError: the text is not JSON, or the rules in it are invalid.
        """
        if not isinstance(text, str):
            raise RulesParseError(f"Parse error: the rules must be text, not {type(text).__name__}")
        stripped = _strip_comments(text)
        try:
            obj = json.loads(stripped, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
        except RecursionError as exc:
            raise RulesParseError("Parse error: the JSON is nested too deeply") from exc
        except _BadJsonError as exc:
            raise RulesParseError(f"Parse error: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise RulesParseError(
                f"Parse error: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: Any) -> RuleSet:
        """Load parsed rules of the shape ``{"rules": {...}}``.

        Raises:
            RulesParseError: anything else, or an invalid rule anywhere in the tree.
        """
        if not isinstance(obj, dict) or set(obj) != {"rules"}:
            raise RulesParseError('Parse error: the rules must be a JSON object of the form {"rules": {...}}')
        if not isinstance(obj["rules"], dict):
            raise RulesParseError(f"Parse error at /rules: expected an object, got {_json_kind(obj['rules'])}")
        root = _compile_node(obj["rules"], "/rules", (), 0)
        return cls(copy.deepcopy(obj), root)

    def to_json(self) -> dict[str, Any]:
        """The rules as loaded, ``{"rules": {...}}`` (a copy)."""
        return copy.deepcopy(self._source)

    # -- questions

    def can_read(self, root: Any, path: tuple[str, ...], *, auth: dict[str, Any] | None, now: int,
                 query: dict[str, Any] | None = None) -> bool:
        """True when some ``.read`` from the root down to ``path`` is true (no rule there: denied).

        Args:
            root: the whole current tree.
            path: the location read.
            auth: the ``auth`` variable (None when unauthenticated).
            now: server time in milliseconds.
            query: the read's query parameters, keys among orderByKey, orderByValue, orderByPriority (true when
                used), orderByChild (the child path), startAt, endAt, equalTo (values), limitToFirst, limitToLast.

        Raises:
            ValueError: ``query`` has a key that is not a query parameter.
        """
        query_view = _query_view(query)
        node: _Node | None = self._root
        value = root
        wildcards = _NO_WILDCARDS
        root_snapshot: Snapshot | None = None
        depth = 0
        while node is not None:
            rule = node.read
            if rule is True:
                return True
            if rule is not None and rule is not False:
                if root_snapshot is None:
                    root_snapshot = Snapshot(root, (), root)
                ctx = Context(auth=auth, now=now, root=root_snapshot, data=Snapshot(root, path[:depth], value),
                              new_data=None, wildcards=wildcards, query=query_view)
                if rule(ctx):
                    return True
            if depth == len(path):
                return False
            key = path[depth]
            node, wildcards = node.step(key, wildcards)
            value = _child_value(value, key)
            depth += 1
        return False

    def can_write(self, old_root: Any, new_root: Any, path: tuple[str, ...], *, auth: dict[str, Any] | None,
                  now: int) -> bool:
        """True when the write at ``path`` turning ``old_root`` into ``new_root`` is permitted and validates.

        Permitted: some ``.write`` from the root down to ``path`` is true. Validates: every ``.validate`` on the way
        down and at every location below ``path`` that has both a rule node and new data is true (a location
        whose new value is null is not validated).
        """
        chain: list[tuple[_Node, int, Any, Any, dict[str, str]]] = []
        node: _Node | None = self._root
        old, new, wildcards = old_root, new_root, _NO_WILDCARDS
        depth = 0
        while node is not None:
            chain.append((node, depth, old, new, wildcards))
            if depth == len(path):
                break
            key = path[depth]
            node, wildcards = node.step(key, wildcards)
            old = _child_value(old, key)
            new = _child_value(new, key)
            depth += 1
        evaluator = _WriteEvaluator(old_root, new_root, path, auth, now)
        if not any(evaluator.check(n.write, d, o, nw, w) for n, d, o, nw, w in chain if n.write is not None):
            return False
        for n, d, o, nw, w in chain:
            if n.validate is not None and nw is not None and not evaluator.check(n.validate, d, o, nw, w):
                return False
        last, last_depth, last_old, last_new, last_wildcards = chain[-1]
        if last_depth == len(path) and last.validates_below and last_new is not None:
            return evaluator.validate_below(last, path, last_old, last_new, last_wildcards)
        return True

    def index_on(self, path: tuple[str, ...]) -> list[str]:
        """The children named by ``.indexOn`` at ``path`` (a wildcard matches any key); [] when none."""
        node: _Node | None = self._root
        wildcards = _NO_WILDCARDS
        for key in path:
            node, wildcards = node.step(key, wildcards)
            if node is None:
                return []
        return list(node.index_on)

    def __repr__(self) -> str:
        return f"RuleSet({json.dumps(self._source)[:80]})"


class _WriteEvaluator:
    """Evaluates the rules of one write: ``root`` is the old tree, ``newData`` comes from the new one."""

    __slots__ = ("old_root", "new_root", "path", "auth", "now", "_root_snapshot")

    def __init__(self, old_root: Any, new_root: Any, path: tuple[str, ...], auth: Any, now: int) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.path = path
        self.auth = auth
        self.now = now
        self._root_snapshot: Snapshot | None = None

    def check(self, rule: _Rule, depth: int, old: Any, new: Any, wildcards: dict[str, str],
              location: tuple[str, ...] | None = None) -> bool:
        if rule is True or rule is False:
            return rule
        if self._root_snapshot is None:
            self._root_snapshot = Snapshot(self.old_root, (), self.old_root)
        where = self.path[:depth] if location is None else location
        ctx = Context(auth=self.auth, now=self.now, root=self._root_snapshot, data=Snapshot(self.old_root, where, old),
                      new_data=Snapshot(self.new_root, where, new), wildcards=wildcards, query=None)
        return bool(rule(ctx))

    def validate_below(self, node: _Node, location: tuple[str, ...], old: Any, new: Any,
                       wildcards: dict[str, str]) -> bool:
        """Run the ``.validate`` rules of every descendant of ``node`` that has new data (``new`` is not None)."""
        if not isinstance(new, dict):
            return True
        for key, child in node.children.items():
            child_new = new.get(key)
            if child_new is not None and not self._validate_at(child, location + (key,), _child_value(old, key),
                                                               child_new, wildcards):
                return False
        if node.wildcard is not None:
            assert node.wildcard_node is not None
            name, wild_node = node.wildcard, node.wildcard_node
            if wild_node.validate is None and not wild_node.validates_below:
                return True
            for key, child_new in new.items():
                if key in node.children or child_new is None:
                    continue
                if not self._validate_at(wild_node, location + (key,), _child_value(old, key), child_new,
                                         {**wildcards, name: key}):
                    return False
        return True

    def _validate_at(self, node: _Node, location: tuple[str, ...], old: Any, new: Any,
                     wildcards: dict[str, str]) -> bool:
        if node.validate is not None and not self.check(node.validate, len(location), old, new, wildcards, location):
            return False
        if node.validates_below:
            return self.validate_below(node, location, old, new, wildcards)
        return True


# ---------------------------------------------------------------------------------------------------------------
# Compiling the rules tree


def _compile_node(obj: dict[str, Any], where: str, wildcards: tuple[str, ...], depth: int) -> _Node:
    if depth > MAX_RULES_DEPTH:
        raise RulesParseError(f"Parse error at {where}: the rules are nested more than {MAX_RULES_DEPTH} levels deep")
    node = _Node()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise RulesParseError(f"Parse error at {where}: a key must be a string, not {key!r}")
        location = f"{where}/{key}"
        if key.startswith("."):
            if key not in _RULE_KEYS:
                known = ", ".join(sorted(_RULE_KEYS))
                raise RulesParseError(f"Parse error at {location}: unknown rule key {key!r} (allowed: {known})")
            if key == ".indexOn":
                node.index_on = _index_on(value, location)
            else:
                setattr(node, key[1:], _compile_rule(value, location, key, wildcards))
            continue
        _check_child_key(key, where)
        if not isinstance(value, dict):
            raise RulesParseError(f"Parse error at {location}: expected an object of rules, got {_json_kind(value)}")
        if key.startswith("$"):
            if node.wildcard is not None:
                raise RulesParseError(f"Parse error at {location}: {where} already has the wildcard "
                                      f"{node.wildcard!r}; only one $wildcard is allowed per level")
            if key in wildcards:
                raise RulesParseError(f"Parse error at {location}: the wildcard {key!r} is already used above")
            node.wildcard = key
            node.wildcard_node = _compile_node(value, location, wildcards + (key,), depth + 1)
        else:
            node.children[key] = _compile_node(value, location, wildcards, depth + 1)
    below = list(node.children.values())
    if node.wildcard_node is not None:
        below.append(node.wildcard_node)
    node.validates_below = any(child.validate is not None or child.validates_below for child in below)
    return node


def _compile_rule(value: Any, location: str, kind: str, wildcards: tuple[str, ...]) -> _Rule:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise RulesParseError(f"Parse error at {location}: a rule must be a boolean or a string expression, "
                              f"not {_json_kind(value)}")
    try:
        return compile_expression(value, Scope(kind, frozenset(wildcards)))
    except ExpressionError as exc:
        raise RulesParseError(f"Parse error at {location}, column {exc.column}: {exc.reason} (in: {value})") from exc


def _index_on(value: Any, location: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise RulesParseError(f"Parse error at {location}: .indexOn must be a child name or a list of child names")
    return tuple(names)


def _check_child_key(key: str, where: str) -> None:
    name = key[1:] if key.startswith("$") else key
    bad = sorted({ch for ch in name if ch in _FORBIDDEN_KEY_CHARS})
    if not name or bad:
        shown = ", ".join(repr(ch) for ch in bad) if bad else "nothing after '$'"
        raise RulesParseError(f"Parse error at {where}/{key}: invalid key {key!r} ({shown})")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _query_view(query: dict[str, Any] | None) -> dict[str, Any]:
    """The ``query`` variable: absent parameters are null (or false for the orderBy flags).

    Live Firebase says ``query.orderByKey == true`` for a read with no ordering at all.
    """
    given = query or {}
    unknown = set(given) - set(QUERY_FIELDS)
    if unknown:
        raise ValueError(f"unknown query parameters {sorted(unknown)}; known: {list(QUERY_FIELDS)}")
    order_child = given.get("orderByChild")
    order_value = bool(given.get("orderByValue"))
    order_priority = bool(given.get("orderByPriority"))
    ordered_otherwise = order_child is not None or order_value or order_priority
    return {
        "orderByKey": bool(given.get("orderByKey")) or not ordered_otherwise,
        "orderByValue": order_value,
        "orderByPriority": order_priority,
        "orderByChild": order_child,
        "startAt": given.get("startAt"),
        "endAt": given.get("endAt"),
        "equalTo": given.get("equalTo"),
        "limitToFirst": given.get("limitToFirst"),
        "limitToLast": given.get("limitToLast"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Rules file text


class _BadJsonError(ValueError):
    """JSON that Python would accept but a rules file may not contain (a repeated key, NaN)."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _BadJsonError(f"the key {key!r} appears twice in the same object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _BadJsonError(f"{name} is not valid JSON")


def _strip_comments(text: str) -> str:
    """Replace ``//`` and ``/* */`` comments outside JSON strings by spaces (newlines kept, so positions hold)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j == -1:
                raise RulesParseError("Parse error: a /* comment is never closed")
            out.append("".join(c if c == "\n" else " " for c in text[i:j + 2]))
            i = j + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
