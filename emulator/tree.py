"""The emulator's data tree as pure functions: paths, write validation, normalization, server values, copy-on-write.

The database is one JSON tree held in its *stored form*:

- an object is a ``dict`` with ``str`` keys, never empty, never holding ``None``;
- arrays do not exist: a written list becomes an object keyed ``"0"``, ``"1"``, ... (``to_output`` turns mostly
  dense ones back into lists, as the service does);
- a number is an ``int`` or a ``float``. The service keeps every number as a double and prints integral ones without
  a fraction, so an integral float (``1.0``) is stored as the ``int`` ``1``; other ints are kept exact (the service
  would round integers beyond 2**53);
- "absent" is ``None``; a ``None`` child means "delete".

Priorities are not supported: ``.priority`` keys are accepted (the service allows them) and dropped, so every node
has a null priority. ``{".value": x}`` is unwrapped to ``x``.

Writes are copy-on-write: ``set_at`` and ``update_at`` return a new root that shares every untouched subtree with the
old one, so a caller can keep old roots as snapshots, compare subtrees by identity and roll back by keeping the old
root. Nothing here does I/O.

A typical write::

    value = prepare_write(body, path, get(root, path), now_ms)   # validate + server values + normalize
    root = set_at(root, path, value)

``DataError`` is a client mistake; the server answers it with 400 ``{"error": str(e)}``. Its messages start like the
service's ("Invalid path: ...", "Invalid data; ...") but name the offending key and location instead of a JSON text
position.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

Path = tuple[str, ...]

MAX_KEY_BYTES = 768
MAX_DEPTH = 32
MAX_STRING_BYTES = 10 * 1024 * 1024

# Keys that mean something to the service rather than name a child.
VALUE_KEY = ".value"
PRIORITY_KEY = ".priority"
SERVER_VALUE_KEY = ".sv"

_FORBIDDEN_KEY_CHAR = re.compile(r"[.$#\[\]/\x00-\x1f\x7f]")
_KEY_RULE = "Key value can't be empty, be longer than 768 bytes, or contain $ # [ ] / . or ASCII control characters"

# Integral floats within this bound are stored as ints (doubles hold every integer up to 2**53 exactly).
_EXACT_FLOAT_INT = 2**53


class DataError(ValueError):
    """The client sent a path, a value or a query that the database refuses; the message says what is wrong."""


# --- paths and keys ------------------------------------------------------------------------------------------------


def _utf8_size(text: str) -> int | None:
    """The UTF-8 length of ``text``, or ``None`` when it holds a lone surrogate (JSON allows one; UTF-8 does not)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _key_problem(key: object) -> str | None:
    """Why ``key`` cannot name a child, or ``None`` when it can."""
    if not isinstance(key, str):
        return f"key {key!r} is not a string"
    if not key:
        return "a key is empty"
    size = len(key) if key.isascii() else _utf8_size(key)
    if size is None:
        return f"key {key!r} is not valid Unicode (it holds a lone surrogate)"
    if size > MAX_KEY_BYTES:
        return f"key {key[:40]!r}... is longer than {MAX_KEY_BYTES} bytes"
    bad = _FORBIDDEN_KEY_CHAR.search(key)
    if bad is not None:
        return f"key {key!r} contains the forbidden character {bad.group()!r}"
    return None


def format_path(path: Path) -> str:
    """``("a", "b")`` -> ``"/a/b"``; the root is ``"/"``."""
    return "/" + "/".join(path)


def parse_path(raw: str) -> Path:
    """Split a slash path (already percent-decoded) into its keys, checking each one.

    Leading, trailing and doubled slashes are ignored, as the SDK does: ``"/a/b"``, ``"a/b/"`` and ``"a//b"`` are all
    ``("a", "b")``; ``""`` and ``"/"`` are the root ``()``.

    Raises:
        DataError: a key is longer than 768 bytes of UTF-8 or holds ``. $ # [ ]`` or an ASCII control character.
    """
    if not isinstance(raw, str):
        raise DataError(f"Invalid path: {raw!r} is not a string")
    path = tuple(segment for segment in raw.split("/") if segment)
    for key in path:
        problem = _key_problem(key)
        if problem is not None:
            raise DataError(f"Invalid path: {problem} ({_KEY_RULE})")
    return path


