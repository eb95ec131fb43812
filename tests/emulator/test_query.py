"""Tests for emulator.query: parsing REST query parameters, Firebase ordering, range filters and limits."""

from __future__ import annotations

import json
import random

import pytest

from emulator.query import (
    UNSET,
    Query,
    apply_query,
    key_order,
    missing_index_message,
    parse_query,
    required_index,
    rules_query_vars,
    value_order,
)
from emulator.tree import DataError


def q(**params: object) -> Query:
    """A parsed query from parameters given as Python values, encoded the way firebase-admin sends them."""
    raw = {}
    for name, value in params.items():
        raw[name] = str(value) if name.startswith("limit") else json.dumps(value)
    query = parse_query(raw)
    assert query is not None
    return query


def keys(result: object) -> list[str]:
    assert result is None or isinstance(result, dict)
    return list(result or {})


# --- parse_query ---------------------------------------------------------------------------------------------------


def test_no_query_parameters_means_no_query():
    assert parse_query({}) is None
    assert parse_query({"shallow": "true", "print": "silent", "ns": "demo", "auth_variable_override": "null"}) is None


def test_order_by_forms():
    assert parse_query({"orderBy": '"$key"'}) == Query(order_by="$key")
    assert parse_query({"orderBy": '"$value"'}) == Query(order_by="$value")
    assert parse_query({"orderBy": '"$priority"'}) == Query(order_by="$priority")
    assert parse_query({"orderBy": '"height"'}) == Query(order_by=("height",))
    assert parse_query({"orderBy": '"a/b/c"'}) == Query(order_by=("a", "b", "c"))


@pytest.mark.parametrize("raw", ["height", '"', "1", "null", '["a"]', '""', '"/"', '"a.b"', '"$other"', '"a/$b"'])
def test_order_by_must_be_a_json_encoded_valid_path(raw):
    with pytest.raises(DataError, match="orderBy must be a valid JSON encoded path"):
        parse_query({"orderBy": raw})


@pytest.mark.parametrize("name", ["startAt", "endAt", "equalTo", "limitToFirst", "limitToLast", "startAfter"])
def test_a_filter_without_order_by_is_refused(name):
    with pytest.raises(DataError, match="orderBy must be defined when other query parameters are defined"):
        parse_query({name: "1"})


def test_filter_values_are_json_primitives():
    query = q(orderBy="h", startAt=1.5, endAt="z", limitToFirst=3)
    assert (query.start_at, query.end_at, query.limit_to_first) == (1.5, "z", 3)
    assert q(orderBy="h", equalTo=None).equal_to is None  # JSON null is a value, not "unset"
    assert q(orderBy="h", equalTo=False).equal_to is False
    assert q(orderBy="h").start_at is UNSET
    whole = q(orderBy="h", startAt=2.0).start_at
    assert whole == 2 and type(whole) is int


@pytest.mark.parametrize("raw", ["abc", "{", '{"a": 1}', "[1]", "NaN", "Infinity", "'single'"])
def test_filter_values_that_are_not_json_primitives_are_refused(raw):
    with pytest.raises(DataError, match="Constraint index field must be a JSON primitive"):
        parse_query({"orderBy": '"h"', "startAt": raw})


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "x", "", " 2", "1e3", '"3"'])
def test_limits_must_be_positive_integers(raw):
    with pytest.raises(DataError, match="limitToLast must be a positive integer"):
        parse_query({"orderBy": '"$key"', "limitToLast": raw})


def test_both_limits_are_refused():
    with pytest.raises(DataError, match="limitToFirst and limitToLast"):
        parse_query({"orderBy": '"$key"', "limitToFirst": "1", "limitToLast": "1"})


@pytest.mark.parametrize("other", ["startAt", "endAt", "startAfter", "endBefore"])
def test_equal_to_with_a_range_is_refused(other):
    with pytest.raises(DataError, match="equalTo cannot be specified in addition to"):
        parse_query({"orderBy": '"h"', "equalTo": "1", other: "1"})


