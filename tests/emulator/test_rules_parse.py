"""Loading rules: file text with comments, the rules tree's shape, and expressions refused at load time."""

from __future__ import annotations

import re

import pytest

from emulator.rules import RuleSet, RulesParseError


def load(rule: str, key: str = ".read", *, under: tuple[str, ...] = ()) -> RuleSet:
    node: dict = {key: rule}
    for name in reversed(under):
        node = {name: node}
    return RuleSet.from_json({"rules": node})


def refused(rule: str, key: str = ".read", *, under: tuple[str, ...] = ()) -> str:
    with pytest.raises(RulesParseError) as info:
        load(rule, key, under=under)
    message = str(info.value)
    assert message.startswith("Parse error")
    return message


# -- the rules file


def test_from_text_accepts_line_and_block_comments():
    text = """
    // peerchat rules
    {
      /* everything
         below */
      "rules": {
        ".read": "auth != null", // signed in
        "users": { "$uid": { ".write": "auth.uid === $uid" } }
      }
    }
    """
    rules = RuleSet.from_text(text)
    assert rules.to_json() == {
        "rules": {".read": "auth != null", "users": {"$uid": {".write": "auth.uid === $uid"}}}
    }


def test_comment_markers_inside_json_strings_are_kept():
    text = r'{"rules": {".read": "root.child(\"a//b/*c*/\").val() == \"//\""}}'
    rules = RuleSet.from_text(text)
    assert rules.to_json()["rules"][".read"] == 'root.child("a//b/*c*/").val() == "//"'
    assert rules.can_read({"a": {"b": {"*c*": "//"}}}, (), auth=None, now=0)


def test_invalid_json_says_line_and_column():
    with pytest.raises(RulesParseError, match=r"^Parse error: invalid JSON at line 4, column 2: "):
        RuleSet.from_text('{\n "rules": {\n ".read": true,\n }\n}')


@pytest.mark.parametrize("text, reason", [
    ('{"rules": {".read": true, ".read": false}}', "appears twice"),
    ('{"rules": {".read": NaN}}', "NaN is not valid JSON"),
    ('{"rules": {}} /* open', "never closed"),
    ('[]', "of the form"),
])
def test_bad_rules_text_is_refused(text, reason):
    with pytest.raises(RulesParseError, match="^Parse error") as info:
        RuleSet.from_text(text)
    assert reason in str(info.value)


@pytest.mark.parametrize("obj", [
    None, [], {"rules": True}, {"rules": {}, "other": 1}, {"rule": {}}, {},
])
def test_from_json_needs_exactly_a_rules_object(obj):
    with pytest.raises(RulesParseError, match="^Parse error"):
        RuleSet.from_json(obj)


def test_to_json_returns_the_rules_as_loaded_and_a_copy():
    source = {"rules": {"a": {".indexOn": ["x", "y"], ".validate": "newData.isString()"}, ".write": False}}
    rules = RuleSet.from_json(source)
    out = rules.to_json()
    assert out == source
    out["rules"]["a"] = {}
    source["rules"]["b"] = {}
    assert rules.to_json() == {"rules": {"a": {".indexOn": ["x", "y"], ".validate": "newData.isString()"},
                                         ".write": False}}


def test_allow_all_is_read_and_write_true():
    assert RuleSet.allow_all().to_json() == {"rules": {".read": True, ".write": True}}


# -- the rules tree


def test_unknown_rule_key_is_refused_with_its_location():
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/a/\.raed: unknown rule key '\.raed'"):
        RuleSet.from_json({"rules": {"a": {".raed": True}}})


def test_child_rules_must_be_objects():
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/a/b: expected an object of rules, got a string"):
        RuleSet.from_json({"rules": {"a": {"b": "auth != null"}}})


def test_only_one_wildcard_per_level():
    with pytest.raises(RulesParseError, match="only one \\$wildcard is allowed per level"):
        RuleSet.from_json({"rules": {"users": {"$a": {}, "$b": {}}}})


def test_a_wildcard_name_may_not_repeat_below_itself():
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/\$x/y/\$x: the wildcard '\$x' is already used"):
        RuleSet.from_json({"rules": {"$x": {"y": {"$x": {}}}}})


def test_the_same_wildcard_name_in_sibling_branches_is_fine():
    rules = RuleSet.from_json({"rules": {"a": {"$id": {".read": True}}, "b": {"$id": {".read": True}}}})
    assert rules.can_read(None, ("b", "k"), auth=None, now=0)


@pytest.mark.parametrize("key", ["a.b", "a#", "a[0]", "$", "a$b", "a\x01"])
def test_invalid_child_keys_are_refused(key):
    with pytest.raises(RulesParseError, match="invalid key"):
        RuleSet.from_json({"rules": {key: {}}})


@pytest.mark.parametrize("value", [1, None, ["auth != null"], {"x": 1}])
def test_a_rule_must_be_a_boolean_or_a_string(value):
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/\.write: a rule must be a boolean or a string"):
        RuleSet.from_json({"rules": {".write": value}})


