"""The emulator's REST calls through the unchanged firebase-admin SDK (must also pass against Google's emulator)."""

from __future__ import annotations

import re

import pytest
from firebase_admin import db, exceptions

PUSH_ID = re.compile(r"^[-0-9A-Z_a-z]{20}$")


@pytest.fixture
def root(firebase_app_factory):
    """An admin reference to the namespace's root."""
    return db.reference("/", app=firebase_app_factory.make())


def test_get_of_nothing_is_none(root):
    assert root.get() is None
    assert root.child("a/b").get() is None


def test_set_then_get_round_trips_json(root):
    value = {"s": "héllo ✓", "n": 3, "f": 1.5, "t": True, "f2": False, "nested": {"deep": {"x": "y"}}}
    root.child("things").set(value)
    assert root.child("things").get() == value
    assert root.child("things/nested/deep/x").get() == "y"
    assert root.get() == {"things": value}


def test_set_primitives_at_paths(root):
    root.child("a").set(1)
    root.child("b").set("two")
    root.child("c").set(False)
    assert root.get() == {"a": 1, "b": "two", "c": False}


def test_set_replaces_whole_subtree(root):
    root.child("a").set({"x": 1, "y": 2})
    root.child("a").set({"z": 3})
    assert root.child("a").get() == {"z": 3}


def test_empty_objects_vanish(root):
    root.child("a").set({"b": {}})
    assert root.child("a").get() is None


def test_lists_come_back_as_lists(root):
    root.child("list").set(["a", "b", "c"])
    assert root.child("list").get() == ["a", "b", "c"]
    assert root.child("list/1").get() == "b"


def test_shallow_get_replaces_children_by_true(root):
    root.child("a").set({"x": {"deep": 1}, "y": 2})
    assert root.child("a").get(shallow=True) == {"x": True, "y": True}
    assert root.child("a/y").get(shallow=True) == 2


def test_get_with_etag_and_get_if_changed(root):
    ref = root.child("e")
    ref.set({"v": 1})
    value, tag = ref.get(etag=True)
    assert value == {"v": 1}
    assert isinstance(tag, str) and tag
    assert ref.get_if_changed(tag) == (False, None, None)
    ref.set({"v": 2})
    changed, new_value, new_tag = ref.get_if_changed(tag)
    assert changed is True and new_value == {"v": 2} and new_tag != tag


def test_etag_of_missing_value_is_stable(root):
    _, tag1 = root.child("nothing").get(etag=True)
    _, tag2 = root.child("nothing").get(etag=True)
    assert tag1 == tag2
    assert root.child("nothing").get_if_changed(tag1) == (False, None, None)


def test_set_if_unchanged_succeeds_with_current_etag(root):
    ref = root.child("c")
    ref.set(1)
    _, tag = ref.get(etag=True)
    ok, value, new_tag = ref.set_if_unchanged(tag, 2)
    assert ok is True and value == 2 and new_tag and new_tag != tag
    assert ref.get() == 2


def test_set_if_unchanged_fails_with_stale_etag_and_returns_current(root):
    ref = root.child("c")
    ref.set(1)
    _, tag = ref.get(etag=True)
    ref.set(5)
    ok, value, current_tag = ref.set_if_unchanged(tag, 2)
    assert ok is False and value == 5
    assert current_tag == ref.get(etag=True)[1]
    assert ref.get() == 5


def test_set_if_unchanged_on_missing_value(root):
    ref = root.child("fresh")
    _, tag = ref.get(etag=True)
    ok, _, _ = ref.set_if_unchanged(tag, {"created": True})
    assert ok is True
    assert ref.get() == {"created": True}


def test_push_creates_time_ordered_children(root):
    refs = [root.child("msgs").push({"i": i}) for i in range(5)]
    keys = [ref.key for ref in refs]
    assert all(PUSH_ID.match(key) for key in keys)
    assert keys == sorted(keys)
    assert [refs[i].get() for i in range(5)] == [{"i": i} for i in range(5)]


def test_push_default_value_is_empty_string(root):
    ref = root.child("msgs").push()
    assert ref.get() == ""


def test_update_merges_children(root):
    ref = root.child("u")
    ref.set({"a": 1, "b": 2})
    ref.update({"b": 3, "c": 4})
    assert ref.get() == {"a": 1, "b": 3, "c": 4}


def test_update_with_slash_paths_and_null_deletes(root):
    ref = root.child("u")
    ref.set({"a": {"x": 1, "y": 2}, "b": 2})
    ref.update({"a/x": 10, "a/z": {"deep": True}, "b": None})
    assert ref.get() == {"a": {"x": 10, "y": 2, "z": {"deep": True}}}


def test_delete_removes_and_prunes_parents(root):
    root.child("a/b/c").set(1)
    root.child("a/b/c").delete()
    assert root.child("a").get() is None
    root.child("nothing/here").delete()  # deleting what is not there is fine


def test_server_timestamp_and_increment(root):
    ref = root.child("sv")
    ref.set({"at": {".sv": "timestamp"}, "n": {".sv": {"increment": 2}}})
    value = ref.get()
    assert isinstance(value["at"], int) and value["at"] > 1_600_000_000_000
    assert value["n"] == 2
    ref.child("n").set({".sv": {"increment": 3}})
    assert ref.child("n").get() == 5
    ref.update({"n": {".sv": {"increment": -1}}, "m": {".sv": {"increment": 1}}})
    assert ref.child("n").get() == 4 and ref.child("m").get() == 1