# --- validation ----------------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_write(value: object, path: Path) -> None:
    """Check that ``value`` (JSON from a client) may be written at ``path``.

    Checks every key (the special ``.value``, ``.priority`` and ``.sv`` only where the service allows them), that no
    leaf is deeper than 32 keys counting ``path``, that strings are at most 10 MB of UTF-8, and that the value is
    JSON (no NaN or infinity, no non-string keys). Server values are checked for shape here and for meaning in
    ``resolve_server_values``.

    Raises:
        DataError: naming the first problem found and where it is.
    """
    if len(path) > MAX_DEPTH:
        raise DataError(f"Invalid path: {format_path(path)} is deeper than the maximum depth of {MAX_DEPTH} keys")
    _validate(value, list(path))


def _validate(value: object, path: list[str]) -> None:
    # ``path`` is the location of ``value``, extended in place on the way down and named only in errors.
    if value is None or isinstance(value, bool):
        pass
    elif isinstance(value, str):
        size = len(value) if value.isascii() else _utf8_size(value)
        if size is None:
            raise DataError(f"Invalid data; the string at {_where(path)} is not valid Unicode (a lone surrogate)")
        if size > MAX_STRING_BYTES:
            raise DataError(
                f"Invalid data; the string at {_where(path)} is longer than 10 MB ({MAX_STRING_BYTES} bytes of UTF-8)"
            )
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(f"Invalid data; the number at {_where(path)} is not finite ({value!r})")
    elif isinstance(value, (list, tuple)):
        if value:
            _check_depth(path)
        for index, child in enumerate(value):
            path.append(str(index))
            _validate(child, path)
            path.pop()
    elif isinstance(value, dict):
        if SERVER_VALUE_KEY in value:
            extra = [k for k in value if k not in (SERVER_VALUE_KEY, PRIORITY_KEY)]
            if extra:
                raise DataError(
                    f"Invalid data; the server value at {_where(path)} cannot have other children ({extra[0]!r})"
                )
            return
        if VALUE_KEY in value:
            extra = [k for k in value if k not in (VALUE_KEY, PRIORITY_KEY)]
            if extra:
                raise DataError(
                    f"Invalid data; a node with .value cannot have children ({_where(path)} has {extra[0]!r})"
                )
            inner = value[VALUE_KEY]
            if isinstance(inner, dict) and VALUE_KEY in inner:
                raise DataError(f"Invalid data; the .value at {_where(path)} holds another .value")
            _validate(inner, path)
            return
        if value.keys() - {PRIORITY_KEY}:
            _check_depth(path)
        for key, child in value.items():
            if key == PRIORITY_KEY:
                continue
            problem = _key_problem(key)
            if problem is not None:
                raise DataError(f"Invalid data at {_where(path)}: {problem}. {_KEY_RULE}")
            path.append(key)
            _validate(child, path)
            path.pop()
    else:
        raise DataError(f"Invalid data; the value at {_where(path)} is not JSON ({type(value).__name__})")


def _where(path: list[str]) -> str:
    return format_path(tuple(path))


def _check_depth(path: list[str]) -> None:
    # Called for an object that has children: they sit at depth len(path) + 1.
    if len(path) + 1 > MAX_DEPTH:
        raise DataError(
            f"Invalid data; the data at {_where(path)} has children deeper than the maximum depth of {MAX_DEPTH} keys"
        )