@pytest.mark.parametrize("value", [1, ["a", 2], [""], None, {"a": 1}])
def test_index_on_must_name_children(value):
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/m/\.indexOn"):
        RuleSet.from_json({"rules": {"m": {".indexOn": value}}})


# -- expressions refused at load


def test_message_names_location_column_and_expression():
    message = refused("auth.uid === 'a' = 'b'", ".write", under=("users", "$uid"))
    assert message == ("Parse error at /rules/users/$uid/.write, column 18: assignment ('=') is not allowed; "
                       "compare with '==' or '===' (in: auth.uid === 'a' = 'b')")


@pytest.mark.parametrize("rule, reason", [
    ("", "the rule is empty"),
    ("   ", "the rule is empty"),
    ("auth.uid == 'a';", "';' is not allowed"),
    ("auth.uid == 'a", "unterminated string literal"),
    ("auth.uid ==", "unexpected end of expression"),
    ("(auth != null", "expected ')'"),
    ("auth != null)", "unexpected ')' after a complete expression"),
    ("auth != null ? true", "expected ':'"),
    ("auth auth", "an operator is missing"),
    ("auth.uid & true", "unexpected character '&'"),
    ("auth.uid == 'a' | true", "unexpected character '|'"),
    ("auth.", "expected a name after '.'"),
    ("1 ** 2 == 1", "unexpected '*'"),
    ("+1 == 1", "unexpected '+'"),
    ("'a\\u12' == 'a'", "invalid \\u escape"),
    ("7", "must be a boolean expression, this one is a number"),
    ("null", "must be a boolean expression, this one is a null"),
    ("now > 0 ? 'yes' : false", "must be a boolean expression"),
    ("data", "must be a boolean expression, this one is a snapshot"),
    ("foo == 1", "unknown variable 'foo'"),
    ("$uid == 'a'", "unknown variable '$uid'"),
    ("newData.exists()", "newData is not available in .read rules"),
    ("data.exist()", "a snapshot has no method 'exist'"),
    ("data.exists", "a snapshot has no property 'exists' (did you mean exists()?)"),
    ("data.foo == 1", "a snapshot has no property 'foo'"),
    ("data['exists']()", ""),  # written literally in brackets: allowed, checked below
    ("data.child() .exists()", "child() takes 1 argument, 0 given"),
    ("data.child('a', 'b').exists()", "child() takes 1 argument, 2 given"),
    ("data.child(1).exists()", "the argument of child() must be a string, not a number"),
    ("data.hasChild(true)", "the argument of hasChild() must be a string"),
    ("data.exists(1)", "exists() takes 0 arguments, 1 given"),
    ("data.hasChildren([])", "at least one child name"),
    ("data.hasChildren('a')", "list literal"),
    ("data.hasChildren(['a'], ['b'])", "hasChildren() takes 1 argument, 2 given"),
    ("['a'] == ['a']", "a list may only be the argument of hasChildren()"),
    ("data.val().matches('^a$')", "matches() takes a regex literal"),
    ("data.val().matches(/a/g)", "unsupported regex flag 'g'"),
    ("data.val().matches(/a/ii)", "more than once"),
    ("data.val().matches(/a^b/)", "'^' may only be the first character"),
    ("data.val().matches(/a$b/)", "'$' may only be the last character"),
    ("data.val().matches(/(?=a)/)", "groups with '(?' are not supported"),
    ("data.val().matches(/a(/)", "invalid regular expression"),
    ("data.val().matches(/[a-/)", "unterminated regex literal"),  # the '/' is inside the class
    ("data.val().matches(/abc", "unterminated regex literal"),
    ("/a/ == 1", "a regex literal may only be the argument of matches()"),
    ("'abc'.size() == 3", "a string has no method 'size'"),
    ("'abc'.contains() ", "contains() takes 1 argument, 0 given"),
    ("'abc'.replace('a') == 'b'", "replace() takes 2 arguments, 1 given"),
    ("'abc'.beginsWith(1)", "an argument of beginsWith() must be a string, not a number"),
    ("'abc'.toLowerCase(1) == 'abc'", "toLowerCase() takes 0 arguments"),
    ("'abc'.foo == 1", "a string has no property 'foo'"),
    ("now.foo == 1", "a number has no property 'foo'"),
    ("now.toString() == '1'", "a number has no method 'toString'"),
    ("exists()", "only methods can be called"),
    ("data[auth.uid].exists()", "cannot index a snapshot"),
    ("'abc'[0] == 'a'", "cannot index a string"),
    ("auth[true] == 1", "an index must be a number or string, not a boolean"),
    ("query.limit == 1", "query has no member 'limit'"),
    ("query == null", "an operand of '==' cannot be a query"),
    ("root == data", "an operand of '==' cannot be a snapshot"),
    ("!1", "the operand of '!' must be a boolean, not a number"),
    ("-'a' == 1", "the operand of unary '-' must be a number, not a string"),
    ("true + 1 == 2", "an operand of '+' must be a number or string, not a boolean"),
    ("'a' - 1 == 1", "an operand of '-' must be a number, not a string"),
    ("null < 1", "an operand of '<' must be a number or string, not a null"),
    ("1 < 'a'", "'<' compares a number with a string"),
    ("1 && true", "an operand of '&&' must be a boolean, not a number"),
    ("true || 'a'", "an operand of '||' must be a boolean, not a string"),
    ("1 ? true : false", "the condition of '?:' must be a boolean"),
    ("auth != null ? data : root", "the branches of '?:' must be plain values"),
])
def test_invalid_expressions_are_refused_at_load(rule, reason):
    if rule == "data['exists']()":
        assert load(rule).can_read({"a": 1}, (), auth=None, now=0)
        return
    message = refused(rule)
    assert message.startswith("Parse error at /rules/.read, column ")
    assert reason in message
    assert f"(in: {rule})" in message


