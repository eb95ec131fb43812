"""Tests for core.webrtc across OS processes: over loopback, and between network namespaces joined by a veth pair.

Each peer runs ``webrtc_peer.py`` in its own process; this test only carries their signals from one stdout to the
other's stdin, as the relay would. Namespaces (and their private addresses) exist only for the test's duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PEER = Path(__file__).with_name("webrtc_peer.py")
LIMIT = 60.0  # bound on a whole two-process run; never an assertion about speed


async def run_pair(offerer: list[str], answerer: list[str]) -> dict[str, list[dict]]:
    """Run two peers (command prefixes, e.g. ``["ip", "netns", "exec", "x"]``), relay their signals, return events."""
    procs = {
        role: await asyncio.create_subprocess_exec(
            *prefix, sys.executable, str(PEER), "--role", role, *args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for role, (prefix, args) in {"offerer": _split(offerer), "answerer": _split(answerer)}.items()
    }
    events: dict[str, list[dict]] = {"offerer": [], "answerer": []}
    other = {"offerer": "answerer", "answerer": "offerer"}

    async def pump(role: str) -> None:
        stdout = procs[role].stdout
        assert stdout is not None
        while line := await stdout.readline():
            item = json.loads(line)
            if "signal" in item:
                target = procs[other[role]].stdin
                assert target is not None
                if not target.is_closing():
                    target.write(line)
                    await target.drain()
            else:
                events[role].append(item)

    try:
        async with asyncio.timeout(LIMIT):
            await asyncio.gather(pump("offerer"), pump("answerer"))
            for proc in procs.values():
                await proc.wait()
    finally:
        for role, proc in procs.items():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            assert proc.stderr is not None
            errors = (await proc.stderr.read()).decode(errors="replace")
            if proc.returncode != 0 or errors.strip():
                print(f"--- {role} (exit {proc.returncode}) stderr:\n{errors}")
    return events


def _split(command: list[str]) -> tuple[list[str], list[str]]:
    """``[*prefix, "--", *args]`` -> (prefix, args)."""
    cut = command.index("--")
    return command[:cut], command[cut + 1 :]


def names(events: list[dict]) -> list[str]:
    return [event["event"] for event in events]


async def test_two_processes_connect_over_loopback() -> None:
    loopback = ["--", "--host-address", "127.0.0.1"]
    events = await run_pair(loopback, loopback)
    assert names(events["offerer"]) == ["open", "done", "closed"], events
    assert events["offerer"][1]["echoed"] == 201
    assert names(events["answerer"]) == ["open", "closed"], events
    assert events["answerer"][-1]["initiator"] == "peer"


# --- network namespaces -----------------------------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"pcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"network namespaces are not allowed here: {getattr(exc, 'stderr', '') or exc}"
    _ip("netns", "del", probe)
    return None


@pytest.fixture(scope="module")
def netns_reason() -> str | None:
    return _namespaces_unavailable()


@pytest.fixture
def veth_pair(netns_reason: str | None) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair, 10.213.0.1 and 10.213.0.2; deleted afterwards."""
    if netns_reason:
        pytest.skip(netns_reason)
    tag = os.getpid() % 100000
    ns_a, ns_b = f"pcwa{tag}", f"pcwb{tag}"
    created = []
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns_a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", ns_b)
        for ns, address in ((ns_a, "10.213.0.1/24"), (ns_b, "10.213.0.2/24")):
            device = "veth0" if ns == ns_a else "veth1"
            _ip("-n", ns, "addr", "add", address, "dev", device)
            _ip("-n", ns, "link", "set", device, "up")
        yield ns_a, ns_b
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not build the veth pair: {exc.stderr.strip()}")
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def loopback_only_namespace(netns_reason: str | None) -> Iterator[str]:
    """A namespace whose only interface is loopback; deleted afterwards."""
    if netns_reason:
        pytest.skip(netns_reason)
    ns = f"pcwl{os.getpid() % 100000}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


async def test_peers_in_two_namespaces_connect_over_a_veth_pair(veth_pair: tuple[str, str]) -> None:
    ns_a, ns_b = veth_pair
    # Default gathering: each side finds its veth address by itself (plus the loopback candidate).
    events = await run_pair(["ip", "netns", "exec", ns_a, "--"], ["ip", "netns", "exec", ns_b, "--"])
    assert names(events["offerer"]) == ["open", "done", "closed"], events
    assert names(events["answerer"]) == ["open", "closed"], events


async def test_with_only_loopback_the_loopback_candidate_is_what_connects(loopback_only_namespace: str) -> None:
    inside = ["ip", "netns", "exec", loopback_only_namespace]
    events = await run_pair([*inside, "--"], [*inside, "--"])
    assert names(events["offerer"]) == ["open", "done", "closed"], events


async def test_without_the_loopback_candidate_a_loopback_only_machine_cannot_connect(
    loopback_only_namespace: str,
) -> None:
    inside = ["ip", "netns", "exec", loopback_only_namespace]
    without = ["--", "--no-loopback", "--timeout", "2"]
    events = await run_pair([*inside, *without], [*inside, *without])
    assert names(events["offerer"]) == ["failed"], events
    assert "network path" in events["offerer"][0]["error"]


async def test_a_slow_receiver_process_keeps_the_senders_buffer_under_the_high_water_mark() -> None:
    # 96 messages of 64 KiB (6 MiB) at a receiver that blocks 5 ms per message, with a 256 KiB high-water mark.
    loopback = ["--host-address", "127.0.0.1", "--high-water", str(256 * 1024)]
    events = await run_pair(["--", *loopback, "--flood", "96"], ["--", *loopback, "--slow", "0.005"])
    assert names(events["offerer"]) == ["open", "done", "closed"], events
    done = events["offerer"][1]
    assert done["max_buffered"] <= done["high_water"] + done["frame"]
    assert done["max_buffered"] > done["high_water"] // 4, "the sender must actually have filled its buffer"
