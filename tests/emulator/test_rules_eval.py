"""Evaluating rules: operators, methods, variables, run-time errors, read cascading, write and validate semantics."""

from __future__ import annotations

import pytest

import emulator.rules._expr as expr_module
from emulator.rules import RuleSet

NOW = 1_700_000_000_000


def rule_is_true(rule: str, data=None, *, auth=None, path: tuple[str, ...] = (), query=None) -> bool:
    """Evaluate ``rule`` as the only .read rule, at the root (``data`` is the whole tree)."""
    return RuleSet.from_json({"rules": {".read": rule}}).can_read(data, path, auth=auth, now=NOW, query=query)


def fails_at_run_time(rule: str, data=None, *, auth=None) -> bool:
    """True when ``rule`` hits a run-time error: it is false and even '(rule) || true' is false."""
    return not rule_is_true(rule, data, auth=auth) and not rule_is_true(f"({rule}) || true", data, auth=auth)


# -- operators


@pytest.mark.parametrize("rule", [
    "1 + 2 * 3 == 7", "(1 + 2) * 3 == 9", "10 - 4 - 3 == 3", "2 * 3 % 4 == 2", "7 / 2 == 3.5", "6 / 3 == 2",
    "-7 % 3 == -1", "7 % -3 == 1", "5.5 % 2 == 1.5", "-(-2) == 2", "- 2 + 3 == 1",
    "'ab' + 'cd' == 'abcd'", "'n' + 1 == 'n1'", "1.5 + 'x' == '1.5x'", "'x' + 2 / 4 == 'x0.5'",
    "'x' + 4 / 2 == 'x2'", "1e21 + '' == '1e+21'", "1e-7 + '' == '1e-7'", "1 / 0 + '' == 'NaN'",
    "0 / 0 != 0 / 0", "!(1 / 0 > 0)", "1 % 0 + '' == 'NaN'",
    "1e308 * 10 + '' == 'Infinity'", "-1e308 * 10 + '' == '-Infinity'", "1e308 * 10 % 2 + '' == 'NaN'",
    "5 % (1e308 * 10) == 5", "(0 / 0) % 2 + '' == 'NaN'",
    "1 < 2", "2 <= 2", "3 > 2", "2 >= 2", "'a' < 'b'", "'B' < 'a'", "'abc' >= 'abc'",
    "1 == 1.0", "1 === 1", "'a' != 'b'", "'a' !== 'b'", "null == null", "true == true", "false != true",
    "!(1 == '1')", "!(1 == true)", "!(0 == false)", "!('' == null)", "!(0 == null)",
    "true && true", "!(true && false)", "false || true", "!(false || false)", "!false", "!!true",
    "true ? true : false", "!(false ? true : false)",
    "false ? false : true ? true : false",  # right associative
    "true || false && false",  # && binds tighter than ||
    "1 + 1 == 2 && 2 > 1 == true",
])
def test_true_expressions(rule):
    assert rule_is_true(rule)
    assert not rule_is_true(f"!({rule})")


def test_and_or_short_circuit_as_in_javascript():
    # The right side is not evaluated, so its error does not matter.
    assert not rule_is_true("false && auth.x.contains('a')")
    assert rule_is_true("!(false && auth.x.contains('a'))")
    assert rule_is_true("true || auth.x.contains('a')")
    assert rule_is_true("auth == null || auth.uid.beginsWith('a')")
    # An error on the left decides: '(error) || true' is false, as in live Firebase.
    assert fails_at_run_time("auth.x.contains('a') || true")
    assert fails_at_run_time("true && auth.x.contains('a')")


@pytest.mark.parametrize("rule, auth", [
    ("auth.n + 1 == 2", {"n": True}),
    ("auth.n + 1 == 2", {}),
    ("auth.s * 2 == 2", {"s": "1"}),
    ("auth.s - 1 == 0", {"s": "1"}),
    ("-auth.s == 0", {"s": "1"}),
    ("auth.s < 2", {"s": "1"}),
    ("auth.n < 'b'", {"n": 1}),
    ("auth.b > auth.c", {"b": True, "c": False}),
    ("auth.missing < 1", {}),
    ("auth.n && true", {"n": 1}),
    ("true && auth.n", {"n": 1}),
    ("!auth.n", {"n": 1}),
    ("auth.n ? true : true", {"n": 1}),
    ("auth.n.length == 1", {"n": 1}),
    ("auth.b.x == null", {"b": False}),
    ("auth.obj + '' == ''", {"obj": {"a": 1}}),
    ("auth.list[auth.k] == 1", {"list": [1], "k": True}),
])
def test_type_errors_at_run_time_make_the_rule_false(rule, auth):
    assert fails_at_run_time(rule, auth=auth)


