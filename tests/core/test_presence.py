"""Tests for core.presence: the sans-I/O presence view (clock offset, freshness, malformed records) and heartbeats."""

from __future__ import annotations

import asyncio

import pytest

from core.peer import DeviceStatus, PeerInfo
from core.protocol.presence import PresenceView, peer_from_record
from core.protocol.records import heartbeat_record, valid_id
from core.relay.heartbeat import Heartbeat


def rec(label, last_seen_s, online=True):
    return {"label": label, "lastSeen": int(last_seen_s * 1000), "online": online}


def test_lists_fresh_online_peers_but_not_itself():
    v = PresenceView("me", stale_after=15)
    changed = v.update({"me": rec("mine", 1000), "a": rec("laptop", 1000), "b": rec("phone", 1000)}, now=1000.0)
    assert changed
    assert v.online == (PeerInfo("a", "laptop"), PeerInfo("b", "phone"))
    assert not v.update({"me": rec("mine", 1000), "a": rec("laptop", 1000), "b": rec("phone", 1000)}, now=1000.0)


def test_clean_stop_shows_offline_at_once():
    v = PresenceView("me", stale_after=15)
    v.update({"me": rec("m", 100), "a": rec("l", 100)}, now=100.0)
    assert v.update({"me": rec("m", 100), "a": rec("l", 101, online=False)}, now=101.0)
    assert v.online == ()


def test_stale_heartbeat_goes_offline_after_stale_after():
    v = PresenceView("me", stale_after=15)
    v.update({"me": rec("m", 100), "a": rec("l", 100)}, now=100.0)
    assert not v.refresh(114.9)
    assert v.online
    assert v.refresh(115.1)
    assert v.online == ()


def test_freshness_is_judged_on_the_server_clock():
    # The local clock is an hour behind the server: without the offset every peer would look fresh for an hour.
    v = PresenceView("me", stale_after=15)
    server = 10_000.0
    local = server - 3600
    v.update({"me": rec("m", server), "a": rec("l", server - 20)}, now=local + 0.01)
    assert v.offset == pytest.approx(3600 - 0.01)
    assert v.online == ()  # 20 s old on the server's clock
    v.update({"me": rec("m", server), "a": rec("l", server - 5)}, now=local + 0.02)
    assert v.online == (PeerInfo("a", "l"),)


def test_offset_estimate_takes_the_smallest_delay():
    v = PresenceView("me", stale_after=15)
    v.update({"me": rec("m", 100.0)}, now=100.5)  # arrived 0.5 s late
    v.update({"me": rec("m", 105.0)}, now=105.05)  # arrived 0.05 s late
    assert v.offset == pytest.approx(-0.05)


def test_known_devices_include_offline_ones_with_last_seen_on_the_local_clock():
    # The server is 100 s ahead of this machine: a last_seen shown as local time must subtract that.
    v = PresenceView("me", stale_after=15)
    devices = {
        "me": rec("m", 1100.0),
        "a": rec("laptop", 1099.0),
        "b": rec("phone", 900.0, online=False),
        "c": rec("tablet", 1000.0),  # claims online, but its heartbeat is stale
    }
    assert v.update(devices, now=1000.0)
    assert v.offset == pytest.approx(100.0)
    assert v.known == (
        DeviceStatus(PeerInfo("a", "laptop"), True, pytest.approx(999.0)),
        DeviceStatus(PeerInfo("b", "phone"), False, pytest.approx(800.0)),
        DeviceStatus(PeerInfo("c", "tablet"), False, pytest.approx(900.0)),
    )
    assert v.online == (PeerInfo("a", "laptop"),)


def test_a_new_offline_device_or_a_new_label_is_a_change_but_a_heartbeat_is_not():
    v = PresenceView("me", stale_after=15)
    assert not v.update({"me": rec("m", 100)}, now=100.0)
    assert v.update({"me": rec("m", 100), "b": rec("phone", 50, online=False)}, now=100.0)
    assert v.online == ()
    assert v.update({"me": rec("m", 100), "b": rec("my phone", 50, online=False)}, now=100.0)
    assert v.update({"me": rec("m", 101), "b": rec("my phone", 101)}, now=101.0)
    assert not v.update({"me": rec("m", 102), "b": rec("my phone", 102)}, now=102.0)
    assert v.known[0].last_seen == pytest.approx(102.0)


def test_peer_from_one_record():
    assert peer_from_record("a", rec("laptop", 5)) == PeerInfo("a", "laptop")
    assert peer_from_record("a", rec("laptop", 5, online=False)) == PeerInfo("a", "laptop")
    assert peer_from_record("a", None) is None
    assert peer_from_record("a", {"label": "", "lastSeen": 5, "online": True}) is None
    assert peer_from_record("bad/id", rec("laptop", 5)) is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "x",
        {"label": "", "lastSeen": 1, "online": True},
        {"label": 5, "lastSeen": 1, "online": True},
        {"label": "l", "lastSeen": "1", "online": True},
        {"label": "l", "lastSeen": True, "online": True},
        {"label": "l", "lastSeen": 1, "online": "yes"},
        {"label": "l" * 101, "lastSeen": 1, "online": True},
        {"lastSeen": 1, "online": True},
    ],
)
def test_malformed_records_are_skipped(raw):
    v = PresenceView("me", stale_after=15)
    v.update({"me": rec("m", 1), "bad": raw, "a": rec("l", 1)}, now=1.0)
    assert v.online == (PeerInfo("a", "l"),)


def test_malformed_tree_and_bad_ids_are_skipped():
    v = PresenceView("me", stale_after=15)
    assert not v.update("garbage", now=1.0)
    v.update({"bad/id": rec("x", 1), "a" * 65: rec("x", 1), "ok": rec("x", 1)}, now=1.0)
    assert [p.id for p in v.online] == ["ok"]


def test_valid_id():
    assert valid_id("d0a1b2c3d4e5") and valid_id("user@example") and valid_id("a:b+c=d~e-f_g")
    for bad in ("", "a.b", "a/b", "a$b", "a#b", "a[b", "a b", "x" * 65, 5, None):
        assert not valid_id(bad)


async def test_heartbeat_writes_records_and_survives_errors():
    written, errors = [], []
    fail = {"n": 1}

    async def write(record):
        if fail["n"]:
            fail["n"] -= 1
            raise RuntimeError("relay down")
        written.append(record)

    hb = Heartbeat(write, "laptop", interval=0.01, on_error=errors.append)
    hb.start()
    async with asyncio.timeout(10):
        while len(written) < 2:
            await asyncio.sleep(0.01)
    await hb.stop()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert written[0] == heartbeat_record("laptop") == {"label": "laptop", "lastSeen": {".sv": "timestamp"}, "online": True}
    await hb.stop()  # twice is fine
