"""Tests for core.session: the sans-I/O reliable stream, driven with an injected clock and no links."""

from __future__ import annotations

import random

import pytest

from core.errors import PeerTimeoutError, ProtocolError
from core.protocol.stream import (
    WAIT_ACK,
    WAIT_PONG,
    WAIT_WINDOW,
    Acked,
    BadFrame,
    Deliver,
    PeerGone,
    ReliableStream,
    RttMeasured,
    SlowEnded,
    SlowStarted,
    StreamTimers,
    WriteFrame,
)


def frames(actions):
    return [a.frame for a in actions if isinstance(a, WriteFrame)]


def delivered(actions):
    return [(a.kind, a.data) for a in actions if isinstance(a, Deliver)]


def of(actions, cls):
    return [a for a in actions if isinstance(a, cls)]


def test_send_assigns_increasing_sequence_numbers_and_writes_frames():
    s = ReliableStream()
    seq1, a1 = s.send("data", "a", 0.0)
    seq2, a2 = s.send("binary", b"b", 0.0)
    assert (seq1, seq2) == (1, 2)
    assert frames(a1) == [{"kind": "data", "seq": 1, "data": "a"}]
    assert frames(a2) == [{"kind": "binary", "seq": 2, "data": b"b"}]
    assert s.in_flight == 2