def test_a_rule_is_true_only_when_it_evaluates_to_the_boolean_true():
    assert rule_is_true("auth.flag", auth={"flag": True})
    for flag in (1, "true", None, {"a": True}):
        assert not rule_is_true("auth.flag", auth={"flag": flag})


def test_strict_equality_never_coerces():
    auth = {"one": 1, "t": True, "s": "1", "f": 1.0, "obj": {"a": 1}}
    assert rule_is_true("auth.one == auth.f", auth=auth)
    assert rule_is_true("auth.one != auth.t", auth=auth)
    assert rule_is_true("auth.one != auth.s", auth=auth)
    assert rule_is_true("auth.obj != 'a'", auth=auth)


# -- strings


@pytest.mark.parametrize("rule", [
    "'hello'.length == 5", "''.length == 0", "'\u00e9'.length == 1", "'\U0001f600'.length == 2",  # UTF-16 units
    "'hello'.contains('ell')", "!'hello'.contains('x')", "'hello'.contains('')",
    "'hello'.beginsWith('he')", "!'hello'.beginsWith('lo')", "'hello'.endsWith('lo')",
    "'a-b-c'.replace('-', '+') == 'a+b+c'", "'aaa'.replace('a', 'b') == 'bbb'", "'abc'.replace('x', 'y') == 'abc'",
    "'MiXeD'.toLowerCase() == 'mixed'", "'MiXeD'.toUpperCase() == 'MIXED'",
    "'it\\'s'.length == 4", '"say \\"hi\\"" == \'say "hi"\'', "'\\u0041' == 'A'", "'a\\nb'.length == 3",
    "'abc'['length'] == 3", "'abc'['contains']('b')",
])
def test_string_operations(rule):
    assert rule_is_true(rule)


@pytest.mark.parametrize("regex, text, matches", [
    ("/bar/", "foobarbaz", True),
    ("/^bar/", "foobar", False),
    ("/^foo/", "foobar", True),
    ("/bar$/", "foobar", True),
    ("/bar$/", "bar\n", False),  # $ is the very end, unlike Python's $
    ("/^a*$/", "", True),
    ("/^a+$/", "", False),
    ("/^a?$/", "aa", False),
    ("/......../", "Firebase", True),
    ("/^(ab)*$/", "abab", True),
    ("/^a|bc$/", "ac", True),
    ("/^[ABCDEF]$/", "a", False),
    ("/^[ABCDEF]$/i", "a", True),
    ("/^[0-9A-F]+$/", "DEADBEEF", True),
    ("/^[^0-9]+$/", "abc1", False),
    ("/^\\d{3}-\\d{4}$/", "555-1234", True),
    ("/^\\w+$/", "\u00e9t\u00e9", False),  # \w is ASCII, as in JavaScript
    ("/^\\s$/", " ", True),
    ("/^\\S+$/", "a b", False),
    ("/^a\\.b$/", "a.b", True),
    ("/^a\\.b$/", "axb", False),
    ("/^a\\/b$/", "a/b", True),
    ("/^[a\\]]+$/", "a]a", True),
    ("/^[a-]+$/", "a-a", True),
    ("/^a{2,3}$/", "aaaa", False),
    ("/^[A-Z0-9._%+-]+@[A-Z0-9.-]+\\.[A-Z]{2,4}$/i", "bob@example.com", True),
    ("/^[A-Z0-9._%+-]+@[A-Z0-9.-]+\\.[A-Z]{2,4}$/i", "bob@example", False),
])
def test_matches(regex, text, matches):
    assert rule_is_true(f"auth.s.matches({regex})", auth={"s": text}) is matches


