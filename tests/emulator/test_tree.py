"""Tests for emulator.tree: keys, limits, normalization, server values, copy-on-write writes, output form."""

from __future__ import annotations

import random

import pytest

from emulator.tree import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_STRING_BYTES,
    DataError,
    changed_paths,
    etag,
    get,
    parse_path,
    prepare_write,
    resolve_server_values,
    set_at,
    shallow,
    to_output,
    update_at,
    update_paths,
    validate_write,
)
from emulator.tree import normalize

FORBIDDEN = [".", "$", "#", "[", "]"] + [chr(c) for c in range(0x20)] + ["\x7f"]


# --- parse_path ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("/", ()),
        ("//", ()),
        ("/a/b", ("a", "b")),
        ("a/b/", ("a", "b")),
        ("a//b", ("a", "b")),
        ("/relay/negotiation/u1/p-1", ("relay", "negotiation", "u1", "p-1")),
        ("/émoji/😀", ("émoji", "😀")),
        ("/a b/c:d/e%f", ("a b", "c:d", "e%f")),
    ],
)
def test_parse_path_splits_on_slashes_and_drops_empty_segments(raw, expected):
    assert parse_path(raw) == expected


@pytest.mark.parametrize("char", FORBIDDEN)
def test_parse_path_refuses_every_forbidden_character(char):
    with pytest.raises(DataError, match="Invalid path"):
        parse_path(f"/ok/bad{char}key")


def test_parse_path_allows_a_segment_of_exactly_768_bytes_and_refuses_769():
    assert parse_path("/" + "é" * 384) == ("é" * 384,)  # 2 bytes each
    with pytest.raises(DataError, match="768"):
        parse_path("/" + "a" * 767 + "é")


def test_parse_path_refuses_non_strings():
    with pytest.raises(DataError):
        parse_path(None)  # type: ignore[arg-type]


# --- validate_write ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", FORBIDDEN + ["/"])
def test_validate_write_refuses_every_forbidden_character_in_a_key(char):
    with pytest.raises(DataError, match="Invalid data"):
        validate_write({"fine": {f"x{char}y": 1}}, ())


def test_validate_write_names_the_bad_key_and_where_it_is():
    with pytest.raises(DataError) as info:
        validate_write({"a": {"b.c": 1}}, ("root",))
    assert "b.c" in str(info.value)
    assert "/root/a" in str(info.value)


def test_validate_write_refuses_an_empty_key():
    with pytest.raises(DataError, match="empty"):
        validate_write({"": 1}, ())


def test_validate_write_key_length_limit_is_768_utf8_bytes():
    validate_write({"k" * MAX_KEY_BYTES: 1}, ())
    validate_write({"€" * 256: 1}, ())  # 3 bytes each = 768
    with pytest.raises(DataError, match="768"):
        validate_write({"k" * (MAX_KEY_BYTES + 1): 1}, ())
    with pytest.raises(DataError, match="768"):
        validate_write({"€" * 256 + "a": 1}, ())


def test_validate_write_allows_the_special_keys_where_they_belong():
    validate_write({".value": 3, ".priority": 1}, ("a",))
    validate_write({"a": {".sv": "timestamp"}, "b": {".sv": {"increment": 2}}}, ())
    validate_write({"a": 1, ".priority": "p"}, ())


@pytest.mark.parametrize(
    "value",
    [
        {".sv": "timestamp", "other": 1},
        {".value": 1, "child": 2},
        {".foo": 1},
        {"$wild": 1},
    ],
)
def test_validate_write_refuses_special_keys_out_of_place(value):
    with pytest.raises(DataError):
        validate_write(value, ())


def _nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(depth):
        value = {f"k{i}": value}
    return value


def test_validate_write_depth_counts_path_and_value_up_to_32():
    validate_write(_nested(MAX_DEPTH), ())
    validate_write(_nested(2), tuple(f"p{i}" for i in range(MAX_DEPTH - 2)))
    validate_write("leaf", tuple(f"p{i}" for i in range(MAX_DEPTH)))
    with pytest.raises(DataError, match="32"):
        validate_write(_nested(MAX_DEPTH + 1), ())
    with pytest.raises(DataError, match="32"):
        validate_write(_nested(3), tuple(f"p{i}" for i in range(MAX_DEPTH - 2)))
    with pytest.raises(DataError, match="32"):
        validate_write([[[1]]], tuple(f"p{i}" for i in range(MAX_DEPTH - 2)))