def test_columns_point_at_the_offending_token():
    message = refused("auth != null && data.exits()")
    column = int(re.search(r"column (\d+)", message).group(1))
    assert "auth != null && data.exits()"[column - 1:].startswith("exits")


@pytest.mark.parametrize("rule", [
    "newData.exists() && newData.val() != data.val()",
    "data.child('x').val() == newData.child('x').val()",
    "newData.parent().child('a').exists()",
])
@pytest.mark.parametrize("key", [".write", ".validate"])
def test_new_data_is_allowed_in_write_and_validate(rule, key):
    load(rule, key)


@pytest.mark.parametrize("key", [".write", ".validate"])
def test_query_is_only_allowed_in_read(key):
    assert "query is only available in .read rules" in refused("query.orderByKey == true", key)


def test_wildcards_from_every_ancestor_are_in_scope():
    rules = load("$a + '/' + $b == 'x/y'", under=("$a", "sub", "$b"))
    assert rules.can_read(None, ("x", "sub", "y"), auth=None, now=0)
    assert not rules.can_read(None, ("x", "sub", "z"), auth=None, now=0)


def test_a_wildcard_is_not_in_scope_beside_its_branch():
    with pytest.raises(RulesParseError, match=r"^Parse error at /rules/other/\.read, column 1: unknown variable '\$a'"):
        RuleSet.from_json({"rules": {"$a": {".read": "true"}, "other": {".read": "$a == 'x'"}}})


@pytest.mark.parametrize("rule", [
    "true", "false", " true ", "auth != null", "auth.token.email_verified == true",
    "auth.uid === 'a' || auth.uid !== 'b'", "now < 1e13", "now > .5", "1.5e3 == 1500",
    "data.val() == 'a' ? true : false", "(((true)))", "!!true",
    "root.child('a').child('b').parent().hasChildren(['b'])", "auth.foo[0] == null",
    "auth.someInt.toLowerCase() == 'x'",  # unknown type at load: only the run time can tell
    "data.val().length > 3", "'a\\'b\"c\\n'.length == 6", "\"x\" == 'x'",
    "data.val().matches(/^[A-Z0-9._%+-]+@[A-Z0-9.-]+\\.[A-Z]{2,4}$/i)",
    "data.val().matches(/\\/\\d+\\s*[^\\]]/)",
    "data.getPriority() == null",
    "query.limitToFirst <= 50 && query.orderByChild == 'ts' && query.startAt != null",
])
def test_valid_expressions_load(rule):
    load(rule)


# -- limits that keep a hostile or broken rules file from crashing the emulator


@pytest.mark.parametrize("rule", [
    "(" * 500 + "true" + ")" * 500,
    "!" * 500 + "true",
    "-" * 500 + "1 == 1",
    "1" + " + 1" * 500 + " > 0",
])
def test_expressions_nested_too_deeply_are_refused(rule):
    assert "the expression is nested more than 100 levels deep" in refused(rule)


def test_long_and_or_chains_are_not_nesting():
    assert load(" && ".join(["auth.uid != 'x'"] * 2000)).can_read(None, (), auth=None, now=0)
    assert load(" || ".join(["false"] * 2000) + " || true").can_read(None, (), auth=None, now=0)
    assert not load(" || ".join(["false"] * 2000)).can_read(None, (), auth=None, now=0)


def test_rules_nested_too_deeply_are_refused():
    node: dict = {".read": True}
    for _ in range(200):
        node = {"a": node}
    with pytest.raises(RulesParseError, match="the rules are nested more than 64 levels deep"):
        RuleSet.from_json({"rules": node})
    with pytest.raises(RulesParseError, match="^Parse error: the JSON is nested too deeply"):
        RuleSet.from_text("[" * 100_000)


def test_the_public_surface():
    import emulator.rules as package

    assert package.__all__ == ["RuleSet", "RulesParseError"]
    assert issubclass(RulesParseError, ValueError)


def test_the_project_rules_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    rules = RuleSet.from_text(path.read_text(encoding="utf-8"))
    assert rules.to_json()["rules"]