@pytest.mark.parametrize("rule, auth", [
    ("auth.s.contains('a')", {}),
    ("auth.s.contains('a')", {"s": 1}),
    ("auth.s.matches(/a/)", {"s": True}),
    ("'abc'.contains(auth.s)", {"s": 1}),
    ("'abc'.beginsWith(auth.s)", {}),
    ("'abc'.endsWith(auth.s)", {"s": {"a": 1}}),
    ("'abc'.replace(auth.s, 'x') == 'x'", {}),
    ("'abc'.replace('a', auth.s) == 'x'", {"s": 2}),
    ("auth.s.toLowerCase() == 'a'", {}),
    ("auth.s.length > 0", {"s": 5}),
])
def test_string_method_errors_at_run_time(rule, auth):
    assert fails_at_run_time(rule, auth=auth)


# -- snapshots


TREE = {
    "users": {"u1": {"name": "Ann", "age": 30, "admin": True}, "u2": {"name": "Bob"}},
    "count": 3,
    "pi": 3.14,
    "flag": False,
    "title": "hello",
}


@pytest.mark.parametrize("rule", [
    "root.child('count').val() == 3",
    "root.child('users/u1/name').val() == 'Ann'",
    "root.child('users').child('u1').child('age').val() == 30",
    "root.child('/users//u1/').child('name').val() == 'Ann'",
    "root.child('users/u3/name').val() == null",
    "!root.child('users/u3/name').exists()",
    "root.child('users').val() != null",  # val() of an object is an opaque value, not null
    "root.child('users').val() != root.child('users').val()",  # ... and never equal to anything
    "root.child('users/u1/name').parent().parent().child('u2/name').val() == 'Bob'",
    "root.child('users/u1').parent().parent().hasChild('title')",
    "root.hasChild('users/u2/name')",
    "!root.hasChild('users/u2/age')",
    "!root.hasChild('title/x')",
    "root.hasChildren()",
    "!root.child('count').hasChildren()",
    "!root.child('nothing').hasChildren()",
    "root.child('users/u1').hasChildren(['name', 'age'])",
    "!root.child('users/u2').hasChildren(['name', 'age'])",
    "root.hasChildren(['users/u1/admin', 'title'])",
    "root.exists()",
    "root.child('count').isNumber() && root.child('pi').isNumber()",
    "!root.child('flag').isNumber() && root.child('flag').isBoolean()",
    "root.child('title').isString() && !root.child('users').isString()",
    "!root.child('nothing').isString() && !root.child('nothing').isBoolean()",
    "root.child('users/u1').getPriority() == null",
    "root.child('title').val().length == 5",
    "root.child('title').val().toUpperCase() == 'HELLO'",
    "root.child('count').val() + root.child('pi').val() > 6",
    "root.child('users/' + auth.uid + '/admin').val() == true",
    "data.child('users/u1/name').val() == root.child('users/u1/name').val()",
])
def test_snapshot_methods(rule):
    assert rule_is_true(rule, TREE, auth={"uid": "u1"})


@pytest.mark.parametrize("rule", [
    "root.parent().exists()",
    "root.child(auth.missing).exists()",
    "root.hasChild(auth.n)",
    "root.hasChildren([auth.missing])",
    "root.child('count').val().length > 0",
    "root.child('users').val().length > 0",
    "root.child('users').val() + 1 > 0",
    "root.child('count').val().contains('3')",
])
def test_snapshot_errors_at_run_time(rule):
    assert fails_at_run_time(rule, TREE, auth={"n": 1})


def test_root_of_an_empty_database():
    assert rule_is_true("!root.exists() && root.val() == null && !root.hasChildren()")


# -- variables


def test_auth_is_null_when_unauthenticated_and_a_member_of_null_is_null():
    assert rule_is_true("auth == null && auth.uid == null && auth.token.email == null")
    assert rule_is_true("auth.uid !== 'eviluser'")
    assert not rule_is_true("auth != null")


def test_auth_members_and_indexing():
    auth = {"uid": "u1", "token": {"email": "a@b.c", "roles": ["admin", "dev"]}}
    assert rule_is_true("auth.uid == 'u1' && auth.token.email.endsWith('.c')", auth=auth)
    assert rule_is_true("auth.token.roles[1] == 'dev' && auth.token.roles['0'] == 'admin'", auth=auth)
    assert rule_is_true("auth['token']['email'] == 'a@b.c'", auth=auth)
    assert rule_is_true("auth.token.roles[5] == null", auth=auth)


def test_now_is_server_time_in_milliseconds():
    rules = RuleSet.from_json({"rules": {".read": "now == 1700000000000"}})
    assert rules.can_read(None, (), auth=None, now=NOW)
    assert not rules.can_read(None, (), auth=None, now=NOW + 1)


