"""Queries of the emulator as pure functions: REST query parameters -> ``Query``, and ``Query`` applied to a value.

Firebase's ordering, shared by sorting and by the range filters:

- by key (``$key``): keys that are 32-bit integers in decimal first, numerically (the same number written longer,
  ``"07"`` after ``"7"``), then the other keys as strings;
- by value (``$value``) or by a child path: null (a missing child, or a child that is not an object on the way),
  false, true, numbers, strings, objects; ties broken by key;
- by priority (``$priority``): every priority is null here, so children come in key order and the bounds compare
  with null.

Strings compare by UTF-16 code units, as the service and its JavaScript client do. Range bounds follow the same
order, so ``startAt=5`` also keeps every string and object, and ``endAt=null`` keeps only the nulls. Limits apply
after the range. The result is an object (its insertion order is the query order, though clients sort again:
firebase-admin re-sorts ``$key`` results by plain string comparison, so it shows ``"10"`` before ``"9"``).

Unverified choices, made on the side of a clear error: a limit of 0 is refused (firebase-admin would send it; the
JavaScript client refuses it); when ordering by key the bounds must be strings, as every Firebase client insists.
Whether an index exists (``.indexOn``) is for the caller to decide; ``required_index`` and
``missing_index_message`` give what it needs.
"""

from __future__ import annotations