# --- normalization -------------------------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Turn validated client JSON into the stored form (see the module docstring); the input is not modified.

    Lists become objects keyed by index, ``None`` children are dropped, objects left empty vanish (become ``None``),
    ``{".value": x}`` is unwrapped, ``.priority`` is dropped, integral floats become ints. Server-value placeholders
    (``{".sv": ...}``) are kept as they are, for ``resolve_server_values``. Idempotent.
    """
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
            return int(value)
        return value
    if isinstance(value, (list, tuple)):
        items: Any = ((str(i), child) for i, child in enumerate(value))
    elif isinstance(value, dict):
        if SERVER_VALUE_KEY in value:
            return {SERVER_VALUE_KEY: value[SERVER_VALUE_KEY]}
        if VALUE_KEY in value:
            return normalize(value[VALUE_KEY])
        items = value.items()
    else:
        return value
    out = {}
    for key, child in items:
        if key == PRIORITY_KEY:
            continue
        child = normalize(child)
        if child is not None:
            out[key] = child
    return out or None


# --- server values -------------------------------------------------------------------------------------------------


def resolve_server_values(value: Any, existing: Any, now_ms: int) -> Any:
    """Replace every server value inside ``value``; the input is not modified.

    ``{".sv": "timestamp"}`` becomes ``now_ms``; ``{".sv": {"increment": n}}`` becomes the number stored at the same
    spot plus ``n``, or ``n`` when nothing or something other than a number is stored there. ``existing`` is the
    stored value at the location ``value`` is written to. Works on raw client JSON (lists included: index ``i``
    meets the stored child ``"i"``) and on normalized values alike.

    Raises:
        DataError: an unknown or malformed server value.
    """
    if isinstance(value, dict):
        if SERVER_VALUE_KEY in value:
            return _server_value(value[SERVER_VALUE_KEY], existing, now_ms)
        if VALUE_KEY in value:
            return {**value, VALUE_KEY: resolve_server_values(value[VALUE_KEY], existing, now_ms)}
        return {key: resolve_server_values(child, _child(existing, key), now_ms) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_server_values(child, _child(existing, str(i)), now_ms) for i, child in enumerate(value)]
    return value


def _child(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, dict) else None


def _server_value(spec: object, existing: object, now_ms: int) -> object:
    if spec == "timestamp":
        return now_ms
    if isinstance(spec, dict) and spec.keys() == {"increment"}:
        delta = spec["increment"]
        if not _is_number(delta) or (isinstance(delta, float) and not math.isfinite(delta)):
            raise DataError(f"Invalid data; the server value increment must be a number, not {delta!r}")
        if _is_number(existing):
            return normalize(existing + delta)  # type: ignore[operator]
        return normalize(delta)
    raise DataError(
        f'Invalid data; unknown server value {{".sv": {json.dumps(spec)}}} '
        '(supported: "timestamp" and {"increment": <number>})'
    )


def prepare_write(value: Any, path: Path, existing: Any, now_ms: int) -> Any:
    """Validate ``value`` for ``path``, resolve its server values against ``existing``, and normalize it.

    The usual first step of a PUT or POST; the result can go straight into ``set_at``.

    Raises:
        DataError: as ``validate_write`` and ``resolve_server_values``.
    """
    validate_write(value, path)
    return normalize(resolve_server_values(value, existing, now_ms))


# --- reading and writing the tree ----------------------------------------------------------------------------------


def get(root: Any, path: Path) -> Any:
    """The stored value at ``path``, or ``None`` when nothing is there."""
    node = root
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


def set_at(root: Any, path: Path, value: Any) -> Any:
    """A new root with ``value`` (stored form; ``None`` deletes) at ``path``; ``root`` itself is not modified.

    Only the objects along ``path`` are copied; every other subtree is shared with ``root``. Parents that become
    empty vanish, missing parents are created, and a primitive on the way is replaced by an object. Deleting what is
    not there returns ``root`` itself.
    """
    if not path:
        return value if value != {} else None
    key, rest = path[0], path[1:]
    node = root if isinstance(root, dict) else None
    old_child = node.get(key) if node is not None else None
    new_child = set_at(old_child, rest, value)
    if new_child is old_child and (node is not None or new_child is None):
        return root
    out = dict(node) if node is not None else {}
    if new_child is None:
        out.pop(key, None)
    else:
        out[key] = new_child
    return out or None


def _parse_update_key(raw: object) -> Path | None:
    """The relative path of one multi-path update key, or ``None`` for a ``.priority`` key (dropped)."""
    if not isinstance(raw, str):
        raise DataError(f"Invalid data; update key {raw!r} is not a string")
    segments = [segment for segment in raw.split("/") if segment]
    dropped = bool(segments) and segments[-1] == PRIORITY_KEY
    try:
        path = parse_path("/".join(segments[:-1] if dropped else segments))
    except DataError as exc:
        raise DataError(f"Invalid data; update key {raw!r} is not a valid path: {exc}") from None
    if dropped:
        return None
    if not path:
        raise DataError(f"Invalid data; update key {raw!r} must name a child path")
    return path


def update_paths(changes: Mapping[str, object]) -> list[Path]:
    """The relative paths a multi-path update writes, sorted, after checking them.

    ``.priority`` keys (``"a/.priority"``) are dropped, as priorities are not supported.

    Raises:
        DataError: ``changes`` is not an object, a key is invalid or names no child, or two keys overlap (one is
            the other or inside it).
    """
    return [relative for relative, _raw, _value in _parse_update(changes)]


def _parse_update(changes: Mapping[str, object]) -> list[tuple[Path, str, object]]:
    if not isinstance(changes, Mapping):
        raise DataError("Invalid data; a multi-path update must be a JSON object of paths to values")
    parsed: list[tuple[Path, str, object]] = []
    for raw, value in changes.items():
        relative = _parse_update_key(raw)
        if relative is not None:
            parsed.append((relative, raw, value))
    parsed.sort(key=lambda item: item[0])
    for (first, first_raw, _), (second, second_raw, _) in zip(parsed, parsed[1:]):
        # Sorted tuples put a path right before the paths inside it, so checking neighbours finds every overlap.
        if second[: len(first)] == first:
            raise DataError(
                f"Invalid data; the paths of a multi-path update overlap: {first_raw!r} and {second_raw!r}"
            )
    return parsed


def update_at(
    root: Any, path: Path, changes: Mapping[str, object], *, now_ms: int | None = None
) -> Any:
    """Apply a multi-path update (a PATCH) at ``path``, all or nothing, and return the new root.

    Each key of ``changes`` is a slash path relative to ``path`` whose value replaces what is there (``None``
    deletes). Values are client JSON: they are validated, their server values resolved against the old tree (with
    ``now_ms``, default the current time) and normalized here. Every key and value is checked before anything is
    applied, so an error leaves nothing half written. ``update_paths`` lists the paths it writes.

    Raises:
        DataError: ``changes`` is not an object, a key is invalid or empty, two keys overlap (one is the other or
            inside it), or a value is invalid.
    """
    parsed = _parse_update(changes)
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    writes = []
    for relative, _raw, value in parsed:
        target = path + relative
        writes.append((target, prepare_write(value, target, get(root, target), now_ms)))
    for target, value in writes:
        root = set_at(root, target, value)
    return root


# --- output --------------------------------------------------------------------------------------------------------


def _array_index(key: str) -> int | None:
    if key.isdigit() and key.isascii() and (key == "0" or key[0] != "0"):
        return int(key)
    return None


def to_output(value: Any) -> Any:
    """The stored form as JSON for a client: objects whose keys are all array indices become lists, recursively.

    An object becomes a list when every key is a non-negative integer without leading zeros and more than half of
    the slots ``0..max`` are present, as the service does; missing slots are ``None``. Parts that need no change are
    returned as they are (shared with the stored tree), so the result must be treated as read-only.
    """
    if not isinstance(value, dict):
        return value
    out = value
    for key, child in value.items():
        if isinstance(child, dict):
            converted = to_output(child)
            if converted is not child:
                if out is value:
                    out = dict(value)
                out[key] = converted
    first = next(iter(out))
    if not first[0].isdigit():  # the common case: not an array, decided without looking at every key
        return out
    indices = [_array_index(key) for key in out]
    if None in indices:
        return out
    top = max(indices)  # type: ignore[type-var]
    if 2 * len(indices) <= top + 1:  # type: ignore[operator]
        return out
    array: list[Any] = [None] * (top + 1)  # type: ignore[operator]
    for index, child in zip(indices, out.values()):
        array[index] = child  # type: ignore[index]
    return array


def shallow(value: Any) -> Any:
    """The answer to ``?shallow=true``: each child of an object replaced by ``True``; primitives as they are."""
    if isinstance(value, dict):
        return {key: True for key in value}
    return value


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal stored values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize_numbers(value: Any) -> Any:
    """``value`` with every integral float (within 2**53) replaced by the equal int, recursively."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT_FLOAT_INT else value
    if isinstance(value, dict):
        return {key: normalize_numbers(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize_numbers(child) for child in value]
    return value


def etag(value: Any) -> str:
    """A stable ETag for a stored value (``None`` included): URL-safe base64 of the SHA-1 of its canonical JSON.

    Stored values hold no integral floats, so equal values have equal ETags; ``1.0`` straight from a client would
    differ from ``1`` until normalized.
    """
    digest = hashlib.sha1(canonical_json(value).encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# --- change detection ----------------------------------------------------------------------------------------------


def changed_paths(old_root: Any, new_root: Any, path: Path = ()) -> list[Path]:
    """The highest locations at or under ``path`` whose values differ between two roots, in sorted order.

    Where both sides are objects the comparison descends into their children; anywhere else a difference reports
    that location. Subtrees shared by copy-on-write are skipped by identity, so this is cheap after a small write.
    The result is ``[]`` when nothing at or under ``path`` changed, and ``[path]`` when its value changed kind.
    """
    out: list[Path] = []
    _diff(get(old_root, path), get(new_root, path), path, out)
    out.sort()
    return out


def _diff(old: Any, new: Any, path: Path, out: list[Path]) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key, child in new.items():
            _diff(old.get(key), child, path + (key,), out)
        for key in old.keys() - new.keys():
            out.append(path + (key,))
    elif old != new or type(old) is not type(new):
        out.append(path)