def test_start_at_with_start_after_is_refused():
    with pytest.raises(DataError, match="startAt and startAfter"):
        parse_query({"orderBy": '"h"', "startAt": "1", "startAfter": "1"})
    with pytest.raises(DataError, match="endAt and endBefore"):
        parse_query({"orderBy": '"h"', "endAt": "1", "endBefore": "1"})


@pytest.mark.parametrize("name", ["startAt", "endAt", "equalTo"])
def test_ordering_by_key_takes_only_string_bounds(name):
    with pytest.raises(DataError, match="ordering by key"):
        parse_query({"orderBy": '"$key"', name: "1"})


def test_ordering_by_priority_refuses_boolean_bounds():
    with pytest.raises(DataError, match="valid priority"):
        parse_query({"orderBy": '"$priority"', "startAt": "true"})
    assert q(orderBy="$priority", startAt=None, endAt="x").end_at == "x"


def test_priority_ranges_treat_every_child_as_having_a_null_priority():
    data = {"a": 1, "b": 2}
    assert keys(apply_query(data, q(orderBy="$priority", endAt=None))) == ["a", "b"]
    assert apply_query(data, q(orderBy="$priority", startAt=0)) is None


def test_query_is_frozen_and_hashable():
    query = q(orderBy="a/b", startAt=1)
    assert hash(query) == hash(q(orderBy="a/b", startAt=1))
    with pytest.raises(AttributeError):
        query.limit_to_first = 3  # type: ignore[misc]


# --- ordering ------------------------------------------------------------------------------------------------------


def test_key_order_puts_32_bit_integer_keys_first_numerically_then_strings():
    names = ["b", "10", "a", "2", "-5", "2147483647", "2147483648", "-2147483648", "-2147483649", "A", "_", "1a"]
    random.Random(1).shuffle(names)
    assert sorted(names, key=key_order) == [
        "-2147483648", "-5", "2", "10", "2147483647",
        "-2147483649", "1a", "2147483648", "A", "_", "a", "b",
    ]


def test_key_order_ties_on_the_same_number_by_length():
    assert sorted(["007", "7", "07"], key=key_order) == ["7", "07", "007"]


def test_key_order_only_takes_ascii_digits_as_numbers():
    assert key_order("١٢") > key_order("zzz")  # Arabic-Indic digits are an ordinary string


def test_strings_compare_by_utf16_code_units_like_the_service():
    # By code point U+1F600 sorts after U+FF5E; as UTF-16 it starts with the surrogate 0xD83D, which sorts before.
    assert key_order("😀") < key_order("～")
    assert value_order("😀") < value_order("～")


def test_value_order_is_null_false_true_numbers_strings_objects():
    values = [{"a": 1}, "b", "a", "", 10, -1, 2.5, True, False, None, "10"]
    random.Random(2).shuffle(values)
    assert sorted(values, key=value_order) == [None, False, True, -1, 2.5, 10, "", "10", "a", "b", {"a": 1}]


MIXED = {
    "n1": 3,
    "n2": 1,
    "s1": "b",
    "s2": "a",
    "t": True,
    "f": False,
    "o": {"x": 1},
    "o2": {"y": 2},
    "n3": 1,
}


def test_order_by_value_returns_everything_in_type_order_with_ties_by_key():
    assert keys(apply_query(MIXED, q(orderBy="$value"))) == ["f", "t", "n2", "n3", "n1", "s2", "s1", "o", "o2"]


def test_order_by_child_treats_missing_children_and_primitives_as_null():
    data = {
        "d": {"h": 5},
        "c": {"h": "tall"},
        "b": {"other": 1},
        "a": 7,
        "e": {"h": {"nested": True}},
        "f": {"h": False},
        "g": {"h": 5},
    }
    assert keys(apply_query(data, q(orderBy="h"))) == ["a", "b", "f", "d", "g", "c", "e"]


def test_order_by_a_deep_child_path():
    data = {"x": {"a": {"b": 2}}, "y": {"a": {"b": 1}}, "z": {"a": 3}}
    assert keys(apply_query(data, q(orderBy="a/b"))) == ["z", "y", "x"]


