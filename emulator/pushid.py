"""Push ids for POST: 20 characters, 8 of millisecond time then 12 random, sorting in creation order.

This is the scheme of Firebase's own generator: the alphabet is in ASCII order, so comparing ids as strings
compares their times; within one millisecond the random part is incremented like a counter instead of drawn again,
so ids from one generator are strictly increasing. Unlike the original, a clock that steps back does not break that:
the generator keeps using the last time it saw, and if the random part ever overflows it moves to the next
millisecond.
"""

from __future__ import annotations

import random
import threading

PUSH_CHARS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_TIME_CHARS = 8
_RANDOM_CHARS = 12
_MAX_TIME = 64**_TIME_CHARS - 1
_INDEX = {c: i for i, c in enumerate(PUSH_CHARS)}


class PushIdGenerator:
    """Makes push ids; call it with the current time in milliseconds. Safe to share between threads.

    Args:
        rng: the source of the random part; by default the operating system's randomness.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.SystemRandom()
        self._lock = threading.Lock()
        self._last_time = -1
        self._last_random = [0] * _RANDOM_CHARS

    def __call__(self, now_ms: int) -> str:
        """A new push id for ``now_ms``, greater than every id this generator made before.

        Raises:
            ValueError: ``now_ms`` is not an integer from 0 to 64**8 - 1.
        """
        if not isinstance(now_ms, int) or isinstance(now_ms, bool) or not 0 <= now_ms <= _MAX_TIME:
            raise ValueError(f"push id time must be an integer number of milliseconds in 0..{_MAX_TIME}: {now_ms!r}")
        with self._lock:
            if now_ms > self._last_time:
                self._last_time = now_ms
                self._last_random = [self._rng.randrange(64) for _ in range(_RANDOM_CHARS)]
            elif not self._increment():
                # All 12 random characters were at their maximum: go on in the next millisecond.
                self._last_time = min(self._last_time + 1, _MAX_TIME)
                self._last_random = [self._rng.randrange(64) for _ in range(_RANDOM_CHARS)]
            return _encode_time(self._last_time) + "".join(PUSH_CHARS[i] for i in self._last_random)

    def _increment(self) -> bool:
        """Add one to the random part, carrying; ``False`` when it overflowed."""
        digits = self._last_random
        for position in range(_RANDOM_CHARS - 1, -1, -1):
            if digits[position] < 63:
                digits[position] += 1
                return True
            digits[position] = 0
        return False


def _encode_time(now_ms: int) -> str:
    chars = []
    for _ in range(_TIME_CHARS):
        chars.append(PUSH_CHARS[now_ms % 64])
        now_ms //= 64
    return "".join(reversed(chars))


def push_id_time(push_id: str) -> int:
    """The millisecond time encoded in a push id.

    Raises:
        ValueError: ``push_id`` is not 20 characters of the push id alphabet.
    """
    if len(push_id) != _TIME_CHARS + _RANDOM_CHARS or any(c not in _INDEX for c in push_id):
        raise ValueError(f"not a push id: {push_id!r}")
    value = 0
    for c in push_id[:_TIME_CHARS]:
        value = value * 64 + _INDEX[c]
    return value