def test_query_defaults_when_the_read_has_no_query():
    assert rule_is_true("query.orderByKey == true && query.orderByValue == false && query.orderByPriority == false")
    assert rule_is_true("query.orderByChild == null && query.startAt == null && query.endAt == null")
    assert rule_is_true("query.equalTo == null && query.limitToFirst == null && query.limitToLast == null")


def test_query_variables_reflect_the_read():
    query = {"orderByChild": "ts", "startAt": 5, "endAt": "z", "limitToFirst": 20}
    assert rule_is_true("query.orderByChild == 'ts' && query.orderByKey == false", query=query)
    assert rule_is_true("query.startAt == 5 && query.endAt == 'z' && query.limitToFirst <= 50", query=query)
    assert rule_is_true("query.limitToLast == null && query.equalTo == null", query=query)
    assert rule_is_true("query.orderByPriority == true", query={"orderByPriority": True})
    assert rule_is_true("query.orderByKey == true && query.equalTo == 'k'", query={"orderByKey": True,
                                                                                   "equalTo": "k"})


def test_unknown_query_parameters_are_a_clear_error():
    with pytest.raises(ValueError, match="unknown query parameters \\['orderBy'\\]"):
        RuleSet.from_json({"rules": {".read": "query.limitToFirst < 5"}}).can_read(
            None, (), auth=None, now=0, query={"orderBy": "x"})


# -- reads


PEOPLE = RuleSet.from_json({"rules": {
    "public": {".read": True},
    "closed": {".read": False, "inner": {".read": True}},
    "users": {
        "$uid": {
            ".read": "auth != null && auth.uid == $uid",
            "card": {".read": "data.child('shared').val() == true"},
        },
        "admin": {".read": "auth.admin == true"},
    },
}})


def can_read(path: tuple[str, ...], *, auth=None, data=None) -> bool:
    return PEOPLE.can_read(data, path, auth=auth, now=NOW)


def test_a_read_rule_grants_its_location_and_everything_below():
    assert can_read(("public",))
    assert can_read(("public", "a", "b", "c"))


def test_no_rule_means_denied_and_rules_are_not_filters():
    assert not can_read(())
    assert not can_read(("elsewhere",))
    assert not can_read(("users",), auth={"uid": "u1"})  # some children are readable, the parent is not


def test_a_false_rule_above_does_not_deny_a_true_rule_below():
    assert not can_read(("closed",))
    assert can_read(("closed", "inner", "x"))


def test_wildcards_capture_the_key_and_literal_children_win():
    assert can_read(("users", "u1", "anything"), auth={"uid": "u1"})
    assert not can_read(("users", "u1"), auth={"uid": "u2"})
    assert not can_read(("users", "u1"))
    # 'admin' matches the literal rule only, not the $uid rule.
    assert not can_read(("users", "admin"), auth={"uid": "admin"})
    assert can_read(("users", "admin"), auth={"admin": True})


def test_data_is_the_value_at_the_rule_location():
    tree = {"users": {"u1": {"card": {"shared": True}}, "u2": {"card": {"shared": False}}}}
    assert can_read(("users", "u1", "card"), data=tree)
    assert not can_read(("users", "u2", "card"), data=tree)
    assert can_read(("users", "u2", "card"), data=tree, auth={"uid": "u2"})


# -- writes


CHAT = RuleSet.from_json({"rules": {
    ".write": "auth.admin == true",
    "rooms": {
        "$room": {
            ".write": "auth != null && root.child('members/' + $room + '/' + auth.uid).val() == true",
            ".validate": "newData.hasChildren(['title'])",
            "title": {".validate": "newData.isString() && newData.val().length <= 20"},
            "messages": {
                "$msg": {
                    ".validate": "newData.child('from').val() == auth.uid && "
                                 "(!data.exists() || data.child('from').val() == newData.child('from').val())",
                    "from": {".validate": "newData.isString()"},
                    "text": {".validate": "newData.isString()"},
                    "$other": {".validate": False},
                },
            },
        },
    },
    "counters": {
        "$name": {
            ".write": True,
            ".validate": "newData.isNumber() && (!data.exists() || newData.val() == data.val() + 1)",
        },
    },
    "stamps": {
        "$id": {
            ".write": "newData.val() == now || !newData.exists()",
            ".validate": "newData.parent().parent().child('counters/stamps').exists()",
        },
    },
    "deep": {
        ".write": True,
        "a": {"b": {"c": {".validate": "newData.val() == 'c'"}, "$x": {".validate": "newData.val() == $x"}}},
    },
}})

