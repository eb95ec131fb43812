"""Bad input over raw HTTP (what the SDK cannot send): always a clear 4xx, never 500/503, and nothing written.

Must also pass against Google's emulator; the body size limit is tested in test_server_api.py.
"""

from __future__ import annotations

import pytest
import requests

OWNER = {"Authorization": "Bearer owner"}


@pytest.fixture
def call(emulator, namespace):
    def call(method: str, path: str, body: bytes | None = None, **params: str) -> requests.Response:
        return requests.request(method, f"{emulator.url}{path}", params={"ns": namespace, **params}, data=body,
                                headers=OWNER, timeout=30)

    return call


def assert_refused(response: requests.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert isinstance(response.json().get("error"), str) and response.json()["error"]


@pytest.mark.parametrize("body", [b"{", b"{'single': 1}", b"undefined", b"[1,]", b"\xff\xfe", b"", b"NaN"])
def test_malformed_json_is_refused(call, body):
    assert_refused(call("PUT", "/a.json", body))
    assert_refused(call("POST", "/a.json", body))
    assert_refused(call("PATCH", "/a.json", body))
    assert call("GET", "/.json").json() is None


@pytest.mark.parametrize("body", [b'{"a.b": 1}', b'{"a": {"$x": 1}}', b'{"a#": 1}', b'{"[": 1}', b'{"": 1}',
                                  b'{"a": {"b\\u0001": 1}}', b'{"a/b": 1}'])
def test_invalid_keys_are_refused(call, body):
    assert_refused(call("PUT", "/k.json", body))
    assert call("GET", "/.json").json() is None


@pytest.mark.parametrize("path", ["/a.b.json", "/a$.json", "/a%23b.json", "/a[1].json"])
def test_invalid_paths_are_refused(call, path):
    assert_refused(call("PUT", path, b"1"))
    assert call("GET", "/.json").json() is None


def test_too_deep_data_is_refused(call):
    body = b'{"d":' * 40 + b"1" + b"}" * 40
    assert_refused(call("PUT", "/x.json", body))
    assert call("GET", "/.json").json() is None


def test_absurdly_nested_json_is_refused_not_crashed(call):
    assert_refused(call("PUT", "/x.json", b"[" * 100_000 + b"]" * 100_000))
    assert call("GET", "/.json").json() is None


def test_patch_needs_an_object(call):
    for body in (b"1", b'"s"', b"[1, 2]", b"null", b"true"):
        assert_refused(call("PATCH", "/p.json", body))
    assert call("GET", "/.json").json() is None


def test_overlapping_update_paths_are_refused(call):
    assert_refused(call("PATCH", "/p.json", b'{"a": 1, "a/b": 2}'))
    assert call("GET", "/.json").json() is None


def test_bad_query_parameters_are_refused(call):
    call("PUT", "/q.json", b'{"a": 1}').raise_for_status()
    assert_refused(call("GET", "/q.json", orderBy="unquoted"))
    assert_refused(call("GET", "/q.json", orderBy='"$key"', limitToFirst="-1"))
    assert_refused(call("GET", "/q.json", orderBy='"$key"', limitToFirst="x"))
    assert_refused(call("GET", "/q.json", orderBy='"$key"', startAt="{not json"))
    assert_refused(call("GET", "/q.json", orderBy='"$key"', limitToFirst="1", limitToLast="1"))


def test_bad_auth_override_is_refused(call):
    for override in ("{not json", "[1]", '"uid"', "7"):
        response = call("PUT", "/o.json", b"1", auth_variable_override=override)
        assert response.status_code in (400, 401), response.text
    assert call("GET", "/.json").json() is None


def test_a_refusal_never_looks_like_a_server_failure(call):
    # The SDK retries 500 and 503: a client's mistake must never be answered with them.
    for method, path, body in [("PUT", "/x.json", b"{"), ("PATCH", "/x.json", b"[]"), ("PUT", "/a..b.json", b"1"),
                               ("POST", "/x.json", b'{"k.": 1}')]:
        assert call(method, path, body).status_code < 500


def test_server_value_of_unknown_kind_is_refused(call):
    assert_refused(call("PUT", "/sv.json", b'{".sv": "nonsense"}'))
    assert_refused(call("PUT", "/sv.json", b'{".sv": {"increment": "one"}}'))
    assert call("GET", "/.json").json() is None