def test_send_refuses_control_kinds_and_non_strings():
    s = ReliableStream()
    with pytest.raises(ValueError):
        s.send("ack", "", 0.0)
    with pytest.raises(TypeError):
        s.send("data", b"x", 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.send("binary", "Yg==", 0.0)  # binary data is bytes, never base64 text
    assert s.next_seq == 1  # nothing was queued


NO_DELAY = StreamTimers(ack_delay=0)


def test_receiver_delivers_in_order_and_acks_cumulatively():
    r = ReliableStream(NO_DELAY)
    acts = r.receive({"kind": "data", "seq": 1, "data": "x"}, 0.0)
    assert delivered(acts) == [("data", "x")]
    assert frames(acts) == [{"kind": "ack", "seq": 1}]


def test_acks_are_delayed_and_coalesced_unless_the_sender_waits():
    r = ReliableStream(StreamTimers(ack_delay=0.05, window=32))
    assert frames(r.receive({"kind": "data", "seq": 1, "data": "a"}, 0.0)) == []
    assert frames(r.receive({"kind": "binary", "seq": 2, "data": b"b"}, 0.01)) == []
    assert r.ack_due == pytest.approx(0.05)
    assert r.flush_ack(0.04) == []
    assert frames(r.flush_ack(0.05)) == [{"kind": "ack", "seq": 2}]
    assert r.ack_due is None
    # A frame whose sender waits for confirmation, and signal/close frames, are acknowledged at once.
    assert frames(r.receive({"kind": "data", "seq": 3, "data": "c", "confirm": True}, 0.1)) == [{"kind": "ack", "seq": 3}]
    assert frames(r.receive({"kind": "signal", "seq": 4, "data": "{}"}, 0.1)) == [{"kind": "ack", "seq": 4}]
    # So is a quarter of the window delivered without an acknowledgement.
    acks = []
    for seq in range(5, 13):
        acks += frames(r.receive({"kind": "data", "seq": seq, "data": "x"}, 0.2))
    assert acks == [{"kind": "ack", "seq": 12}]
    # tick() flushes a due acknowledgement too.
    r.receive({"kind": "data", "seq": 13, "data": "x"}, 1.0)
    assert {"kind": "ack", "seq": 13} in frames(r.tick(1.1))


def test_send_marks_frames_the_sender_waits_for():
    s = ReliableStream()
    _, acts = s.send("data", "x", 0, confirm=True)
    assert frames(acts) == [{"kind": "data", "seq": 1, "data": "x", "confirm": True}]


def test_receiver_reorders_out_of_order_frames():
    r = ReliableStream(NO_DELAY)
    assert delivered(r.receive({"kind": "data", "seq": 3, "data": "c"}, 0)) == []
    assert delivered(r.receive({"kind": "data", "seq": 2, "data": "b"}, 0)) == []
    acts = r.receive({"kind": "data", "seq": 1, "data": "a"}, 0)
    assert delivered(acts) == [("data", "a"), ("data", "b"), ("data", "c")]
    assert frames(acts) == [{"kind": "ack", "seq": 3}]


def test_receiver_drops_duplicates_and_acks_again():
    r = ReliableStream(NO_DELAY)
    r.receive({"kind": "data", "seq": 1, "data": "a"}, 0)
    acts = r.receive({"kind": "data", "seq": 1, "data": "a"}, 0)
    assert delivered(acts) == []
    assert frames(acts) == [{"kind": "ack", "seq": 1}]


def test_ack_releases_in_flight_and_reports_acked():
    s = ReliableStream()
    for i in range(3):
        s.send("data", str(i), 0)
    acts = s.receive({"kind": "ack", "seq": 2}, 0.1)
    assert of(acts, Acked) == [Acked(2)]
    assert s.in_flight == 1 and s.acked == 2
    # An old ack changes nothing.
    assert s.receive({"kind": "ack", "seq": 1}, 0.2) == []


def test_ack_for_a_frame_never_sent_is_a_protocol_error():
    s = ReliableStream()
    s.send("data", "x", 0)
    (bad,) = s.receive({"kind": "ack", "seq": 5}, 0)
    assert isinstance(bad, BadFrame) and isinstance(bad.error, ProtocolError)
    assert s.acked == 0


def test_window_holds_back_frames_until_acks_arrive():
    s = ReliableStream(StreamTimers(window=2))
    written = []
    for i in range(5):
        _, acts = s.send("data", str(i), 0)
        written += frames(acts)
    assert [f["seq"] for f in written] == [1, 2]
    assert s.queued == 3
    acts = s.receive({"kind": "ack", "seq": 1}, 0.1)
    assert [f["seq"] for f in frames(acts)] == [3]
    acts = s.receive({"kind": "ack", "seq": 3}, 0.2)
    assert [f["seq"] for f in frames(acts)] == [4, 5]
    assert s.queued == 0


def test_retransmits_unacked_frames_after_the_interval():
    s = ReliableStream(StreamTimers(retransmit_interval=1.0, ping_interval=100))
    s.send("data", "x", 0)
    s.tick(0.0)  # first ping goes out
    assert [f for f in frames(s.tick(0.5)) if f["kind"] == "data"] == []
    assert [f["seq"] for f in frames(s.tick(1.0)) if f["kind"] == "data"] == [1]
    assert [f for f in frames(s.tick(1.5)) if f["kind"] == "data"] == []
    s.receive({"kind": "ack", "seq": 1}, 1.6)
    assert [f for f in frames(s.tick(5.0)) if f["kind"] == "data"] == []


def test_resend_unacked_after_a_link_switch_then_receiver_dedups():
    """Frames written on a link that died are written again; the receiver sees each once, in order."""
    a, b = ReliableStream(NO_DELAY), ReliableStream(NO_DELAY)
    sent = []
    for i in range(5):
        _, acts = a.send("data", str(i), 0)
        sent += frames(acts)
    got = []
    for f in sent[:3]:  # the first three arrived before the link failed
        acts = b.receive(f, 0)
        got += delivered(acts)
        for ack in frames(acts):
            if ack["seq"] < 2:  # only the first ack made it back
                a.receive(ack, 0)
    resent = frames(a.resend_unacked(1.0))
    assert [f["seq"] for f in resent] == [2, 3, 4, 5]
    for f in resent:
        got += delivered(b.receive(f, 1.0))
    assert got == [("data", str(i)) for i in range(5)]


def test_random_loss_duplication_and_reordering_delivers_everything_once_in_order():
    rng = random.Random(7)
    a = ReliableStream(StreamTimers(window=8, retransmit_interval=0.5, ping_interval=1000, peer_timeout=1e9))
    b = ReliableStream(StreamTimers(window=8, retransmit_interval=0.5, ping_interval=1000, peer_timeout=1e9))
    wire_ab, wire_ba, got = [], [], []
    for i in range(200):
        _, acts = a.send("data", f"m{i}", 0)
        wire_ab += frames(acts)
    now = 0.0
    for _ in range(2000):
        now += 0.1
        rng.shuffle(wire_ab)
        nxt = []
        for f in wire_ab:
            if rng.random() < 0.3:
                continue  # lost
            acts = b.receive(f, now)
            got += delivered(acts)
            wire_ba += frames(acts)
            if rng.random() < 0.1:
                nxt.append(f)  # duplicated
        wire_ab = nxt
        for f in wire_ba:
            if rng.random() < 0.3:
                continue
            wire_ab += frames(a.receive(f, now))
        wire_ba = []
        wire_ab += [f for f in frames(a.tick(now)) if f["kind"] != "ping"]
        if a.acked == 200:
            break
    assert got == [("data", f"m{i}") for i in range(200)]
    assert a.acked == 200 and a.in_flight == 0


def test_ping_pong_measures_rtt():
    a, b = ReliableStream(), ReliableStream()
    pings = [f for f in frames(a.tick(10.0)) if f["kind"] == "ping"]
    assert pings == [{"kind": "ping", "seq": 1}]
    pongs = frames(b.receive(pings[0], 10.1))
    assert pongs == [{"kind": "pong", "seq": 1}]
    acts = a.receive(pongs[0], 10.25)
    assert of(acts, RttMeasured) == [RttMeasured(pytest.approx(0.25))]
    assert a.rtt == pytest.approx(0.25)
    # A pong nobody asked for is ignored.
    assert a.receive({"kind": "pong", "seq": 99}, 11) == []


def test_pings_repeat_every_interval():
    a = ReliableStream(StreamTimers(ping_interval=2.0))
    count = 0
    for t in range(0, 10):
        count += len([f for f in frames(a.tick(float(t))) if f["kind"] == "ping"])
    assert count == 5  # at 0, 2, 4, 6, 8


def test_peer_gone_after_silence_and_only_once():
    a = ReliableStream(StreamTimers(peer_timeout=5.0), now=0.0)
    assert of(a.tick(4.9), PeerGone) == []
    a.receive({"kind": "pong", "seq": 1}, 4.9)  # anything heard resets the clock
    assert of(a.tick(9.8), PeerGone) == []
    (gone,) = of(a.tick(9.9), PeerGone)
    assert isinstance(gone.error, PeerTimeoutError) and gone.error.seconds == 5.0
    assert a.tick(20) == []


def test_slow_acknowledgement_reported_then_recovered():
    a = ReliableStream(StreamTimers(slow_after=1.0, ack_timeout=10, ping_interval=1000, retransmit_interval=100))
    a.send("data", "x", 0)

    def ack_slow(acts):
        return [x for x in of(acts, SlowStarted) if x.what == WAIT_ACK]

    a.tick(0.0)
    a.receive({"kind": "pong", "seq": 1}, 0.0)
    assert ack_slow(a.tick(0.5)) == []
    (slow,) = ack_slow(a.tick(1.2))
    assert slow.waited == pytest.approx(1.2) and slow.timeout == 10
    assert ack_slow(a.tick(1.5)) == []  # reported once
    assert WAIT_ACK in a.slow
    acts = a.receive({"kind": "ack", "seq": 1}, 2.0)
    assert of(acts, SlowEnded) == [SlowEnded(WAIT_ACK)]
    assert a.slow == ()


def test_slow_probe_and_full_window_reported():
    a = ReliableStream(StreamTimers(window=1, slow_after=1.0, ping_interval=0.5, retransmit_interval=100))
    a.send("data", "1", 0)
    a.send("data", "2", 0)
    a.tick(0)
    whats = {s.what for s in of(a.tick(1.1), SlowStarted)}
    assert whats == {WAIT_ACK, WAIT_PONG, WAIT_WINDOW}
    acts = a.receive({"kind": "ack", "seq": 1}, 1.2)
    assert SlowEnded(WAIT_WINDOW) in acts
    acts = a.receive({"kind": "pong", "seq": 1}, 1.3)
    assert SlowEnded(WAIT_PONG) not in acts  # probe 2 (sent at 1.1) still unanswered
    acts = a.receive({"kind": "pong", "seq": 2}, 1.3)
    assert SlowEnded(WAIT_PONG) in acts


@pytest.mark.parametrize(
    "frame",
    [
        None,
        "text",
        [],
        {},
        {"kind": "nope", "seq": 1},
        {"kind": "data", "seq": "1", "data": "x"},
        {"kind": "data", "seq": 1.5, "data": "x"},
        {"kind": "data", "seq": True, "data": "x"},
        {"kind": "data", "seq": 0, "data": "x"},
        {"kind": "data", "seq": -3, "data": "x"},
        {"kind": "data", "seq": 1},
        {"kind": "data", "seq": 1, "data": 5},
        {"kind": "ack"},
        {"kind": "data", "seq": 10**12, "data": "x"},
        {"kind": "data", "seq": 1, "data": "x", "confirm": "yes"},
    ],
)
def test_malformed_frames_are_protocol_errors_and_change_nothing(frame):
    r = ReliableStream()
    (bad,) = r.receive(frame, 0)
    assert isinstance(bad, BadFrame) and isinstance(bad.error, ProtocolError)
    assert r.delivered == 0
    # The stream still works afterwards.
    assert delivered(r.receive({"kind": "data", "seq": 1, "data": "ok"}, 0)) == [("data", "ok")]


def test_frame_far_beyond_the_window_is_dropped():
    r = ReliableStream(StreamTimers(window=4))
    (bad,) = r.receive({"kind": "data", "seq": 5000, "data": "x"}, 0)
    assert isinstance(bad, BadFrame)
    # A peer with a larger window (up to MAX_WINDOW frames) is not refused.
    assert r.receive({"kind": "data", "seq": 4000, "data": "x"}, 0) == []
    assert r.delivered == 0