import enum
import heapq
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .tree import DataError, Path, format_path, normalize_numbers, parse_path


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""A bound that was not given (``None`` is JSON null, a real bound)."""

ORDER_BY_KEY = "$key"
ORDER_BY_VALUE = "$value"
ORDER_BY_PRIORITY = "$priority"

QUERY_PARAMS = ("orderBy", "startAt", "startAfter", "endAt", "endBefore", "equalTo", "limitToFirst", "limitToLast")

_INT32_KEY = re.compile(r"-?0*[0-9]{1,10}")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT_START = frozenset("-0123456789")
_LIMIT = re.compile(r"[0-9]{1,20}")
# Limits are 32-bit signed integers.
MAX_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Query:
    """One parsed query. Bounds are JSON primitives (``None`` is null) or ``UNSET``; limits are ints or ``None``.

    ``order_by`` is ``"$key"``, ``"$value"``, ``"$priority"``, or a child path as a tuple of keys.
    """

    order_by: str | Path
    start_at: Any = UNSET
    start_after: Any = UNSET
    end_at: Any = UNSET
    end_before: Any = UNSET
    equal_to: Any = UNSET
    limit_to_first: int | None = None
    limit_to_last: int | None = None

    @property
    def has_filter(self) -> bool:
        """Whether the query keeps only some children (any bound or limit), not only orders them."""
        bounds = (self.start_at, self.start_after, self.end_at, self.end_before, self.equal_to)
        limits = (self.limit_to_first, self.limit_to_last)
        return any(bound is not UNSET for bound in bounds) or any(limit is not None for limit in limits)


# --- parsing -------------------------------------------------------------------------------------------------------


def parse_query(params: Mapping[str, str]) -> Query | None:
    """The query in a request's parameters (already percent-decoded), or ``None`` when it has none.

    Parameters other than the query's own (``shallow``, ``print``, ``ns``, ...) are ignored. ``orderBy`` and the bounds
    are JSON, as firebase-admin sends them (``orderBy="height"``, ``startAt=3``, ``equalTo="x"``); limits are plain
    positive integers.

    Raises:
        DataError: with the service's message: ``orderBy must be a valid JSON encoded path``, ``orderBy must be
            defined when other query parameters are defined``, ``Constraint index field must be a JSON primitive``,
            ``limitToFirst must be a positive integer``, ``equalTo cannot be specified in addition to ...``, and
            the like.
    """
    present = {name: params[name] for name in QUERY_PARAMS if name in params}
    if not present:
        return None
    if "orderBy" not in present:
        raise DataError("orderBy must be defined when other query parameters are defined")
    order_by = _parse_order_by(present["orderBy"])
    bounds = {
        field: _parse_bound(name, present[name])
        for name, field in (
            ("startAt", "start_at"),
            ("startAfter", "start_after"),
            ("endAt", "end_at"),
            ("endBefore", "end_before"),
            ("equalTo", "equal_to"),
        )
        if name in present
    }
    limits = {
        field: _parse_limit(name, present[name])
        for name, field in (("limitToFirst", "limit_to_first"), ("limitToLast", "limit_to_last"))
        if name in present
    }
    if len(limits) == 2:
        raise DataError("limitToFirst and limitToLast cannot both be specified")
    if "equal_to" in bounds and len(bounds) > 1:
        raise DataError("equalTo cannot be specified in addition to startAfter, startAt, endAt, or endBefore")
    if "start_at" in bounds and "start_after" in bounds:
        raise DataError("startAt and startAfter cannot both be specified")
    if "end_at" in bounds and "end_before" in bounds:
        raise DataError("endAt and endBefore cannot both be specified")
    if order_by == ORDER_BY_KEY:
        for bound in bounds.values():
            if not isinstance(bound, str):
                raise DataError(
                    "When ordering by key, startAt, startAfter, endAt, endBefore and equalTo must be strings "
                    f"(got {json.dumps(bound)})"
                )
    if order_by == ORDER_BY_PRIORITY:
        for bound in bounds.values():
            if isinstance(bound, bool):
                raise DataError(
                    "When ordering by priority, startAt, startAfter, endAt, endBefore and equalTo must be a valid "
                    f"priority (null, a number or a string), not {json.dumps(bound)}"
                )
    return Query(order_by=order_by, **bounds, **limits)


def _parse_order_by(raw: str) -> str | Path:
    error = DataError("orderBy must be a valid JSON encoded path")
    try:
        value = json.loads(raw)
    except ValueError:
        raise error from None
    if not isinstance(value, str):
        raise error
    if value in (ORDER_BY_KEY, ORDER_BY_VALUE, ORDER_BY_PRIORITY):
        return value
    try:
        path = parse_path(value)
    except DataError:
        raise error from None
    if not path:
        raise error
    return path


def _parse_bound(name: str, raw: str) -> object:
    error = DataError(f"Constraint index field must be a JSON primitive ({name}={raw})")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        raise error from None
    if isinstance(value, (dict, list)) or (isinstance(value, float) and not math.isfinite(value)):
        raise error
    return normalize_numbers(value)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_limit(name: str, raw: str) -> int:
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise DataError(f"{name} must be a positive integer of at most {MAX_LIMIT} ({name}={raw[:100]})")
    return int(raw)


# --- ordering ------------------------------------------------------------------------------------------------------


def _utf16(text: str) -> bytes:
    # Big-endian UTF-16 bytes compare like the string's UTF-16 code units.
    return text.encode("utf-16-be", "surrogatepass")


def key_order(key: str) -> tuple:
    """A sort key putting child keys in Firebase's key order (32-bit integers first, then strings)."""
    if key[:1] in _INT_START and _INT32_KEY.fullmatch(key):
        number = int(key)
        if _INT32_MIN <= number <= _INT32_MAX:
            return (0, number, len(key), _utf16(key))
    return (1, 0, 0, _utf16(key))


def value_order(value: object) -> tuple:
    """A sort key putting values in Firebase's type order: null, false, true, numbers, strings, objects."""
    if value is None:
        return (0,)
    if value is False:
        return (1,)
    if value is True:
        return (2,)
    if isinstance(value, (int, float)):
        return (3, value)
    if isinstance(value, str):
        return (4, _utf16(value))
    return (5,)


def index_value(query: Query, key: str, child: object) -> object:
    """What ``query`` orders the child ``key`` by: the key, the value, a nested child (or ``None``), or ``None``."""
    order_by = query.order_by
    if order_by == ORDER_BY_KEY:
        return key
    if order_by == ORDER_BY_VALUE:
        return child
    if order_by == ORDER_BY_PRIORITY:
        return None
    node = child
    for segment in order_by:
        if not isinstance(node, dict):
            return None
        node = node.get(segment)
    return node


def sort_key_for(query: Query, key: str, child: object) -> tuple:
    """The full sort key of one child under ``query``: its index in type (or key) order, then its key."""
    if query.order_by == ORDER_BY_KEY:
        return (key_order(key),)
    return (value_order(index_value(query, key, child)), key_order(key))


