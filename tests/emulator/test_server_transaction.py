"""Transactions through firebase-admin: ETags and conditional writes under contention end exact."""

from __future__ import annotations

import threading

from firebase_admin import db

THREADS = 4
INCREMENTS = 15


def test_concurrent_transactions_end_at_the_exact_sum(firebase_app_factory):
    counter = db.reference("/counter", app=firebase_app_factory.make())
    failures: list[BaseException] = []

    def work() -> None:
        # Each thread its own app (own HTTP session), as separate devices would be.
        ref = db.reference("/counter", app=firebase_app_factory.make())
        try:
            for _ in range(INCREMENTS):
                ref.transaction(lambda current: (current or 0) + 1)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    assert counter.get() == THREADS * INCREMENTS


def test_transaction_on_structured_value_and_on_nothing(firebase_app_factory):
    ref = db.reference("/doc", app=firebase_app_factory.make())
    assert ref.transaction(lambda current: {"n": 1, "seen": current}) == {"n": 1, "seen": None}
    assert ref.transaction(lambda current: {**current, "n": current["n"] + 1}) == {"n": 2}
    assert ref.get() == {"n": 2}