def test_namespaces_are_separate_databases(firebase_app_factory, emulator):
    other = type(firebase_app_factory)(emulator, firebase_app_factory.namespace + "-other")
    try:
        db.reference("/k", app=firebase_app_factory.make()).set("mine")
        other_ref = db.reference("/k", app=other.make())
        assert other_ref.get() is None
        other_ref.set("theirs")
        assert db.reference("/k", app=firebase_app_factory.make()).get() == "mine"
    finally:
        other.close()
        emulator.clear(firebase_app_factory.namespace + "-other")


def test_unicode_and_special_keys(root):
    ref = root.child("keys")
    ref.set({"ünï cødé": 1, "with space": 2, "dash-and_underscore": 3, "%percent": 4, "a+b": 5, ":colon": 6})
    assert ref.child("ünï cødé").get() == 1
    assert ref.child("with space").get() == 2
    assert ref.child("%percent").get() == 4
    assert ref.child("a+b").get() == 5
    assert ref.child(":colon").get() == 6


# -- queries ---------------------------------------------------------------------------------------------------

SCORES = {
    "alice": {"score": 10, "name": "Alice"},
    "bob": {"score": 30, "name": "Bob"},
    "carol": {"score": 20, "name": "Carol"},
    "dave": {"score": "high", "name": "Dave"},
    "erin": {"name": "Erin"},
    "frank": {"score": True, "name": "Frank"},
}


@pytest.fixture
def scores(root):
    ref = root.child("scores")
    ref.set(SCORES)
    return ref


def test_order_by_child_sorts_mixed_types(scores):
    result = scores.order_by_child("score").get()
    # null, booleans, numbers, strings.
    assert list(result) == ["erin", "frank", "alice", "carol", "bob", "dave"]


def test_order_by_child_with_limits(scores):
    assert list(scores.order_by_child("score").limit_to_first(2).get()) == ["erin", "frank"]
    assert list(scores.order_by_child("score").limit_to_last(2).get()) == ["bob", "dave"]


def test_order_by_child_with_range(scores):
    result = scores.order_by_child("score").start_at(15).end_at(30).get()
    assert list(result) == ["carol", "bob"]
    assert scores.order_by_child("score").equal_to(10).get() == {"alice": SCORES["alice"]}
    assert list(scores.order_by_child("score").start_at("a").get()) == ["dave"]


def test_order_by_key(scores):
    result = scores.order_by_key().start_at("bob").end_at("dave").get()
    assert list(result) == ["bob", "carol", "dave"]
    assert list(scores.order_by_key().limit_to_last(1).get()) == ["frank"]


def test_order_by_key_puts_integer_keys_first(root):
    ref = root.child("k")
    ref.set({"10": "ten", "9": "nine", "b": "bee", "a": "ay"})
    # firebase-admin re-sorts key results as strings on its side, so the server's order shows through limits.
    assert ref.order_by_key().limit_to_first(1).get() == {"9": "nine"}
    assert ref.order_by_key().limit_to_first(2).get() == {"9": "nine", "10": "ten"}
    assert ref.order_by_key().limit_to_last(3).get() == {"10": "ten", "a": "ay", "b": "bee"}


def test_order_by_value(root):
    ref = root.child("v")
    ref.set({"a": 3, "b": "x", "c": 1, "d": False, "e": 2})
    assert list(ref.order_by_value().get()) == ["d", "c", "e", "a", "b"]
    assert list(ref.order_by_value().start_at(2).end_at(3).get()) == ["e", "a"]
    assert list(ref.order_by_value().limit_to_first(1).get()) == ["d"]


def test_order_by_nested_child_path(root):
    ref = root.child("n")
    ref.set({"a": {"m": {"v": 2}}, "b": {"m": {"v": 1}}})
    assert list(ref.order_by_child("m/v").get()) == ["b", "a"]


def test_query_with_string_bounds_containing_specials(root):
    ref = root.child("s")
    ref.set({"a": {"t": "x:y"}, "b": {"t": "x y"}, "c": {"t": "z"}})
    assert ref.order_by_child("t").equal_to("x:y").get() == {"a": {"t": "x:y"}}
    assert ref.order_by_child("t").equal_to("x y").get() == {"b": {"t": "x y"}}


def test_query_on_missing_location_is_empty(root):
    assert not root.child("none").order_by_key().limit_to_first(3).get()


# -- errors the SDK can produce --------------------------------------------------------------------------------


def test_invalid_key_in_data_is_invalid_argument(root):
    with pytest.raises(exceptions.InvalidArgumentError):
        root.child("bad").set({"a.b": 1})
    with pytest.raises(exceptions.InvalidArgumentError):
        root.child("bad").update({"x": {"$y": 1}})
    assert root.child("bad").get() is None


def test_too_deep_data_is_refused(root):
    value: object = "leaf"
    for _ in range(40):
        value = {"d": value}
    with pytest.raises(exceptions.InvalidArgumentError):
        root.child("deep").set(value)
    assert root.child("deep").get() is None


def test_multi_path_update_is_all_or_nothing(root):
    ref = root.child("atomic")
    ref.set({"a": 1})
    with pytest.raises(exceptions.InvalidArgumentError):
        ref.update({"a": 2, "b": {"bad#key": 1}})
    assert ref.get() == {"a": 1}