MEMBERS = {"members": {"r1": {"u1": True, "u2": True}}}


def can_write(rules: RuleSet, old, path: tuple[str, ...], value, *, auth=None, now=NOW) -> bool:
    """Set ``value`` at ``path`` of ``old`` (stored form, nulls removed) and ask the rules."""
    return rules.can_write(old, set_value(old, path, value), path, auth=auth, now=now)


def set_value(tree, path: tuple[str, ...], value):
    if not path:
        return value
    base = dict(tree) if isinstance(tree, dict) else {}
    child = set_value(base.get(path[0]), path[1:], value)
    if child is None:
        base.pop(path[0], None)
    else:
        base[path[0]] = child
    return base or None


def test_write_permitted_by_a_rule_on_the_way_down():
    room = {"title": "hi"}
    assert can_write(CHAT, MEMBERS, ("rooms", "r1"), room, auth={"uid": "u1"})
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), room, auth={"uid": "u3"})
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), room)
    assert can_write(CHAT, MEMBERS, ("rooms", "r1"), room, auth={"admin": True})  # the root rule grants


def test_rules_below_the_written_path_do_not_grant():
    assert not can_write(CHAT, MEMBERS, ("rooms",), {"r1": {"title": "hi"}}, auth={"uid": "u1"})
    assert can_write(CHAT, MEMBERS, ("rooms",), {"r1": {"title": "hi"}}, auth={"admin": True})


def test_validate_on_the_written_location():
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), {"name": "no title"}, auth={"uid": "u1"})
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), {"name": "x"}, auth={"admin": True})  # validate binds all


def test_validate_on_descendants_of_the_new_data():
    auth = {"uid": "u1"}
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), {"title": 5}, auth=auth)
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), {"title": "x" * 21}, auth=auth)
    good = {"title": "t", "messages": {"m1": {"from": "u1", "text": "hello"}}}
    assert can_write(CHAT, MEMBERS, ("rooms", "r1"), good, auth=auth)
    forged = {"title": "t", "messages": {"m1": {"from": "u2", "text": "hello"}}}
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), forged, auth=auth)
    bad_text = {"title": "t", "messages": {"m1": {"from": "u1", "text": 5}}}
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), bad_text, auth=auth)
    extra_field = {"title": "t", "messages": {"m1": {"from": "u1", "text": "x", "colour": "red"}}}
    assert not can_write(CHAT, MEMBERS, ("rooms", "r1"), extra_field, auth=auth)


def test_validate_on_the_way_down_sees_the_merged_new_tree():
    auth = {"uid": "u1"}
    old = {**MEMBERS, "rooms": {"r1": {"title": "t"}}}
    assert can_write(CHAT, old, ("rooms", "r1", "messages", "m1"), {"from": "u1", "text": "x"}, auth=auth)
    assert not can_write(CHAT, old, ("rooms", "r1", "messages", "m1"), {"from": "u2", "text": "x"}, auth=auth)
    assert can_write(CHAT, old, ("rooms", "r1", "title"), "new", auth=auth)
    # Deleting its only child deletes the room itself: nothing there to validate.
    assert can_write(CHAT, old, ("rooms", "r1", "title"), None, auth=auth)
    # With a message left, the room (an ancestor of the write) would lose its title: its .validate fails.
    busy = {**MEMBERS, "rooms": {"r1": {"title": "t", "messages": {"m1": {"from": "u1", "text": "a"}}}}}
    assert not can_write(CHAT, busy, ("rooms", "r1", "title"), None, auth=auth)


def test_data_and_new_data_at_each_location():
    auth = {"uid": "u1"}
    old = {**MEMBERS, "rooms": {"r1": {"title": "t", "messages": {"m1": {"from": "u1", "text": "a"}}}}}
    assert can_write(CHAT, old, ("rooms", "r1", "messages", "m1", "text"), "edited", auth=auth)
    stolen = {**MEMBERS, "rooms": {"r1": {"title": "t", "messages": {"m1": {"from": "u2", "text": "a"}}}}}
    assert not can_write(CHAT, stolen, ("rooms", "r1", "messages", "m1"), {"from": "u1", "text": "b"}, auth=auth)


