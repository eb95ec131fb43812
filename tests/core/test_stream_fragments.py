"""Tests for large messages in core.session: splitting into fragments, joining, limits (sans-I/O, no links)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from core.protocol.stream import Broken, Deliver, ReliableStream, StreamTimers, WriteFrame, split_utf8

SMALL = StreamTimers(ack_delay=0, max_frame_bytes=16, max_message_bytes=100, window=4)


def frames(actions):
    return [a.frame for a in actions if isinstance(a, WriteFrame)]


def delivered(actions):
    return [(a.kind, a.seq, a.data) for a in actions if isinstance(a, Deliver)]


def pump(sender: ReliableStream, receiver: ReliableStream, first: list, *, shuffle: random.Random | None = None):
    """Carry frames both ways until nothing moves; returns everything the receiver delivered."""
    out: list = []
    to_receiver = frames(first)
    for _ in range(1000):
        if not to_receiver:
            break
        if shuffle is not None:
            shuffle.shuffle(to_receiver)
        to_sender: list = []
        for frame in to_receiver:
            actions = receiver.receive(frame, 0.0)
            out += delivered(actions)
            to_sender += frames(actions)
        to_receiver = []
        for frame in to_sender:
            to_receiver += frames(sender.receive(frame, 0.0))
    return out


@pytest.mark.parametrize(
    "text",
    ["", "short", "x" * 16, "x" * 17, "é" * 40, "a" + "€" * 30, "🙂" * 25 + "z", "mixé€🙂" * 7],
)
def test_split_utf8_never_cuts_a_character_and_respects_the_size(text):
    pieces = split_utf8(text, 16)
    assert "".join(pieces) == text
    assert all(len(piece.encode("utf-8")) <= 16 for piece in pieces)
    assert all(piece for piece in pieces) or text == ""


def test_split_utf8_refuses_a_size_below_one_character():
    with pytest.raises(ValueError):
        split_utf8("abc", 3)


def test_a_small_message_is_one_frame_without_more():
    s = ReliableStream(SMALL)
    seq, actions = s.send_message("data", "hello", 0.0, confirm=True)
    assert seq == 1
    assert frames(actions) == [{"kind": "data", "seq": 1, "data": "hello", "confirm": True}]


def test_a_large_message_is_split_marked_and_confirmed_on_its_last_fragment():
    s = ReliableStream(SMALL)
    text = "0123456789abcdef" * 3 + "tail"
    last, actions = s.send_message("data", text, 0.0, confirm=True)
    written = frames(actions)
    assert last == 4 and [f["seq"] for f in written] == [1, 2, 3, 4]
    assert [f.get("more", False) for f in written] == [True, True, True, False]
    assert [f.get("confirm", False) for f in written] == [False, False, False, True]
    assert "".join(f["data"] for f in written) == text


def test_fragments_beyond_the_window_wait_and_the_whole_message_arrives_once():
    a, b = ReliableStream(SMALL), ReliableStream(SMALL)
    text = "é" * 45  # 90 bytes: 6 fragments of at most 16 bytes, window 4
    last, actions = a.send_message("data", text, 0.0)
    assert len(frames(actions)) == 4 and a.queued == 2
    got = pump(a, b, actions)
    assert got == [("data", last, text)]
    assert a.acked == last and a.in_flight == 0 and a.queued == 0


def test_messages_after_a_fragmented_one_keep_their_order():
    a, b = ReliableStream(SMALL), ReliableStream(SMALL)
    actions = a.send("data", "before", 0.0)[1]
    actions += a.send_message("binary", b"ABC" * 10, 0.0)[1]
    actions += a.send_message("data", "after", 0.0)[1]
    got = pump(a, b, actions)
    assert [(kind, data) for kind, _, data in got] == [("data", "before"), ("binary", b"ABC" * 10), ("data", "after")]


def test_lost_duplicated_and_reordered_fragments_still_join_once():
    rng = random.Random(7)
    a, b = ReliableStream(SMALL), ReliableStream(SMALL)
    text = "".join(rng.choice("ab€🙂") for _ in range(20))
    last, actions = a.send_message("data", text, 0.0)
    written = frames(actions)
    # Each frame arrives twice, in a shuffled order; then a link switch writes every unacknowledged one again.
    got = []
    for frame in rng.sample(written + written, 2 * len(written)):
        got += delivered(b.receive(frame, 0.0))
    got += pump(a, b, a.resend_unacked(1.0), shuffle=rng)
    assert got == [("data", last, text)]


def test_only_the_last_fragment_of_a_confirmed_message_is_acknowledged_at_once():
    timers = StreamTimers(ack_delay=0.05, max_frame_bytes=16, window=32)
    a, b = ReliableStream(timers), ReliableStream(timers)
    _, actions = a.send_message("data", "x" * 40, 0.0, confirm=True)
    first, second, third = frames(actions)
    assert frames(b.receive(first, 0.0)) == []  # a fragment: the ack may wait
    assert frames(b.receive(second, 0.0)) == []
    assert frames(b.receive(third, 0.0)) == [{"kind": "ack", "seq": 3}]


def test_a_fragment_run_over_the_message_limit_breaks_the_stream():
    b = ReliableStream(SMALL)  # max_message_bytes 100
    actions: list = []
    for seq in range(1, 9):
        actions += b.receive({"kind": "data", "seq": seq, "data": "x" * 16, "more": True}, 0.0)
        if any(isinstance(a, Broken) for a in actions):
            break
    broken = [a for a in actions if isinstance(a, Broken)]
    assert len(broken) == 1 and "limit" in str(broken[0].error)
    assert seq == 7  # 7 * 16 = 112 > 100: refused as soon as it went over, before the run ended
    assert delivered(actions) == []
    assert b.receive({"kind": "data", "seq": 8, "data": "x"}, 0.0) == []  # nothing more is delivered


def test_binary_messages_count_their_raw_bytes_against_the_limit():
    b = ReliableStream(StreamTimers(ack_delay=0, max_frame_bytes=16, max_message_bytes=12))
    assert not any(isinstance(x, Broken) for x in b.receive({"kind": "binary", "seq": 1, "data": b"ABCDEF", "more": True}, 0.0))
    actions = b.receive({"kind": "binary", "seq": 2, "data": memoryview(b"ABCDEF")}, 0.0)
    assert delivered(actions) == [("binary", 2, b"ABCDEF" * 2)]
    assert type(delivered(actions)[0][2]) is bytes
    c = ReliableStream(StreamTimers(ack_delay=0, max_frame_bytes=16, max_message_bytes=12))
    c.receive({"kind": "binary", "seq": 1, "data": b"ABCDEF", "more": True}, 0.0)
    assert [type(x) for x in c.receive({"kind": "binary", "seq": 2, "data": b"ABCDEFG"}, 0.0)] == [Broken]


def test_binary_messages_are_split_into_views_of_the_bytes_whose_base64_fits_a_frame():
    a = ReliableStream(StreamTimers(max_frame_bytes=16, window=100))  # 16 characters of base64: 12 bytes
    raw = bytes(range(100))
    last, actions = a.send_message("binary", raw, 0.0, confirm=True)
    written = frames(actions)
    assert [len(f["data"]) for f in written] == [12] * 8 + [4]
    assert all(isinstance(f["data"], memoryview) for f in written)  # nothing copied
    assert b"".join(f["data"] for f in written) == raw
    assert [f.get("more", False) for f in written] == [True] * 8 + [False]
    assert written[-1].get("confirm") is True and last == 9
    b = ReliableStream(StreamTimers(max_frame_bytes=16, window=100, ack_delay=0))
    got = [x for f in written for x in b.receive(f, 0.0) if isinstance(x, Deliver)]
    assert [(x.seq, x.data) for x in got] == [(9, raw)]


def test_another_kind_inside_a_fragment_run_breaks_the_stream():
    b = ReliableStream(SMALL)
    b.receive({"kind": "data", "seq": 1, "data": "part", "more": True}, 0.0)
    actions = b.receive({"kind": "binary", "seq": 2, "data": b"ABC"}, 0.0)
    assert [type(a) for a in actions] == [Broken]


@pytest.mark.parametrize(
    "frame",
    [
        {"kind": "data", "seq": 1, "data": "x", "more": 1},
        {"kind": "signal", "seq": 1, "data": "{}", "more": True},
        {"kind": "close", "seq": 1, "data": "", "more": True},
    ],
)
def test_malformed_fragment_flags_are_protocol_errors(frame):
    b = ReliableStream(SMALL)
    actions = b.receive(frame, 0.0)
    assert [type(a).__name__ for a in actions] == ["BadFrame"]
    assert b.delivered == 0


def test_send_message_refuses_other_kinds():
    s = ReliableStream(SMALL)
    with pytest.raises(ValueError):
        s.send_message("signal", "{}", 0.0)


def test_a_larger_window_releases_queued_frames_and_a_smaller_one_keeps_those_in_flight():
    s = ReliableStream(SMALL)  # window 4
    _, actions = s.send_message("data", "x" * 16 * 10, 0.0)  # 10 fragments
    assert len(frames(actions)) == 4 and s.queued == 6
    assert [f["seq"] for f in frames(s.set_window(7, 0.0))] == [5, 6, 7]
    assert frames(s.set_window(2, 0.0)) == [] and s.in_flight == 7
    released = s.receive({"kind": "ack", "seq": 6}, 0.0)
    assert [f["seq"] for f in frames(released)] == [8]  # one in flight, room for one more
    with pytest.raises(ValueError):
        s.set_window(0, 0.0)


def test_the_bytes_in_flight_are_bounded_too_and_the_receiver_acks_by_bytes():
    timers = StreamTimers(window=100, window_bytes=64, max_frame_bytes=16, ack_delay=1.0)
    a, b = ReliableStream(timers), ReliableStream(timers)
    _, actions = a.send_message("data", "x" * 16 * 10, 0.0)
    written = frames(actions)
    assert len(written) == 4 and a.queued == 6  # 4 * 16 bytes fill window_bytes
    acks = [f for frame in written for f in frames(b.receive(frame, 0.0))]
    assert acks == [{"kind": "ack", "seq": 1}, {"kind": "ack", "seq": 2}, {"kind": "ack", "seq": 3},
                    {"kind": "ack", "seq": 4}]  # every quarter of window_bytes (16 bytes), not after ack_delay
    assert [f["seq"] for f in frames(a.receive(acks[-1], 0.0))] == [5, 6, 7, 8]
    big = ReliableStream(StreamTimers(window_bytes=10, max_frame_bytes=16))
    assert len(frames(big.send_message("data", "y" * 32, 0.0)[1])) == 1  # one frame may always be in flight


def test_a_message_that_is_all_of_one_buffer_is_delivered_as_that_buffer_and_any_other_is_joined():
    timers = StreamTimers(ack_delay=0, max_frame_bytes=16, max_message_bytes=100, window=100)  # 12-byte fragments
    buffer = bytes(range(30))
    view = memoryview(buffer)
    pieces = [view[0:12], view[12:24], view[24:30]]

    def receive(datas: list) -> bytes:
        b = ReliableStream(timers)
        got: list = []
        for seq, data in enumerate(datas, start=1):
            frame = {"kind": "binary", "seq": seq, "data": data}
            if seq < len(datas):
                frame["more"] = True
            got += delivered(b.receive(frame, 0.0))
        ((_, _, whole),) = got
        return whole

    assert receive(pieces) is buffer  # one link read: no copy
    # One fragment resent on another link (its own bytes), part of a buffer, two buffers: joined.
    assert receive([pieces[0], bytes(pieces[1]), pieces[2]]) == buffer
    assert receive(pieces[:2]) == buffer[:24]
    other = memoryview(bytes(range(30)))
    assert receive([pieces[0], other[12:24], pieces[2]]) == buffer
    assert all(type(receive(p)) is bytes for p in ([pieces[0], bytes(6)], pieces[:2]))


def _outcome(actions):
    """What a receiver's actions say, comparable between two receivers (binary data as bytes)."""
    out = []
    for action in actions:
        if isinstance(action, Deliver):
            out.append(("deliver", action.kind, action.seq, bytes(action.data) if action.kind == "binary"
                        else action.data))
        elif isinstance(action, WriteFrame):
            out.append(("write", action.frame["kind"], action.frame["seq"]))
        else:
            out.append((type(action).__name__, str(getattr(action, "error", ""))))
    return out


