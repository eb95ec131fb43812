"""Tests for the manager's relay status: :class:`core.presence.RelayHealth` (no I/O), then two managers on an
emulator of the test's own that the test stops and starts again (``relay_unavailable`` once, then
``relay_restored``)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from core import events as ev
from core.errors import PermissionDeniedError, RelayUnavailableError
from core.options import ManagerOptions
from core.protocol.presence import RelayHealth
from core.relay.heartbeat import Heartbeat

try:
    from .relay_support import manager_pairs, wait_for
except ImportError:  # tests/ is not a package
    from relay_support import manager_pairs, wait_for


DOWN = RelayUnavailableError("The database could not be reached to write presence/alice/laptop (refused).")


# ------------------------------------------------------------------------------------------- the pure object
def test_a_single_failure_is_not_an_outage():
    health = RelayHealth(failures=2)
    assert health.failure("heartbeat", DOWN, 10.0) is None
    assert health.available
    assert health.success("heartbeat", 11.0) is None
    assert health.failure("heartbeat", DOWN, 12.0) is None
    assert health.available


def test_consecutive_failures_declare_one_outage_since_the_first_failure():
    health = RelayHealth(failures=2)
    assert health.failure("heartbeat", DOWN, 10.0) is None
    down = health.failure("heartbeat", DOWN, 15.0)
    assert isinstance(down, ev.RelayUnavailable)
    assert down.since == 10.0 and down.error is DOWN and "could not be reached" in down.reason
    assert not health.available
    # Further failures, from any source, belong to the same outage.
    for t in range(16, 30):
        assert health.failure("heartbeat", DOWN, float(t)) is None
        assert health.failure("presence listener", DOWN, float(t)) is None
    assert not health.available


def test_the_outage_ends_when_every_failing_source_succeeded_again():
    health = RelayHealth(failures=2)
    health.failure("heartbeat", DOWN, 10.0)
    health.failure("presence listener", DOWN, 10.5)
    assert health.failure("presence listener", DOWN, 11.0) is not None
    assert health.success("heartbeat", 12.0) is None, "the listener still fails"
    up = health.success("presence listener", 14.0)
    assert up == ev.RelayRestored(since=10.0, duration=4.0)
    assert health.available
    assert health.success("heartbeat", 15.0) is None
    # A new outage is reported anew.
    health.failure("heartbeat", DOWN, 20.0)
    again = health.failure("heartbeat", DOWN, 21.0)
    assert isinstance(again, ev.RelayUnavailable) and again.since == 20.0


def test_the_reason_is_the_errors_message_or_a_default():
    health = RelayHealth(failures=1)
    denied = PermissionDeniedError("The database refused to write presence/alice/laptop.")
    assert health.failure("heartbeat", denied, 1.0).reason == str(denied)
    health = RelayHealth(failures=1)
    assert health.failure("heartbeat", RelayUnavailableError(""), 1.0).reason  # never empty


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="failures"):
        RelayHealth(failures=0)


# ------------------------------------------------------------------------------- the heartbeat's reporting
async def test_a_heartbeat_write_left_unanswered_counts_as_a_failure_each_interval():
    answer = asyncio.Event()
    errors: list[BaseException] = []
    successes: list[None] = []

    async def write(record):  # a write the network never answers until the test says so
        await answer.wait()

    beat = Heartbeat(write, "Laptop", 0.05, on_error=errors.append, on_success=lambda: successes.append(None))
    beat.start()
    try:
        async with asyncio.timeout(10):
            while len(errors) < 3:
                await asyncio.sleep(0.01)
        assert all(isinstance(e, RelayUnavailableError) and "not answered" in str(e) for e in errors), errors
        assert not successes and beat.beats == 0
        answer.set()
        async with asyncio.timeout(10):
            while not successes:
                await asyncio.sleep(0.01)
        assert beat.beats >= 1
    finally:
        await beat.stop()


async def test_a_failing_heartbeat_write_is_reported_and_retried():
    calls = 0
    errors: list[BaseException] = []
    successes: list[None] = []

    async def write(record):
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RelayUnavailableError("The database could not be reached.")

    beat = Heartbeat(write, "Laptop", 0.02, on_error=errors.append, on_success=lambda: successes.append(None))
    beat.start()
    try:
        async with asyncio.timeout(10):
            while not successes:
                await asyncio.sleep(0.01)
        assert len(errors) == 2 and beat.failures == 2
    finally:
        await beat.stop()


# --------------------------------------------------------------------------------------- on a real emulator
OPTIONS = ManagerOptions(
    heartbeat_interval=0.3,
    connect_timeout=10.0,
    peer_timeout=8.0,
    listener_silence_timeout=10.0,
    close_timeout=0.5,
    webrtc=False, direct=False,
)


@pytest.fixture
async def own_emulator():
    async with manager_pairs("health") as make:
        yield make


async def test_relay_outage_is_reported_once_then_restored(own_emulator):
    emu = own_emulator.emulator
    a, b = own_emulator("laptop", OPTIONS), own_emulator("phone", OPTIONS)
    seen: dict[str, list[tuple[str, object]]] = {"laptop": [], "phone": []}
    for m, name in ((a, "laptop"), (b, "phone")):
        m.events.on(ev.RELAY_UNAVAILABLE, lambda e, n=name: seen[n].append(("down", e)))
        m.events.on(ev.RELAY_RESTORED, lambda e, n=name: seen[n].append(("up", e)))
    await a.start()
    await b.start()
    assert a.relay_available and b.relay_available
    await wait_for(lambda: a._view.get("phone") is not None, what="the peer online")

    await emu.stop()
    await wait_for(lambda: seen["laptop"] and seen["phone"], what="relay_unavailable on both")
    for name, m in (("laptop", a), ("phone", b)):
        kind, down = seen[name][0]
        assert kind == "down" and isinstance(down, ev.RelayUnavailable), seen[name]
        assert down.reason and isinstance(down.error, RelayUnavailableError)
        assert not m.relay_available
    # Several heartbeats and resubscriptions fail while it is down; still one event per outage.
    beats = a._heartbeat.failures
    await wait_for(lambda: a._heartbeat.failures >= beats + 2, what="more failed heartbeats")
    assert [k for k, _ in seen["laptop"]] == ["down"]

    await emu.start()
    await wait_for(lambda: a.relay_available and b.relay_available, what="relay_restored on both")
    for name in ("laptop", "phone"):
        assert [k for k, _ in seen[name]] == ["down", "up"], seen[name]
        up = seen[name][1][1]
        assert up.since == seen[name][0][1].since and up.duration >= 0
    # Presence works again after the outage.
    await wait_for(lambda: a._view.get("phone") is not None and b._view.get("laptop") is not None)