def test_deletes_skip_validation():
    auth = {"uid": "u1"}
    old = {**MEMBERS, "rooms": {"r1": {"title": "t", "messages": {"m1": {"from": "u2", "text": "a"}}}}}
    assert can_write(CHAT, old, ("rooms", "r1", "messages", "m1"), None, auth=auth)
    assert can_write(CHAT, old, ("rooms", "r1"), None, auth=auth)
    assert can_write(CHAT, {"counters": {"c": 7}}, ("counters", "c"), None)


def test_write_then_validate_with_data_and_new_data():
    assert can_write(CHAT, None, ("counters", "c"), 1)
    assert can_write(CHAT, {"counters": {"c": 1}}, ("counters", "c"), 2)
    assert not can_write(CHAT, {"counters": {"c": 1}}, ("counters", "c"), 3)
    assert not can_write(CHAT, None, ("counters", "c"), "one")
    admin = {"admin": True}
    assert not can_write(CHAT, None, ("counters",), {"a": 1, "b": "two"}, auth=admin)  # each child validates
    assert can_write(CHAT, {"counters": {"a": 1}}, ("counters",), {"a": 2, "b": 9}, auth=admin)
    assert not can_write(CHAT, {"counters": {"a": 1}}, ("counters",), {"a": 5, "b": 9}, auth=admin)
    assert not can_write(CHAT, {"counters": {"a": 1}}, ("counters",), {"a": 2, "b": 9})  # $name/.write is below


def test_root_is_the_old_tree_and_new_data_navigates_the_new_one():
    old = {"counters": {"stamps": 1}}
    assert can_write(CHAT, old, ("stamps", "s1"), NOW)
    assert not can_write(CHAT, old, ("stamps", "s1"), NOW - 1)
    assert not can_write(CHAT, None, ("stamps", "s1"), NOW)  # newData.parent().parent() has no counters
    # A multi-location write: new counters appear in the same update, visible through newData, not through root.
    both = {"counters": {"stamps": 1}, "stamps": {"s1": NOW}}
    assert CHAT.can_write(None, both, ("stamps", "s1"), auth=None, now=NOW)


def test_wildcards_in_descendant_validation():
    assert can_write(CHAT, None, ("deep",), {"a": {"b": {"x": "x", "yy": "yy", "c": "c"}}})
    assert not can_write(CHAT, None, ("deep",), {"a": {"b": {"x": "x", "yy": "y"}}})
    assert not can_write(CHAT, None, ("deep", "a", "b", "zz"), "z")
    assert can_write(CHAT, None, ("deep", "a", "b", "zz"), "zz")


def test_a_boolean_false_validate_refuses_and_no_write_rule_denies():
    rules = RuleSet.from_json({"rules": {"a": {".validate": True}, "b": {".write": True, ".validate": False}}})
    assert not can_write(rules, None, ("a",), 1)
    assert not can_write(rules, None, ("b",), 1)
    assert can_write(rules, {"b": 1}, ("b",), None)


def test_allow_all_allows_every_read_and_write():
    rules = RuleSet.allow_all()
    assert rules.can_read({"a": 1}, ("a", "b"), auth=None, now=0)
    assert can_write(rules, None, ("x", "y"), {"z": 1})
    assert can_write(rules, {"x": 1}, (), None)


# -- .indexOn


def test_index_on_with_literal_and_wildcard_locations():
    rules = RuleSet.from_json({"rules": {
        "msgs": {".indexOn": "ts"},
        "users": {"$uid": {"devices": {".indexOn": ["seen", "name"]}}},
    }})
    assert rules.index_on(("msgs",)) == ["ts"]
    assert rules.index_on(("users", "u9", "devices")) == ["seen", "name"]
    assert rules.index_on(("users", "u9")) == []
    assert rules.index_on(("nothing", "here")) == []
    assert rules.index_on(()) == []


# -- compiled once


def test_evaluation_never_parses_again(monkeypatch):
    rules = RuleSet.from_json({"rules": {"$k": {".read": "data.val().matches(/^ok/) && $k.length > 0"}}})

    def no_parsing(text):
        raise AssertionError(f"parsed {text!r} at evaluation time")

    monkeypatch.setattr(expr_module, "parse", no_parsing)
    monkeypatch.setattr(expr_module, "_tokenize", no_parsing)
    assert rules.can_read({"a": "okay"}, ("a",), auth=None, now=0)
    assert not rules.can_read({"a": "nope"}, ("a",), auth=None, now=0)