def _binary_messages(rng: random.Random, timers: StreamTimers, count: int) -> list[dict]:
    sender = ReliableStream(replace(timers, window=10_000, window_bytes=10**12), now=0.0)
    actions = []
    for _ in range(count):
        size = rng.choice([1, 12, 13, 40, 120, 300])
        if rng.random() < 0.2:
            actions += sender.send("data", "hi", 0.0)[1]
        actions += sender.send_message("binary", rng.randbytes(size), 0.0, confirm=rng.random() < 0.5)[1]
    return frames(actions)


@pytest.mark.parametrize("seed", range(40))
def test_frames_received_together_give_what_they_give_one_by_one(seed):
    """``receive_frames`` (a link's run taken in one step) against ``receive`` for each frame: the same deliveries,
    acknowledgements and errors, whatever the runs, gaps, duplicates and limits."""
    rng = random.Random(seed)
    timers = StreamTimers(ack_delay=rng.choice([0, 0.05, 0.05]), max_frame_bytes=16, max_message_bytes=rng.choice([100, 400]),
                          window=rng.choice([4, 64, 64]))
    sent = _binary_messages(rng, timers, 30)
    # What a link hands over: batches of consecutive frames, mostly within one message (as a direct link's runs),
    # some across messages; some lost, some twice, some out of order.
    cuts, at = [], 0
    while at < len(sent):
        end = at
        while sent[end].get("more") and end + 1 < len(sent):
            end += 1
        while at <= end:  # the message's frames, cut into runs
            stop = min(at + rng.choice([1, 2, 3, 5, 8, 100]), end + 1)
            stop = min(stop + (rng.random() < 0.15), len(sent))  # sometimes one frame past the message's end
            cuts.append((at, stop))
            at = stop
    batches = []
    for start, stop in cuts:
        batch = sent[start:stop]
        roll = rng.random()
        if roll < 0.1:
            continue  # lost: the frames come again below
        batches.append(batch)
        if roll < 0.2:
            batches.append(batch)  # a duplicate run
    batches += [sent[i:i + 4] for i in range(0, len(sent), 4)]  # everything once more, as after a fallback
    if rng.random() < 0.3:
        rng.shuffle(batches)
    one, together = ReliableStream(timers, now=0.0), ReliableStream(timers, now=0.0)
    acked = {"one": 0, "together": 0}
    broke = False

    def acks(name, actions):
        seqs = [step[2] for step in _outcome(actions) if step[:2] == ("write", "ack")]
        acked[name] = max([acked[name], *seqs])
        return max(seqs, default=0)

    for now, batch in enumerate(batches):
        by_one = [action for frame in batch for action in one.receive(frame, float(now))]
        at_once = together.receive_frames(batch, float(now))
        # The same messages and errors. A run is acknowledged once, at its end: never less far than frame by
        # frame would have (a confirmed message's acknowledgement is not delayed).
        assert [s for s in _outcome(at_once) if s[0] != "write"] == [s for s in _outcome(by_one) if s[0] != "write"]
        assert acks("together", at_once) >= acks("one", by_one)
        acks("one", one.flush_ack(now + 1.0))
        acks("together", together.flush_ack(now + 1.0))
        assert acked["together"] == acked["one"]  # once delayed acknowledgements are due, both said as much
        broke = broke or any(step[0] == "Broken" for step in _outcome(by_one))
    if not broke:  # a message over the limit breaks the stream: nothing after it is taken
        assert acked["one"] == len(sent)


def test_a_run_taken_in_one_step_is_checked_like_single_frames():
    timers = StreamTimers(ack_delay=0, max_frame_bytes=16, max_message_bytes=100, window=64)
    run = [{"kind": "binary", "seq": 1, "data": b"ab", "more": True}, {"kind": "binary", "seq": 2, "data": b"cd"}]
    for broken in ({"more": 1}, {"confirm": "yes"}, {"data": "text"}, {"seq": True}):
        bad = [run[0], {**run[1], **broken}]
        one, together = ReliableStream(timers, now=0.0), ReliableStream(timers, now=0.0)
        expected = _outcome([action for frame in bad for action in one.receive(frame, 0.0)])
        assert _outcome(together.receive_frames(bad, 0.0)) == expected
        assert not any(step[0] == "deliver" for step in expected)
    stream = ReliableStream(timers, now=0.0)
    (deliver,) = [a for a in stream.receive_frames(run, 0.0) if isinstance(a, Deliver)]
    assert deliver.data == b"abcd" and deliver.seq == 2