def _bound_order(query: Query, bound: object) -> tuple:
    return key_order(bound) if query.order_by == ORDER_BY_KEY else value_order(bound)  # type: ignore[arg-type]


# --- applying ------------------------------------------------------------------------------------------------------


def apply_query(value: Any, query: Query) -> Any:
    """The children of ``value`` that ``query`` selects, as an object in query order, or ``None`` when none match.

    ``value`` is in stored form. A primitive is returned as it is when the query only orders, and ``None`` when it
    filters (a leaf has no children to keep).
    """
    if not isinstance(value, dict):
        return None if query.has_filter else value
    in_range = _range_test(query)
    ranked = []
    for key, child in value.items():
        order = sort_key_for(query, key, child)
        if in_range(order[0]):
            ranked.append((order, key, child))
    by_order = operator.itemgetter(0)
    if query.limit_to_first is not None:
        ranked = heapq.nsmallest(query.limit_to_first, ranked, key=by_order)
    elif query.limit_to_last is not None:
        ranked = heapq.nlargest(query.limit_to_last, ranked, key=by_order)[::-1]
    else:
        ranked.sort(key=by_order)
    return {key: child for _order, key, child in ranked} or None


def _range_test(query: Query) -> Callable[[tuple], bool]:
    """A test of one child's index (in sort-key form) against the query's bounds, with the bounds computed once."""
    low, high = query.start_at, query.end_at
    if query.equal_to is not UNSET:
        low = high = query.equal_to
    checks: list[Callable[[tuple], bool]] = []
    if low is not UNSET:
        checks.append(_bound_check(operator.ge, query, low))
    if query.start_after is not UNSET:
        checks.append(_bound_check(operator.gt, query, query.start_after))
    if high is not UNSET:
        checks.append(_bound_check(operator.le, query, high))
    if query.end_before is not UNSET:
        checks.append(_bound_check(operator.lt, query, query.end_before))
    return lambda index: all(check(index) for check in checks)


def _bound_check(compare: Callable[[tuple, tuple], bool], query: Query, bound: object) -> Callable[[tuple], bool]:
    limit = _bound_order(query, bound)
    return lambda index: compare(index, limit)


# --- for the rules engine and the server ---------------------------------------------------------------------------


def _bound_var(bound: object) -> object:
    return None if bound is UNSET else bound


def rules_query_vars(query: Query | None) -> dict[str, object]:
    """The rules language's ``query`` object for a request: ``orderByKey``, ``orderByChild``, ..., ``limitToLast``.

    Absent parts are ``False`` (the ``orderBy*`` flags) or ``None``; ``orderByChild`` is the slash path or ``None``.
    ``startAfter`` and ``endBefore`` have no variable of their own; they show as ``startAt`` / ``endAt``.
    """
    if query is None:
        query = Query(order_by="")
    child = "/".join(query.order_by) if isinstance(query.order_by, tuple) else None
    start = query.start_at if query.start_at is not UNSET else query.start_after
    end = query.end_at if query.end_at is not UNSET else query.end_before
    return {
        "orderByKey": query.order_by == ORDER_BY_KEY,
        "orderByChild": child,
        "orderByValue": query.order_by == ORDER_BY_VALUE,
        "orderByPriority": query.order_by == ORDER_BY_PRIORITY,
        "startAt": _bound_var(start),
        "endAt": _bound_var(end),
        "equalTo": _bound_var(query.equal_to),
        "limitToFirst": query.limit_to_first,
        "limitToLast": query.limit_to_last,
    }


def required_index(query: Query) -> str | None:
    """The ``.indexOn`` entry the service wants for ``query`` (``"a/b"`` or ``".value"``), or ``None`` for key order."""
    if isinstance(query.order_by, tuple):
        return "/".join(query.order_by)
    if query.order_by == ORDER_BY_VALUE:
        return ".value"
    return None


def missing_index_message(query: Query, path: Path) -> str:
    """The service's 400 message for a query at ``path`` whose index is not declared in the rules."""
    return f'Index not defined, add ".indexOn": "{required_index(query)}", for path "{format_path(path)}", to the rules'
