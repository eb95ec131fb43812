"""Our emulator only: its Python API (restart, rules, clear), its command, keep-alives and resource limits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from emulator import Emulator, RulesParseError

WAIT = 20.0
OWNER = {"Authorization": "Bearer owner"}
ROOT = Path(__file__).resolve().parents[2]


async def _request(session: aiohttp.ClientSession, method: str, url: str, body: bytes | None = None,
                   **params: str) -> tuple[int, object]:
    async with session.request(method, url, params={"ns": "t", **params}, data=body, headers=OWNER) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def _read_events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, object]]:
    """The next ``count`` events of a stream (keep-alives included), as (event, parsed data)."""
    events: list[tuple[str, object]] = []
    name = None
    async with asyncio.timeout(WAIT):
        while len(events) < count:
            line = (await response.content.readline()).decode()
            if not line:
                raise AssertionError(f"the stream ended after {events}")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line[len("data: "):])))
    return events


def test_public_names():
    import emulator

    assert sorted(emulator.__all__) == ["DEFAULT_PORT", "DataError", "Emulator", "RuleSet", "RulesParseError",
                                             "load_ruleset"]


async def test_restart_keeps_port_and_data_and_cuts_streams():
    emu = Emulator()
    await emu.start()
    port = emu.port
    try:
        async with aiohttp.ClientSession() as session:
            assert await _request(session, "PUT", f"{emu.url}/a.json", b'{"x": 1}') == (200, {"x": 1})
            stream = await session.get(f"{emu.url}/a.json", params={"ns": "t"},
                                       headers={**OWNER, "Accept": "text/event-stream"})
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"x": 1}})]
            await emu.stop()
            with pytest.raises((aiohttp.ClientError, AssertionError)):
                await _read_events(stream, 1)
            stream.close()
            with pytest.raises(aiohttp.ClientConnectionError):
                await _request(session, "GET", f"{emu.url}/a.json")
            await emu.start()
            assert emu.port == port
            assert await _request(session, "GET", f"{emu.url}/a.json") == (200, {"x": 1})
    finally:
        await emu.stop()


async def test_keepalive_events_on_an_idle_stream():
    async with Emulator(keepalive_interval=0.05) as emu, aiohttp.ClientSession() as session:
        async with session.get(f"{emu.url}/k.json", params={"ns": "t"},
                               headers={**OWNER, "Accept": "text/event-stream"}) as stream:
            events = await _read_events(stream, 3)
            assert events[0] == ("put", {"path": "/", "data": None})
            assert events[1:] == [("keep-alive", None), ("keep-alive", None)]


async def test_load_rules_default_and_per_namespace_and_clear():
    async with Emulator(rules={"rules": {".read": False, ".write": False}}) as emu, \
            aiohttp.ClientSession() as session:
        url = f"{emu.url}/x.json"
        denied = await _request(session, "PUT", url, b"1", auth_variable_override="null")
        assert denied == (401, {"error": "Permission denied"})
        emu.load_rules('// open\n{"rules": {".read": true, ".write": true}}', namespace="t")
        assert await _request(session, "PUT", url, b"1", auth_variable_override="null") == (200, 1)
        assert emu.get("t", "/x") == 1
        emu.clear("t")
        assert emu.get("t") is None
        emu.load_rules(None, namespace="t")  # back to the default rules
        assert (await _request(session, "GET", url, auth_variable_override="null"))[0] == 401
        with pytest.raises(RulesParseError):
            emu.load_rules({"rules": {".read": "nonsense ==="}})


async def test_auth_param_owner_is_admin_and_bad_tokens_are_refused():
    async with Emulator(rules={"rules": {".read": False, ".write": False}}) as emu, \
            aiohttp.ClientSession() as session:
        async with session.put(f"{emu.url}/a.json", params={"ns": "t", "auth": "owner"}, data=b"1") as response:
            assert response.status == 200
        for token in ("garbage", "a.b.c", "a.e30.c"):  # not a JWT, bad base64, no subject
            async with session.get(f"{emu.url}/a.json", params={"ns": "t", "auth": token}) as response:
                assert response.status == 401
                assert "auth token" in (await response.json())["error"]


async def test_rules_from_a_file(tmp_path):
    rules_file = tmp_path / "database.rules.json"
    rules_file.write_text('{ /* closed */ "rules": {".read": false} }')
    async with Emulator(rules=rules_file) as emu, aiohttp.ClientSession() as session:
        assert (await _request(session, "GET", f"{emu.url}/.json", auth_variable_override="null"))[0] == 401
        status, text = await _request(session, "GET", f"{emu.url}/.settings/rules.json", format="strict")
        assert (status, text) == (200, {"rules": {".read": False}})


def test_in_thread_handle_from_synchronous_code():
    import requests

    with Emulator.in_thread() as emu:
        requests.put(f"{emu.url}/a.json", params={"ns": "s"}, data=b'"v"', headers=OWNER, timeout=WAIT)
        assert emu.get("s", "a") == "v"
        emu.load_rules({"rules": {".read": False}}, namespace="s")
        assert requests.get(f"{emu.url}/a.json", params={"ns": "s", "auth_variable_override": "null"},
                            timeout=WAIT).status_code == 401
        port = emu.port
        emu.stop_in_thread()
        emu.start_in_thread()
        assert emu.port == port and emu.get("s", "a") == "v"


async def test_oversized_body_is_refused_with_413():
    async with Emulator(max_body_bytes=1000) as emu, aiohttp.ClientSession() as session:
        status, body = await _request(session, "PUT", f"{emu.url}/big.json", json.dumps("x" * 2000).encode())
        assert status == 413 and "too large" in body["error"]
        assert await _request(session, "GET", f"{emu.url}/big.json") == (200, None)
        assert (await _request(session, "PUT", f"{emu.url}/ok.json", b'"small"'))[0] == 200


async def test_stalled_listener_is_dropped_when_its_buffer_overflows():
    async with Emulator(listener_buffer_bytes=64 * 1024, keepalive_interval=60) as emu, \
            aiohttp.ClientSession() as session:
        stalled = socket.create_connection((emu.host, emu.port), timeout=WAIT)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /big.json?ns=t HTTP/1.1\r\nHost: {emu.host_port}\r\n"
                        "Accept: text/event-stream\r\nAuthorization: Bearer owner\r\n\r\n".encode())
        try:
            chunk = json.dumps("x" * 100_000).encode()
            for i in range(100):  # 10 MB, far more than the socket buffers and the 64 KB queue
                assert (await _request(session, "PUT", f"{emu.url}/big/k{i % 5}.json", chunk, print="silent"))[0] \
                    == 204
            # The stream was cut: reading it ends (EOF or reset) after a bounded amount of data.
            received = 0

            def drain() -> int:
                total = 0
                try:
                    while data := stalled.recv(65536):
                        total += len(data)
                except ConnectionResetError:
                    pass
                return total

            received = await asyncio.to_thread(drain)
            assert received < 8 * 1024 * 1024
        finally:
            stalled.close()


async def test_many_streams_receive_one_write_each():
    async with Emulator() as emu, aiohttp.ClientSession() as session:
        streams = [await session.get(f"{emu.url}/room.json", params={"ns": "t"},
                                     headers={**OWNER, "Accept": "text/event-stream"}) for _ in range(20)]
        try:
            for stream in streams:
                assert await _read_events(stream, 1) == [("put", {"path": "/", "data": None})]
            await _request(session, "PATCH", f"{emu.url}/room.json", b'{"a/b": 1, "c": 2}')
            for stream in streams:
                assert await _read_events(stream, 1) == [("patch", {"path": "/", "data": {"a/b": 1, "c": 2}})]
        finally:
            for stream in streams:
                stream.close()


async def test_listener_below_a_multi_path_update_gets_its_part():
    async with Emulator() as emu, aiohttp.ClientSession() as session:
        await _request(session, "PUT", f"{emu.url}/r.json", b'{"a": {"x": 1}, "b": 2}')
        async with session.get(f"{emu.url}/r/a.json", params={"ns": "t"},
                               headers={**OWNER, "Accept": "text/event-stream"}) as stream:
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"x": 1}})]
            await _request(session, "PATCH", f"{emu.url}/r.json", b'{"a/y": 2, "b": 3}')
            assert await _read_events(stream, 1) == [("patch", {"path": "/", "data": {"y": 2}})]
            await _request(session, "PATCH", f"{emu.url}/r.json", b'{"a": {"z": 3}}')
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"z": 3}})]


async def test_listener_with_a_query_gets_the_query_result(caplog):
    async with Emulator(rules={"rules": {".read": True, ".write": True}}) as emu, \
            aiohttp.ClientSession() as session:
        await _request(session, "PUT", f"{emu.url}/s.json", b'{"a": 1, "b": 5, "c": 3}')
        async with session.get(f"{emu.url}/s.json", params={"ns": "t", "orderBy": '"$value"', "limitToLast": "2"},
                               headers={**OWNER, "Accept": "text/event-stream"}) as stream:
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"b": 5, "c": 3}})]
            await _request(session, "PUT", f"{emu.url}/s/d.json", b"4")
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"b": 5, "d": 4}})]
            await _request(session, "PUT", f"{emu.url}/s/a.json", b"0")  # outside the window: nothing sent
            await _request(session, "PUT", f"{emu.url}/s/e.json", b"9")
            assert await _read_events(stream, 1) == [("put", {"path": "/", "data": {"b": 5, "e": 9}})]
    # Ordering by value without ".indexOn" is answered, with a warning naming the missing index.
    assert 'Index not defined, add ".indexOn": ".value"' in caplog.text


# -- the command -----------------------------------------------------------------------------------------------


def _command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "from peerchat.cli import main; main()", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_command_serves_until_sigterm_and_exits_cleanly():
    import requests

    process = _command("emulator", "--port", "0")
    try:
        first = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in first, first + process.stderr.read()
        url = first.split("listening on ")[1].split()[0]
        assert process.stdout.readline().startswith("export FIREBASE_DATABASE_EMULATOR_HOST=127.0.0.1:")
        assert requests.put(f"{url}/a.json", params={"ns": "c"}, data=b"1", headers=OWNER,
                            timeout=WAIT).status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT)
        assert process.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_command_says_in_one_line_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _command("emulator", "--port", str(port))
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 2
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0 and f"port {port}" in err and "in use" in err


def test_command_refuses_invalid_rules_in_one_line(tmp_path):
    bad = tmp_path / "bad.rules.json"
    bad.write_text('{"rules": {".read": "1 +"}}')
    process = _command("emulator", "--port", "0", "--rules", str(bad))
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 2
    assert "Parse error" in err and "Traceback" not in err
    missing = _command("emulator", "--port", "0", "--rules", str(tmp_path / "missing.json"))
    out, err = missing.communicate(timeout=WAIT)
    assert missing.returncode == 2 and "Traceback" not in err and "missing.json" in err
