"""Security rules through the server: loading them, who the caller is, and denials without side effects.

Through firebase-admin and raw HTTP as owner; must also pass against Google's emulator.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests
from firebase_admin import db, exceptions

RULES_WITH_COMMENTS = """
// Each user owns users/<uid>; messages must be short strings.
{
  "rules": {
    /* nobody reads or writes the root */
    "users": {
      "$uid": {
        ".read": "auth != null && auth.uid === $uid",   // only the owner
        ".write": "auth != null && auth.uid === $uid",
        "name": { ".validate": "newData.isString() && newData.val().length <= 20" },
        "at": { ".validate": "newData.isNumber() && newData.val() <= now" }
      }
    },
    "public": { ".read": true, ".write": "auth != null" }
  }
}
"""


@pytest.fixture
def apps(firebase_app_factory):
    firebase_app_factory.load_rules(RULES_WITH_COMMENTS)
    return {
        "admin": firebase_app_factory.make(),
        "alice": firebase_app_factory.make({"uid": "alice"}),
        "bob": firebase_app_factory.make({"uid": "bob"}),
        "nobody": firebase_app_factory.make(None),
    }


def ref(apps, who: str, path: str) -> db.Reference:
    return db.reference(path, app=apps[who])


def test_owner_reads_and_writes_own_data(apps):
    ref(apps, "alice", "/users/alice/name").set("Alice")
    assert ref(apps, "alice", "/users/alice").get() == {"name": "Alice"}


def test_other_user_is_denied_with_permission_denied(apps):
    ref(apps, "alice", "/users/alice/name").set("Alice")
    with pytest.raises(exceptions.UnauthenticatedError) as info:
        ref(apps, "bob", "/users/alice").get()
    assert "Permission denied" in str(info.value)
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "bob", "/users/alice/name").set("Mallory")
    assert ref(apps, "admin", "/users/alice/name").get() == "Alice"


def test_unauthenticated_override_is_denied(apps):
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "nobody", "/public/x").set(1)
    assert ref(apps, "nobody", "/public").get() is None  # public read is allowed


def test_admin_bypasses_rules(apps):
    ref(apps, "admin", "/anything/at/all").set({"name": "x" * 100})
    assert ref(apps, "admin", "/anything/at/all/name").get() == "x" * 100


def test_rules_are_not_filters(apps):
    ref(apps, "alice", "/users/alice/name").set("Alice")
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "alice", "/users").get()


def test_validate_refuses_bad_data_without_side_effect(apps):
    ref(apps, "alice", "/users/alice/name").set("Alice")
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "alice", "/users/alice/name").set("x" * 21)
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "alice", "/users/alice/name").set(5)
    assert ref(apps, "alice", "/users/alice/name").get() == "Alice"


def test_server_timestamp_passes_now_validation(apps):
    ref(apps, "alice", "/users/alice/at").set({".sv": "timestamp"})
    assert isinstance(ref(apps, "alice", "/users/alice/at").get(), int)


def test_denied_push_creates_nothing(apps):
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "bob", "/users/alice/things").push({"x": 1})
    assert ref(apps, "admin", "/users").get() is None


def test_multi_path_update_fails_whole_when_one_path_is_denied(apps):
    ref(apps, "admin", "/users").set({"alice": {"name": "A"}, "bob": {"name": "B"}})
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "alice", "/users").update({"alice/name": "A2", "bob/name": "B2"})
    assert ref(apps, "admin", "/users").get() == {"alice": {"name": "A"}, "bob": {"name": "B"}}
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "alice", "/users/alice").update({"name": "fine", "at": "not a number"})
    ref(apps, "alice", "/users/alice").update({"name": "A3", "at": {".sv": "timestamp"}})
    assert ref(apps, "admin", "/users/alice/name").get() == "A3"


def test_denied_delete_keeps_data(apps):
    ref(apps, "alice", "/users/alice/name").set("Alice")
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "bob", "/users/alice").delete()
    assert ref(apps, "admin", "/users/alice/name").get() == "Alice"


def test_denied_transaction_changes_nothing(apps):
    ref(apps, "admin", "/users/alice/name").set("Alice")
    with pytest.raises(exceptions.UnauthenticatedError):
        ref(apps, "bob", "/users/alice/name").transaction(lambda current: "Bob")
    assert ref(apps, "admin", "/users/alice/name").get() == "Alice"


def test_query_variables_in_read_rules(firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {"items": {
        ".read": "query.orderByChild == 'owner' && query.equalTo == auth.uid",
        ".indexOn": ["owner"],
    }}})
    admin = firebase_app_factory.make()
    db.reference("/items", app=admin).set({"a": {"owner": "alice"}, "b": {"owner": "bob"}})
    items = db.reference("/items", app=firebase_app_factory.make({"uid": "alice"}))
    assert items.order_by_child("owner").equal_to("alice").get() == {"a": {"owner": "alice"}}
    with pytest.raises(exceptions.UnauthenticatedError):
        items.order_by_child("owner").equal_to("bob").get()
    with pytest.raises(exceptions.UnauthenticatedError):
        items.get()


# -- the rules settings endpoint -------------------------------------------------------------------------------

OWNER = {"Authorization": "Bearer owner"}


def _rules_url(emulator) -> str:
    return f"{emulator.url}/.settings/rules.json"


def test_rules_round_trip_in_strict_format(emulator, namespace):
    rules = {"rules": {"a": {".read": "auth != null", ".write": False}}}
    put = requests.put(_rules_url(emulator), params={"ns": namespace}, data=json.dumps(rules), headers=OWNER,
                       timeout=30)
    assert put.status_code == 200
    got = requests.get(_rules_url(emulator), params={"ns": namespace, "format": "strict"}, headers=OWNER,
                       timeout=30)
    assert got.status_code == 200
    assert got.json() == rules


def test_rules_text_with_comments_is_accepted_over_http(emulator, namespace):
    put = requests.put(_rules_url(emulator), params={"ns": namespace}, data=RULES_WITH_COMMENTS.encode(),
                       headers=OWNER, timeout=30)
    assert put.status_code == 200, put.text
    got = requests.get(_rules_url(emulator), params={"ns": namespace, "format": "strict"}, headers=OWNER,
                       timeout=30)
    assert got.json()["rules"]["public"] == {".read": True, ".write": "auth != null"}


@pytest.mark.parametrize("text", [
    "{not json",
    '{"rules": {".read": "auth.uid ==="}}',
    '{"rules": {".read": 7}}',
    '{"rules": {".read": "7"}}',
    '{"rules": {".write": "unknownVariable == 1"}}',
    '{"rules": {"$a": {"$b": {}}, "$c": {}}}',
])
def test_invalid_rules_are_refused_with_parse_error(emulator, namespace, text):
    before = requests.get(_rules_url(emulator), params={"ns": namespace, "format": "strict"}, headers=OWNER,
                          timeout=30).json()
    put = requests.put(_rules_url(emulator), params={"ns": namespace}, data=text.encode(), headers=OWNER,
                       timeout=30)
    assert put.status_code == 400
    assert "Parse error" in put.text
    after = requests.get(_rules_url(emulator), params={"ns": namespace, "format": "strict"}, headers=OWNER,
                         timeout=30).json()
    assert after == before


def test_rules_settings_need_the_owner(emulator, namespace):
    put = requests.put(_rules_url(emulator), params={"ns": namespace}, data=b'{"rules": {".read": true}}',
                       timeout=30)
    assert put.status_code in (401, 403)
    put = requests.put(_rules_url(emulator), params={"ns": namespace, "auth_variable_override": '{"uid":"x"}'},
                       data=b'{"rules": {".read": true}}', headers=OWNER, timeout=30)
    assert put.status_code in (401, 403)


def test_rules_are_per_namespace(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {".read": False, ".write": False}})
    other = namespace + "-b"
    requests.put(_rules_url(emulator), params={"ns": other}, data=b'{"rules": {".read": true, ".write": true}}',
                 headers=OWNER, timeout=30).raise_for_status()
    try:
        ok = requests.put(f"{emulator.url}/x.json", params={"ns": other, "auth_variable_override": "null"},
                          data=b"1", timeout=30)
        assert ok.status_code == 200
        denied = requests.put(f"{emulator.url}/x.json", params={"ns": namespace, "auth_variable_override": "null"},
                              data=b"1", timeout=30)
        assert denied.status_code == 401
        assert denied.json() == {"error": "Permission denied"}
    finally:
        emulator.clear(other)


def test_request_without_any_credential_is_unauthenticated(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {".read": "auth == null", ".write": "auth != null"}})
    assert requests.get(f"{emulator.url}/.json", params={"ns": namespace}, timeout=30).status_code == 200
    assert requests.put(f"{emulator.url}/a.json", params={"ns": namespace}, data=b"1",
                        timeout=30).status_code == 401


def test_id_token_in_auth_param_sets_auth_uid(emulator, namespace, firebase_app_factory):
    firebase_app_factory.load_rules({"rules": {"users": {"$uid": {".read": "auth.uid === $uid",
                                                                   ".write": "auth.uid === $uid"}}}})

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    token = ".".join([part({"alg": "none", "typ": "JWT"}),
                      part({"sub": "carol", "user_id": "carol", "iat": 0, "exp": 2**31,
                            "firebase": {"sign_in_provider": "custom"}}), ""])
    ok = requests.put(f"{emulator.url}/users/carol.json", params={"ns": namespace, "auth": token}, data=b'"hi"',
                      timeout=30)
    assert ok.status_code == 200, ok.text
    denied = requests.put(f"{emulator.url}/users/dave.json", params={"ns": namespace, "auth": token}, data=b'"x"',
                          timeout=30)
    assert denied.status_code == 401
