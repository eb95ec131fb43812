"""Our emulator at the edges of HTTP: an over-long request line costs one log line, not a traceback; paths that are
not UTF-8 once percent-decoded and parameters with values the service does not know are refused with 400."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from emulator import Emulator

OWNER = {"Authorization": "Bearer owner"}


@pytest.fixture
async def emulator_url():
    async with Emulator() as emulator:
        yield emulator.url


async def call(url: str, method: str, target: str, body: bytes | None = None) -> tuple[int, str]:
    """One request with ``target`` sent as is (no re-encoding), as owner, in namespace t."""
    sep = "&" if "?" in target else "?"
    async with aiohttp.ClientSession() as session, asyncio.timeout(20):
        async with session.request(method, aiohttp.client.URL(f"{url}{target}{sep}ns=t", encoded=True), data=body,
                                   headers=OWNER) as response:
            return response.status, await response.text()


async def test_an_over_long_request_line_is_refused_with_one_log_line(emulator_url, caplog):
    caplog.set_level(logging.DEBUG)
    status, _ = await call(emulator_url, "GET", "/" + "a" * 9000 + ".json")
    assert status == 400
    server = [r for r in caplog.records if r.name.startswith(("aiohttp", "emulator"))
              and r.levelno >= logging.INFO]
    assert len(server) == 1, [r.getMessage() for r in server]
    (record,) = server
    assert record.exc_info is None and record.levelno == logging.WARNING
    assert "8190" in record.getMessage() and "\n" not in record.getMessage()


async def test_a_path_that_is_not_utf8_is_an_invalid_path(emulator_url):
    status, text = await call(emulator_url, "PUT", "/%FF.json", b"1")
    assert status == 400 and "Invalid path" in text and "UTF-8" in text
    status, text = await call(emulator_url, "PUT", "/ok/%C3.json", b"1")
    assert status == 400 and "Invalid path" in text
    assert await call(emulator_url, "GET", "/.json") == (200, "null")
    status, text = await call(emulator_url, "PUT", "/caf%C3%A9.json", b"1")  # proper UTF-8 still works
    assert status == 200
    assert await call(emulator_url, "GET", "/.json") == (200, '{"caf\u00e9":1}')


@pytest.mark.parametrize("params, words", [
    ("print=bogus", "print"),
    ("format=export", "format=export"),
    ("format=bogus", "format"),
    ("timeout=-1", "timeout"),
    ("timeout=16min", "timeout"),
    ("timeout=3", "timeout"),
    ('orderBy="$key"&limitToFirst=99999999999999999999999', "limitToFirst"),
    ('orderBy="$key"&limitToLast=2147483648', "limitToLast"),
    ("print=%FF", "UTF-8"),
])
async def test_parameters_the_service_does_not_know_are_refused(emulator_url, params, words):
    for method, body in (("GET", None), ("PUT", b"1")):
        if "orderBy" in params and method == "PUT":
            continue
        status, text = await call(emulator_url, method, f"/p.json?{params}", body)
        assert status == 400, (method, text)
        assert words in text
    assert await call(emulator_url, "GET", "/.json") == (200, "null")


@pytest.mark.parametrize("params", ["print=pretty", "print=silent", "timeout=500ms", "timeout=3s", "timeout=15min",
                                    'orderBy="$key"&limitToFirst=2147483647'])
async def test_parameters_the_service_knows_are_still_accepted(emulator_url, params):
    status, _ = await call(emulator_url, "GET", f"/p.json?{params}")
    assert status in (200, 204)