def test_validate_write_server_value_and_value_wrapper_do_not_add_depth():
    path = tuple(f"p{i}" for i in range(MAX_DEPTH - 1))
    validate_write({"leaf": {".sv": "timestamp"}}, path)
    validate_write({".value": {"leaf": 1}}, path)


def test_validate_write_stops_at_the_depth_limit_instead_of_recursing_forever():
    for wrap in (lambda v: {"k": v}, lambda v: [v]):
        value: object = 1
        for _ in range(5000):
            value = wrap(value)
        with pytest.raises(DataError, match="32"):
            validate_write(value, ())


def test_validate_write_refuses_a_value_wrapper_directly_inside_another():
    validate_write({".value": {"a": {".value": 1}}}, ())
    with pytest.raises(DataError, match=r"\.value"):
        validate_write({".value": {".value": 1}}, ())


def test_validate_write_string_limit_is_10_mb_of_utf8():
    validate_write("a" * MAX_STRING_BYTES, ())
    with pytest.raises(DataError, match="10 MB|10485760"):
        validate_write({"big": "a" * (MAX_STRING_BYTES + 1)}, ())
    with pytest.raises(DataError):
        validate_write("é" * (MAX_STRING_BYTES // 2 + 1), ())


def test_validate_write_refuses_lone_surrogates_that_could_not_be_sent_back_as_utf8():
    with pytest.raises(DataError, match="surrogate"):
        validate_write({"a": "x\ud800y"}, ())
    with pytest.raises(DataError, match="surrogate"):
        validate_write({"k\udfff": 1}, ())
    with pytest.raises(DataError, match="surrogate"):
        parse_path("/a\ud800")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), {1: "int key"}, object(), b"bytes"])
def test_validate_write_refuses_values_that_are_not_json(value):
    with pytest.raises(DataError):
        validate_write({"a": value}, ())


# --- normalize -----------------------------------------------------------------------------------------------------


def test_normalize_keeps_primitives_and_turns_integral_floats_into_ints():
    assert normalize(None) is None
    assert normalize(True) is True
    assert normalize(0) == 0
    assert normalize("s") == "s"
    assert normalize(1.5) == 1.5
    one = normalize(1.0)
    assert one == 1 and type(one) is int
    zero = normalize(-0.0)
    assert zero == 0 and type(zero) is int
    big = normalize(1e300)
    assert big == 1e300 and type(big) is float


def test_normalize_turns_lists_into_index_keyed_objects_and_drops_nulls():
    assert normalize([1, None, 3]) == {"0": 1, "2": 3}
    assert normalize([None, None]) is None
    assert normalize([]) is None
    assert normalize({"a": [{"b": None}, "x"]}) == {"a": {"1": "x"}}


def test_normalize_drops_null_children_and_empty_objects_recursively():
    assert normalize({"a": None, "b": {}, "c": {"d": {}}, "e": 1}) == {"e": 1}
    assert normalize({"a": {"b": {"c": None}}}) is None
    assert normalize({}) is None


def test_normalize_unwraps_value_and_drops_priority():
    assert normalize({".value": 5, ".priority": 1}) == 5
    assert normalize({"a": {".value": {"b": 1}}}) == {"a": {"b": 1}}
    assert normalize({"a": 1, ".priority": 2}) == {"a": 1}
    assert normalize({".priority": 2}) is None


def test_normalize_keeps_server_value_placeholders_for_resolve():
    value = {"t": {".sv": "timestamp"}}
    assert normalize(value) == value


def test_normalize_does_not_modify_its_input():
    value = {"a": [1, None], "b": None, "c": {".value": 1}}
    snapshot = repr(value)
    normalize(value)
    assert repr(value) == snapshot


def test_normalize_is_idempotent_on_random_values():
    rng = random.Random(7)
    for _ in range(200):
        value = _random_json(rng, 4)
        once = normalize(value)
        assert normalize(once) == once
        assert _is_stored_form(once)