def test_order_by_key_and_priority():
    data = {"b": 1, "10": 1, "a": 1, "9": 1}
    assert keys(apply_query(data, q(orderBy="$key"))) == ["9", "10", "a", "b"]
    # Priorities are not stored, so every child has a null priority and the order falls back to the keys.
    assert keys(apply_query(data, q(orderBy="$priority"))) == ["9", "10", "a", "b"]


# --- filters and limits --------------------------------------------------------------------------------------------

HEIGHTS = {
    "bruhathkayosaurus": {"height": 25},
    "lambeosaurus": {"height": 2.1},
    "linhenykus": {"height": 0.6},
    "pterodactyl": {"height": 0.6},
    "stegosaurus": {"height": 4},
    "triceratops": {"height": 3},
    "unknownosaurus": {"weight": 1},
    "wordy": {"height": "very"},
}


def test_start_at_and_end_at_are_inclusive():
    result = apply_query(HEIGHTS, q(orderBy="height", startAt=0.6, endAt=3))
    assert keys(result) == ["linhenykus", "pterodactyl", "lambeosaurus", "triceratops"]
    assert result["triceratops"] == {"height": 3}


def test_range_bounds_follow_type_order():
    # Strings sort after numbers, so startAt a number includes them; null sorts first.
    assert keys(apply_query(HEIGHTS, q(orderBy="height", startAt=4))) == ["stegosaurus", "bruhathkayosaurus", "wordy"]
    assert keys(apply_query(HEIGHTS, q(orderBy="height", endAt=None))) == ["unknownosaurus"]
    assert keys(apply_query(HEIGHTS, q(orderBy="height", endAt=0.6))) == ["unknownosaurus", "linhenykus", "pterodactyl"]


def test_equal_to_matches_exactly_one_value_of_one_type():
    assert keys(apply_query(HEIGHTS, q(orderBy="height", equalTo=0.6))) == ["linhenykus", "pterodactyl"]
    assert keys(apply_query(HEIGHTS, q(orderBy="height", equalTo="very"))) == ["wordy"]
    assert apply_query(HEIGHTS, q(orderBy="height", equalTo="0.6")) is None
    assert apply_query({"a": 1, "b": True}, q(orderBy="$value", equalTo=True)) == {"b": True}
    assert apply_query({"a": 1, "b": 1.5, "c": "1"}, q(orderBy="$value", equalTo=1)) == {"a": 1}


def test_start_after_and_end_before_are_exclusive():
    query = q(orderBy="height", startAfter=0.6, endBefore=4)
    assert keys(apply_query(HEIGHTS, query)) == ["lambeosaurus", "triceratops"]


def test_limit_to_first_and_last_apply_after_the_filter():
    assert keys(apply_query(HEIGHTS, q(orderBy="height", startAt=1, limitToFirst=2))) == [
        "lambeosaurus", "triceratops"
    ]
    assert keys(apply_query(HEIGHTS, q(orderBy="height", endAt=4, limitToLast=2))) == ["triceratops", "stegosaurus"]
    assert len(keys(apply_query(HEIGHTS, q(orderBy="height", limitToFirst=100)))) == len(HEIGHTS)


def test_key_range_uses_key_order():
    data = {str(i): i for i in range(12)} | {"a": "x", "b": "y"}
    assert keys(apply_query(data, q(orderBy="$key", startAt="9", endAt="11"))) == ["9", "10", "11"]
    assert keys(apply_query(data, q(orderBy="$key", startAt="10", limitToFirst=3))) == ["10", "11", "a"]
    assert keys(apply_query(data, q(orderBy="$key", startAt="a"))) == ["a", "b"]
    assert keys(apply_query(data, q(orderBy="$key", equalTo="b"))) == ["b"]
    assert keys(apply_query(data, q(orderBy="$key", limitToLast=1))) == ["b"]


