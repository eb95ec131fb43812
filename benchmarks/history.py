"""Benchmark of the conversation history (peerchat.history) against bare sqlite3 on the same disk, in one run.

Prints:

- appending entries one at a time (each its own committed write, as the app does), against bare ``sqlite3``
  inserts of the same rows into the same schema with the same settings (aim: at least 0.5x);
- opening a conversation of 100,000 entries and reading its newest page of 50 (what selecting a device costs);
- a search through every conversation (100,000 entries, a word in 1 of 100);
- the app's start: ``import peerchat.app`` in a fresh interpreter, against ``import textual.app`` alone.

Run: ``uv run python benchmarks/history.py [--entries 5000]``
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peerchat.history import _SCHEMA, History  # noqa: E402


def appends(folder: Path, count: int, rounds: int = 5) -> tuple[float, float]:
    """Rates (per second) of appends through History and of bare inserts, alternating in ``rounds`` rounds so that
    both meet the same load on a shared machine; the medians of the rounds."""
    history = History(folder / "ours.sqlite3")
    bare = sqlite3.connect(folder / "bare.sqlite3", isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.executescript(_SCHEMA)
    per_round = max(count // rounds, 1)
    ours: list[float] = []
    baseline: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for n in range(per_round):
            history.add("desk", "desktop", "out", "text", f"message {n}", "sent")
        ours.append(per_round / (time.perf_counter() - start))
        start = time.perf_counter()
        for n in range(per_round):
            bare.execute("INSERT INTO entries (peer_id, label, direction, kind, body, path, size, status, at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         ("desk", "desktop", "out", "text", f"message {n}", None, None, "sent", time.time()))
        baseline.append(per_round / (time.perf_counter() - start))
    history.close()
    bare.close()
    return statistics.median(ours), statistics.median(baseline)


def big_history(folder: Path, count: int) -> Path:
    path = folder / "big.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(_SCHEMA)
    db.execute("BEGIN")
    for n in range(count):
        peer = ("desk", "phone", "tv")[n % 3]
        body = f"needle {n}" if n % 100 == 0 else f"message number {n} about nothing in particular"
        db.execute("INSERT INTO entries (peer_id, label, direction, kind, body, path, size, status, at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (peer, peer, "in", "text", body, None, None, "received", n))
    db.execute("COMMIT")
    db.close()
    return path


def timed(fn, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_time(module: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, baseline = appends(folder, args.entries)
        print(f"append, one committed write each: {ours:,.0f} /s; bare sqlite3: {baseline:,.0f} /s; "
              f"ratio {ours / baseline:.2f}x (aim >= 0.5)")
        path = big_history(folder, 100_000)
        opened = timed(lambda: History(path).page("desk", limit=50), runs=10)
        history = History(path)
        page = timed(lambda: history.page("desk", limit=50))
        older = timed(lambda: history.page("desk", before=50_000, limit=50))
        search = timed(lambda: history.search("needle 4"), runs=10)
        print(f"100,000 entries: open + newest page {opened * 1000:.1f} ms; newest page {page * 1000:.2f} ms; "
              f"an older page {older * 1000:.2f} ms; search {search * 1000:.1f} ms")
    app = import_time("peerchat.app")
    textual = import_time("textual.app")
    print(f"start: import peerchat.app {app * 1000:.0f} ms; import textual.app alone {textual * 1000:.0f} ms; "
          f"ratio {app / textual:.2f}x")


if __name__ == "__main__":
    main()
