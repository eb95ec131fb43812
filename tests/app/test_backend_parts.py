"""Tests for the pure parts of peerchat.backend: the event tap and error descriptions."""

from __future__ import annotations

from pyee.asyncio import AsyncIOEventEmitter

from core.errors import PeerOfflineError, PeerTimeoutError
from core.events import Data, Latency
from peerchat.backend import EventTap, describe_error


async def test_tap_buffers_until_attached_then_forwards_in_order():
    emitter = AsyncIOEventEmitter()
    tap = EventTap(emitter)
    emitter.emit("data", Data("one"))
    emitter.emit("latency", Latency(0.01, "relay"))
    emitter.emit("unrelated", 1)
    seen: list[tuple[str, object]] = []
    tap.attach(lambda name, payload: seen.append((name, payload)))
    emitter.emit("data", Data("two"))
    assert seen == [("data", Data("one")), ("latency", Latency(0.01, "relay")), ("data", Data("two"))]
    tap.close()
    emitter.emit("data", Data("three"))
    assert len(seen) == 3
    assert all(not emitter.listeners(name) for name in ("data", "latency", "closed"))


def test_describe_error_uses_core_messages_and_their_advice():
    text = describe_error("Connecting to laptop", PeerOfflineError("laptop (d1) is not online"))
    assert text == (
        "Connecting to laptop failed: laptop (d1) is not online. "
        "The device is not online (or not known). Start peerchat on it and try again."
    )
    assert describe_error("Sending", PeerTimeoutError("")).startswith("Sending failed: Something took longer")
    assert describe_error("Sending", RuntimeError("boom")) == "Sending failed: unexpected RuntimeError: boom"