def _random_json(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(9 if depth > 0 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-5, 5)
    if kind == 3:
        return rng.choice([0.5, 2.0, -1.25])
    if kind == 4:
        return rng.choice(["", "a", "b", "10", "z"])
    if kind == 5:
        return {}
    if kind == 6:
        return [_random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = ["a", "b", "c", "0", "1", "3", "x y"]
    return {rng.choice(keys): _random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


def _is_stored_form(value: object) -> bool:
    if isinstance(value, dict):
        return bool(value) and all(
            isinstance(k, str) and v is not None and _is_stored_form(v) for k, v in value.items()
        )
    return value is None or isinstance(value, (bool, int, float, str))


# --- server values -------------------------------------------------------------------------------------------------


def test_timestamp_server_value_becomes_now_anywhere_inside_the_value():
    value = {"a": {".sv": "timestamp"}, "b": {"c": [{".sv": "timestamp"}]}}
    assert resolve_server_values(value, None, 1234) == {"a": 1234, "b": {"c": [1234]}}
    assert resolve_server_values({".sv": "timestamp"}, "old", 99) == 99


def test_increment_adds_to_the_existing_number_at_the_same_spot():
    existing = {"n": 5, "deep": {"m": 1.5}, "s": "text", "b": True, "o": {"x": 1}}
    value = {
        "n": {".sv": {"increment": 2}},
        "deep": {"m": {".sv": {"increment": 1}}},
        "s": {".sv": {"increment": 3}},
        "b": {".sv": {"increment": 4}},
        "o": {".sv": {"increment": 5}},
        "missing": {".sv": {"increment": -1}},
    }
    assert resolve_server_values(value, existing, 0) == {
        "n": 7,
        "deep": {"m": 2.5},
        "s": 3,
        "b": 4,
        "o": 5,
        "missing": -1,
    }


def test_increment_at_the_top_and_inside_lists_uses_index_keys():
    assert resolve_server_values({".sv": {"increment": 1}}, 41, 0) == 42
    assert resolve_server_values([{".sv": {"increment": 1}}, 0], {"0": 10}, 0) == [11, 0]


def test_increment_inside_a_value_wrapper():
    resolved = resolve_server_values({".value": {".sv": {"increment": 1}}, ".priority": 1}, 1, 0)
    assert normalize(resolved) == 2


@pytest.mark.parametrize(
    "sv",
    [
        "now",
        {"increment": "1"},
        {"increment": True},
        {"increment": None},
        {"increment": 1, "other": 2},
        {"decrement": 1},
        7,
        None,
    ],
)
def test_unknown_or_malformed_server_values_are_refused(sv):
    with pytest.raises(DataError, match=r"\.sv|server value"):
        resolve_server_values({"a": {".sv": sv}}, None, 0)


def test_resolve_does_not_modify_its_input_and_leaves_plain_data_alone():
    value = {"a": {".sv": "timestamp"}, "b": [1, 2], "c": None}
    snapshot = repr(value)
    assert resolve_server_values(value, None, 5) == {"a": 5, "b": [1, 2], "c": None}
    assert repr(value) == snapshot


def test_prepare_write_validates_resolves_and_normalizes():
    root = {"counter": 2}
    assert prepare_write({"counter": {".sv": {"increment": 1}}, "at": {".sv": "timestamp"}, "l": [None, 1]},
                         (), root, 77) == {"counter": 3, "at": 77, "l": {"1": 1}}
    with pytest.raises(DataError):
        prepare_write({"a.b": 1}, (), None, 0)


# --- get / set_at --------------------------------------------------------------------------------------------------


def test_get_walks_objects_and_returns_none_for_anything_missing():
    root = {"a": {"b": {"c": 1}}, "p": 5}
    assert get(root, ()) is root
    assert get(root, ("a", "b", "c")) == 1
    assert get(root, ("a", "x")) is None
    assert get(root, ("p", "q")) is None
    assert get(None, ("a",)) is None


def test_set_at_copies_only_the_objects_along_the_path():
    left = {"big": list(range(3))}
    root = {"a": {"b": {"c": 1}, "side": left}, "other": {"x": 1}}
    new = set_at(root, ("a", "b", "c"), 2)
    assert new == {"a": {"b": {"c": 2}, "side": left}, "other": {"x": 1}}
    assert root["a"]["b"]["c"] == 1  # the old tree is untouched
    assert new is not root and new["a"] is not root["a"] and new["a"]["b"] is not root["a"]["b"]
    assert new["other"] is root["other"]
    assert new["a"]["side"] is root["a"]["side"]


def test_set_at_root_replaces_everything():
    assert set_at({"a": 1}, (), {"b": 2}) == {"b": 2}
    assert set_at({"a": 1}, (), None) is None


def test_set_at_creates_missing_parents_and_replaces_primitives_on_the_way():
    assert set_at(None, ("a", "b"), 1) == {"a": {"b": 1}}
    assert set_at({"a": 5}, ("a", "b"), 1) == {"a": {"b": 1}}


def test_set_at_none_deletes_and_empty_parents_vanish():
    root = {"a": {"b": {"c": 1}}, "k": 1}
    assert set_at(root, ("a", "b", "c"), None) == {"k": 1}
    assert set_at({"a": {"b": 1}}, ("a", "b"), None) is None


def test_deleting_something_absent_returns_the_same_root():
    root = {"a": {"b": 1}, "p": 3}
    assert set_at(root, ("x", "y"), None) is root
    assert set_at(root, ("p", "q"), None) is root


def test_set_at_normalizes_nothing_itself_but_refuses_unnormalized_empties():
    # Stored form never holds an empty object: writing one is the same as deleting.
    assert set_at({"a": 1, "b": 2}, ("a",), {}) == {"b": 2}


# --- update_at -----------------------------------------------------------------------------------------------------


def test_update_at_writes_each_slash_path_relative_to_the_location():
    root = {"users": {"u1": {"name": "A", "age": 3}, "u2": {"name": "B"}}}
    new = update_at(root, ("users",), {"u1/age": 4, "u2": {"name": "C"}, "u3/name": "D", "u1/gone": None})
    assert new == {"users": {"u1": {"name": "A", "age": 4}, "u2": {"name": "C"}, "u3": {"name": "D"}}}
    assert root["users"]["u1"]["age"] == 3


def test_update_at_replaces_the_child_it_names_not_merges():
    root = {"a": {"x": 1, "y": 2}}
    assert update_at(root, (), {"a": {"z": 3}}) == {"a": {"z": 3}}


def test_update_at_deletes_with_null_and_empties_vanish():
    root = {"a": {"b": 1}, "c": 2}
    assert update_at(root, (), {"a/b": None, "c": None}) is None


def test_update_at_normalizes_values_and_resolves_server_values_against_the_old_tree():
    root = {"n": {"count": 1}}
    new = update_at(root, ("n",), {"count": {".sv": {"increment": 2}}, "at": {".sv": "timestamp"},
                                   "list": [None, "x"]}, now_ms=500)
    assert new == {"n": {"count": 3, "at": 500, "list": {"1": "x"}}}


def test_update_at_with_no_changes_keeps_the_root():
    root = {"a": 1}
    assert update_at(root, ("a",), {}) is root


@pytest.mark.parametrize(
    "changes",
    [
        {"a": 1, "a/b": 2},
        {"a/b": 1, "a/b/c": 2},
        {"x/y": 1, "x/y/": 2},
        {"a": 1, "/a": 2},
    ],
)
def test_update_at_refuses_overlapping_paths_and_changes_nothing(changes):
    root = {"a": {"b": {"c": 0}}}
    with pytest.raises(DataError, match="overlap"):
        update_at(root, (), changes)
    assert root == {"a": {"b": {"c": 0}}}


@pytest.mark.parametrize(
    "changes",
    [
        {"ok": 1, "bad.key": 2},
        {"ok": 1, "fine": {"bad#": 1}},
        {"ok": 1, "s": {".sv": "nope"}},
        {"ok": 1, "": 2},
        {"ok": 1, "/": 2},
        {"ok": 1, "deep": _nested(MAX_DEPTH)},
    ],
)
def test_update_at_is_all_or_nothing(changes):
    root = {"ok": 0}
    with pytest.raises(DataError):
        update_at(root, (), changes)
    assert root == {"ok": 0}


def test_update_at_drops_priority_keys_but_checks_their_path():
    assert update_at({"a": 1}, (), {"a/.priority": 5, ".priority": 1, "b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(DataError):
        update_at({"a": 1}, (), {"bad#/.priority": 5})


def test_update_at_handles_many_keys_and_shares_untouched_subtrees():
    root = {"rooms": {f"r{i}": {"n": i} for i in range(2000)}, "keep": {"x": 1}}
    changes = {f"rooms/r{i}/n": i + 1 for i in range(0, 2000, 2)}
    new = update_at(root, (), changes)
    assert new["rooms"]["r0"] == {"n": 1} and new["rooms"]["r1"] is root["rooms"]["r1"]
    assert new["keep"] is root["keep"]
    assert changed_paths(root, new, ()) == sorted(("rooms", f"r{i}", "n") for i in range(0, 2000, 2))


def test_update_at_names_the_bad_key():
    with pytest.raises(DataError, match=r"update key 'a/b\.c'"):
        update_at({}, (), {"a/b.c": 1})


def test_update_paths_lists_what_an_update_writes():
    assert update_paths({"b/c": 1, "a": None, "/d/": 2, "e/.priority": 3}) == [("a",), ("b", "c"), ("d",)]
    with pytest.raises(DataError, match="overlap"):
        update_paths({"a": 1, "a/b": 2})


def test_update_at_refuses_a_body_that_is_not_an_object():
    for body in ([1, 2], "x", 3, None):
        with pytest.raises(DataError, match="object"):
            update_at({}, (), body)  # type: ignore[arg-type]
        with pytest.raises(DataError, match="object"):
            update_paths(body)  # type: ignore[arg-type]


# --- output forms --------------------------------------------------------------------------------------------------


def test_to_output_turns_mostly_dense_integer_keys_into_lists():
    assert to_output({"0": "a", "1": "b", "2": "c"}) == ["a", "b", "c"]
    assert to_output({"0": "a", "1": "b", "3": "d"}) == ["a", "b", None, "d"]
    assert to_output({"0": "a"}) == ["a"]
    assert to_output({"1": "b"}) == {"1": "b"}  # one of two slots is not more than half
    assert to_output({"0": "a", "3": "d"}) == {"0": "a", "3": "d"}
    assert to_output({"0": "a", "x": "b"}) == {"0": "a", "x": "b"}
    assert to_output({"00": 1, "1": 2}) == {"00": 1, "1": 2}
    assert to_output({"-1": 1, "0": 2}) == {"-1": 1, "0": 2}


def test_to_output_leaves_the_stored_tree_alone_and_shares_what_needs_no_change():
    stored = {"a": {"0": {"x": 1}}, "b": {"c": 1}}
    out = to_output(stored)
    assert out == {"a": [{"x": 1}], "b": {"c": 1}}
    assert stored == {"a": {"0": {"x": 1}}, "b": {"c": 1}}
    assert out["b"] is stored["b"]
    plain = {"k": {"v": 1}}
    assert to_output(plain) is plain


def test_to_output_is_recursive_and_leaves_primitives():
    assert to_output({"a": {"0": {"0": 1}}}) == {"a": [[1]]}
    assert to_output(None) is None
    assert to_output(3.5) == 3.5


def test_normalize_then_output_round_trips_dense_lists():
    value = {"list": [1, 2, None, 4], "obj": {"k": [True]}}
    assert to_output(normalize(value)) == {"list": [1, 2, None, 4], "obj": {"k": [True]}}


def test_shallow_replaces_children_with_true():
    assert shallow({"a": {"b": 1}, "c": 2}) == {"a": True, "c": True}
    assert shallow(5) == 5
    assert shallow("s") == "s"
    assert shallow(None) is None


def test_etag_is_stable_for_equal_values_and_differs_for_different_ones():
    assert etag({"a": 1, "b": [1, 2]}) == etag({"b": [1, 2], "a": 1})
    assert etag(None) == etag(None)
    assert etag(1) == etag(normalize(1.0))
    assert etag({"a": {"0": 1}}) == etag(normalize({"a": [1.0]}))
    seen = {etag(v) for v in [None, 0, False, "", "0", {"a": 1}, {"a": "1"}, 1, True]}
    assert len(seen) == 9
    assert all(c.isascii() and c.isprintable() and c != '"' for c in etag({"x": "é"}))


# --- changed_paths -------------------------------------------------------------------------------------------------


def test_changed_paths_reports_the_highest_changed_locations_under_a_path():
    old = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    new = update_at(old, (), {"a/b": 5, "a/c/d": None, "a/x": {"y": 1}})
    assert changed_paths(old, new, ()) == [("a", "b"), ("a", "c"), ("a", "x")]
    assert changed_paths(old, new, ("a", "c")) == [("a", "c")]
    assert changed_paths(old, new, ("e",)) == []
    assert changed_paths(old, old, ()) == []


def test_changed_paths_reports_the_path_itself_when_a_primitive_changes_kind():
    assert changed_paths({"a": 1}, {"a": {"b": 1}}, ()) == [("a",)]
    assert changed_paths(None, {"a": 1}, ()) == [()]
    assert changed_paths({"a": 1}, None, ("a",)) == [("a",)]