def test_push_ids_ordered_by_key_come_in_time_order():
    from emulator.pushid import PushIdGenerator

    generate = PushIdGenerator(random.Random(3))
    ids = [generate(1_000 + i // 3) for i in range(30)]
    data = {push_id: {"n": n} for n, push_id in reversed(list(enumerate(ids)))}
    assert keys(apply_query(data, q(orderBy="$key", limitToLast=5))) == ids[-5:]


def test_no_match_gives_none_and_the_input_is_untouched():
    data = {"a": {"h": 1}}
    assert apply_query(data, q(orderBy="h", startAt=5)) is None
    assert data == {"a": {"h": 1}}


def test_a_query_on_a_primitive_or_nothing():
    assert apply_query(None, q(orderBy="$key")) is None
    assert apply_query(5, q(orderBy="$value")) == 5  # ordering alone leaves a leaf as it is
    assert apply_query(5, q(orderBy="$value", limitToFirst=1)) is None  # a filter keeps children only


def test_filters_and_limits_agree_with_a_brute_force_model():
    rng = random.Random(11)
    pool = [None, False, True, -2, 0, 1, 1.5, 3, "", "a", "ab", "b", {"o": 1}]
    bounds = [None, False, True, -2, 0, 1, 1.5, 3, "", "a", "b"]
    rank = {repr(v): i for i, v in enumerate(pool)}
    for _ in range(300):
        data = {f"k{i}": {"v": rng.choice(pool)} for i in range(rng.randrange(1, 9))}
        params = {"orderBy": "v"}
        low = high = None
        if rng.random() < 0.5:
            params["startAt"] = low = rng.choice(bounds)
        if rng.random() < 0.5:
            params["endAt"] = high = rng.choice(bounds)
        limit = None
        if rng.random() < 0.5:
            limit = rng.randrange(1, 5)
            params["limitToFirst" if rng.random() < 0.5 else "limitToLast"] = limit
        result = apply_query(data, q(**params))
        # The model: the pool is listed in type order already; ties by key.
        entries = sorted(data.items(), key=lambda kv: (rank[repr(kv[1]["v"])], kv[0]))
        if "startAt" in params:
            entries = [e for e in entries if rank[repr(e[1]["v"])] >= rank[repr(low)]]
        if "endAt" in params:
            entries = [e for e in entries if rank[repr(e[1]["v"])] <= rank[repr(high)]]
        if "limitToFirst" in params:
            entries = entries[:limit]
        if "limitToLast" in params:
            entries = entries[-limit:] if entries else []
        assert keys(result) == [k for k, _ in entries], params


# --- rules variables and indexes -----------------------------------------------------------------------------------


def test_rules_query_vars_without_a_query():
    assert rules_query_vars(None) == {
        "orderByKey": False,
        "orderByChild": None,
        "orderByValue": False,
        "orderByPriority": False,
        "startAt": None,
        "endAt": None,
        "equalTo": None,
        "limitToFirst": None,
        "limitToLast": None,
    }


def test_rules_query_vars_reflect_the_query():
    assert rules_query_vars(q(orderBy="a/b", startAt=1, endAt="z", limitToLast=3)) == {
        "orderByKey": False,
        "orderByChild": "a/b",
        "orderByValue": False,
        "orderByPriority": False,
        "startAt": 1,
        "endAt": "z",
        "equalTo": None,
        "limitToFirst": None,
        "limitToLast": 3,
    }
    key_vars = rules_query_vars(q(orderBy="$key", equalTo="x", limitToFirst=1))
    assert key_vars["orderByKey"] is True and key_vars["equalTo"] == "x" and key_vars["limitToFirst"] == 1
    assert rules_query_vars(q(orderBy="$value"))["orderByValue"] is True
    assert rules_query_vars(q(orderBy="$priority"))["orderByPriority"] is True


def test_required_index_and_its_message():
    assert required_index(q(orderBy="$key")) is None
    assert required_index(q(orderBy="$priority")) is None
    assert required_index(q(orderBy="$value")) == ".value"
    assert required_index(q(orderBy="a/b")) == "a/b"
    assert missing_index_message(q(orderBy="height"), ("dinosaurs",)) == (
        'Index not defined, add ".indexOn": "height", for path "/dinosaurs", to the rules'
    )