# -- robustness


FUZZ_TOKENS = [
    "auth", "auth.uid", "auth.n", "auth.obj", "now", "root", "data", "query", "$k", "root.child('a')",
    "data.val()", ".val()", ".child('a/b')", ".parent()", ".exists()", ".hasChildren(['a'])", ".length",
    ".contains('x')", ".replace('a', 'b')", ".matches(/^a.*$/i)", "[0]", "['a']", "[$k]",
    "1", "0", "-1", "2.5", "1e308", "'a'", "''", "true", "false", "null",
    "+", "-", "*", "/", "%", "==", "!==", "<", ">=", "&&", "||", "!", "?", ":", "(", ")", ",",
]
FUZZ_ATOMS = {
    "bool": ["true", "false", "auth.n", "data.exists()", "$k.contains('a')", "newData.child('b').isNumber()",
             "query.orderByKey"],
    "num": ["1", "0", "2.5", "1e308", "now", "auth.n", "data.child('b').val()", "$k.length", "auth.obj[$k]",
            "query.limitToFirst"],
    "str": ["'a'", "'text'", "$k", "auth.uid", "data.val()", "root.child('s').val()", "auth.obj.a[1]"],
}
FUZZ_TREE = {"a": {"b": 1, "c": "str"}, "n": 5, "s": "text"}
FUZZ_AUTHS = [None, {"uid": "u1", "n": 3, "obj": {"a": [1, "x"]}}, {"uid": 7, "n": "3", "obj": "s"}]


def test_any_expression_loads_or_is_refused_and_evaluation_never_raises():
    import random

    from emulator.rules import RulesParseError

    rng = random.Random(20240611)

    def token_soup() -> str:
        return " ".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randint(1, 9))).replace(" .", ".")

    def typed(kind: str, depth: int = 0) -> str:
        """A random expression of the given static kind: valid at load, often failing at run time."""
        if depth >= 4 or rng.random() < 0.3:
            return rng.choice(FUZZ_ATOMS[kind])
        def b() -> str:
            return typed("bool", depth + 1)

        def n() -> str:
            return typed("num", depth + 1)

        def t() -> str:
            return typed("str", depth + 1)

        forms = {
            "bool": [lambda: f"!({b()})", lambda: f"({n()} {rng.choice(['<', '>=', '=='])} {n()})",
                     lambda: f"({t()} {rng.choice(['==', '!=', '<'])} {t()})", lambda: f"({b()} && {b()})",
                     lambda: f"({b()} || {b()})", lambda: f"({b()} ? {b()} : {b()})",
                     lambda: f"({t()}).contains({t()})",
                     lambda: f"({t()}).matches(/^t.*[0-9]?$/i)", lambda: f"root.hasChildren([{t()}, 'a'])"],
            "num": [lambda: f"-({n()})", lambda: f"({n()} {rng.choice(['+', '-', '*', '/', '%'])} {n()})",
                    lambda: f"({t()}).length", lambda: f"({b()} ? {n()} : {n()})"],
            "str": [lambda: f"({t()} + {t()})", lambda: f"({t()} + {n()})", lambda: f"({t()}).toUpperCase()",
                    lambda: f"({t()}).replace({t()}, {t()})", lambda: f"({b()} ? {t()} : {t()})",
                    lambda: f"root.child({t()}).val()"],
        }
        return rng.choice(forms[kind])()

    loaded = 0
    for i in range(3000):
        rule = token_soup() if i % 2 else typed("bool")
        in_write = rule.replace("query", "newData")
        in_read = rule.replace("newData", "data")
        rules_json = {"rules": {"$k": {".read": in_read, ".write": in_write, ".validate": in_write}}}
        try:
            rules = RuleSet.from_json(rules_json)
        except RulesParseError as exc:
            assert str(exc).startswith("Parse error at /rules/$k/.")
            continue
        loaded += 1
        for auth in FUZZ_AUTHS:
            assert rules.can_read(FUZZ_TREE, ("a",), auth=auth, now=NOW) in (True, False)
            assert rules.can_write(FUZZ_TREE, {"a": {"b": 2}}, ("a",), auth=auth, now=NOW) in (True, False)
    assert loaded > 800  # many generated rules are valid, so evaluation is really exercised
