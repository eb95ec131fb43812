"""Tests for emulator.pushid: 20-character push ids that sort by creation, even within one millisecond."""

from __future__ import annotations

import random

import pytest

from emulator.pushid import PUSH_CHARS, PushIdGenerator, push_id_time


def test_alphabet_is_in_ascii_order_so_string_order_is_time_order():
    assert PUSH_CHARS == "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    assert list(PUSH_CHARS) == sorted(PUSH_CHARS)


def test_an_id_is_20_characters_8_of_time_then_12_random():
    generator = PushIdGenerator(random.Random(1))
    push_id = generator(1_700_000_000_000)
    assert len(push_id) == 20
    assert set(push_id) <= set(PUSH_CHARS)
    assert push_id_time(push_id) == 1_700_000_000_000


def test_the_time_part_encodes_milliseconds_in_base_64():
    generator = PushIdGenerator(random.Random(1))
    assert generator(0)[:8] == "--------"
    assert generator(1)[:8] == "-------0"
    assert generator(64)[:8] == "------0-"
    assert generator(64**8 - 1)[:8] == "zzzzzzzz"


def test_ids_sort_by_time_across_milliseconds():
    generator = PushIdGenerator(random.Random(2))
    times = sorted(random.Random(3).sample(range(10**12, 2 * 10**12), 200))
    ids = [generator(t) for t in times]
    assert ids == sorted(ids)
    assert [push_id_time(i) for i in ids] == times


def test_many_ids_in_one_millisecond_are_unique_and_strictly_increasing():
    generator = PushIdGenerator(random.Random(4))
    ids = [generator(1_700_000_000_000) for _ in range(5000)]
    assert all(a < b for a, b in zip(ids, ids[1:]))
    assert len(set(ids)) == len(ids)
    assert {i[:8] for i in ids} == {ids[0][:8]}


def test_the_random_part_carries_like_a_counter():
    generator = PushIdGenerator(random.Random(5))
    generator._last_time = 10
    generator._last_random = [0] * 11 + [63]
    assert generator(10)[8:] == "----------0-"
    generator._last_random = [0] * 11 + [62]
    assert generator(10)[8:] == "-----------z"
    generator._last_random = [63] * 12
    overflowed = generator(10)
    assert push_id_time(overflowed) == 11  # borrowed the next millisecond rather than repeat an id


def test_a_clock_that_goes_back_still_gives_increasing_ids():
    generator = PushIdGenerator(random.Random(6))
    first = generator(5000)
    second = generator(4000)
    assert second > first


def test_two_generators_give_different_random_parts():
    a, b = PushIdGenerator(), PushIdGenerator()
    assert a(1000)[8:] != b(1000)[8:]


@pytest.mark.parametrize("now", [-1, 64**8, 1.5, "1", None, True])
def test_a_time_that_cannot_be_encoded_is_refused(now):
    with pytest.raises(ValueError):
        PushIdGenerator()(now)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["short", "-" * 19 + "!", 20 * "é"])
def test_push_id_time_refuses_what_is_not_a_push_id(bad):
    with pytest.raises(ValueError):
        push_id_time(bad)
