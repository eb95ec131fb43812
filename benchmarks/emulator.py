"""Figures for the emulator through the unchanged firebase-admin SDK (a script, not a test).

Prints:
  (a) sequential ``set()`` calls per second against the emulator and against a bare aiohttp server that only
      answers 204, measured in alternating rounds in the same run, and their ratio (aim: >= 0.5);
  (b) the same with the project's rules (firebase/database.rules.json) and an auth override;
  (c) the delay from one write to its arrival at 50 firebase-admin ``listen()`` streams, p50 and p99
      (aim: p99 < 100 ms on 2 cores).

Both servers run in their own processes (as they would in real use), so the SDK's threads and the server do not
share one interpreter lock. Usage: ``uv run python benchmarks/emulator.py [--sets N] [--rounds N] [--writes N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import firebase_admin
import requests
from firebase_admin import db
from google.auth.credentials import AnonymousCredentials

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "firebase" / "database.rules.json"
LISTENERS = 50

BARE_SERVER = """
import asyncio, sys
from aiohttp import web

async def answer(request):
    await request.read()
    return web.Response(status=204)

async def main():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_process(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on " not in line:
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return process, line.split("listening on ")[1].split()[0]


def make_app(url: str, namespace: str, override: object = "admin") -> firebase_admin.App:
    options: dict[str, object] = {"databaseURL": f"{url}?ns={namespace}"}
    if override != "admin":
        options["databaseAuthVariableOverride"] = override
    return firebase_admin.initialize_app(AnonymousCredentials(), options, name=uuid.uuid4().hex)


def sets_per_second(ref: db.Reference, value_of, count: int) -> float:
    ref.set(value_of(-1))  # warm the connection
    started = time.perf_counter()
    for i in range(count):
        ref.set(value_of(i))
    return count / (time.perf_counter() - started)


def compare(label: str, emulator_ref: db.Reference, bare_ref: db.Reference, value_of, count: int,
            rounds: int) -> None:
    emulator_rates, bare_rates = [], []
    for _ in range(rounds):  # alternate, so that a busy moment of the machine hits both sides
        emulator_rates.append(sets_per_second(emulator_ref, value_of, count))
        bare_rates.append(sets_per_second(bare_ref, value_of, count))
    emulator_rate, bare_rate = statistics.median(emulator_rates), statistics.median(bare_rates)
    print(f"{label}: emulator {emulator_rate:7.0f} set/s, bare aiohttp 204 {bare_rate:7.0f} set/s, "
          f"ratio {emulator_rate / bare_rate:.2f} (aim >= 0.5; median of {rounds} rounds of {count})")


def fan_out(url: str, namespace: str, writes: int) -> None:
    admin = make_app(url, namespace)
    received: list[float] = []
    lock = threading.Lock()
    sent_at: dict[int, float] = {}
    arrived = threading.Condition(lock)
    counts: dict[int, int] = {}

    def callback(event: db.Event) -> None:
        now = time.perf_counter()
        if event.event_type != "put" or event.path != "/n":
            return
        with arrived:
            n = event.data
            received.append(now - sent_at[n])
            counts[n] = counts.get(n, 0) + 1
            arrived.notify_all()

    registrations = [db.reference("/room", app=admin).listen(callback) for _ in range(LISTENERS)]
    try:
        ref = db.reference("/room/n", app=admin)
        for n in range(writes):
            with arrived:
                sent_at[n] = time.perf_counter()
            ref.set(n)
            with arrived:
                if not arrived.wait_for(lambda: counts.get(n, 0) == LISTENERS, timeout=30):
                    raise SystemExit(f"write {n} reached only {counts.get(n, 0)} of {LISTENERS} listeners")
            time.sleep(0.02)
        delays = sorted(received)
        p50 = delays[len(delays) // 2] * 1000
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
        print(f"(c) write -> {LISTENERS} listen() streams: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {delays[-1] * 1000:.1f} ms over {len(delays)} deliveries (aim p99 < 100 ms)")
    finally:
        # ListenerRegistration.close() closes the response under its reading thread, which then dies with an
        # AttributeError inside http.client (a race in the SDK): keep that noise out of the figures.
        default_hook = threading.excepthook
        threading.excepthook = lambda hook_args: (
            None if hook_args.exc_type is AttributeError else default_hook(hook_args))
        closers = [threading.Thread(target=registration.close) for registration in registrations]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=300, help="set() calls per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per figure (default: %(default)s)")
    parser.add_argument("--writes", type=int, default=40, help="writes for the fan-out figure (default: %(default)s)")
    args = parser.parse_args()

    emulator, emulator_url = start_process(["-m", "emulator", "--port", "0", "--keepalive", "1"])
    bare, bare_url = start_process(["-c", BARE_SERVER])
    try:
        print(f"emulator at {emulator_url}, bare server at {bare_url}; {os.cpu_count()} CPUs")
        plain = "bench-plain"
        compare("(a) set() no rules, admin    ",
                db.reference("/bench/value", app=make_app(emulator_url, plain)),
                db.reference("/bench/value", app=make_app(bare_url, plain)),
                lambda i: {"i": i, "text": "hello"}, args.sets, args.rounds)

        ruled = "bench-rules"
        response = requests.put(f"{emulator_url}/.settings/rules.json", params={"ns": ruled},
                                data=RULES.read_bytes(), headers={"Authorization": "Bearer owner"}, timeout=30)
        response.raise_for_status()
        alice = {"uid": "alice"}
        compare("(b) set() with rules, as user",
                db.reference("/presence/alice/laptop", app=make_app(emulator_url, ruled, alice)),
                db.reference("/presence/alice/laptop", app=make_app(bare_url, ruled, alice)),
                lambda i: {"label": "laptop", "lastSeen": {".sv": "timestamp"}, "online": i % 2 == 0},
                args.sets, args.rounds)

        fan_out(emulator_url, "bench-fan", args.writes)
    finally:
        for process in (emulator, bare):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
