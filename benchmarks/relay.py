"""Benchmark of relay connections against plain firebase-admin calls on the same emulator, with the real rules.

Prints, from one run:

- confirmed message round trip (``send()`` with ``confirm_data_receival`` returns once the peer's application got
  the message and its acknowledgement came back) p50/p99, against one firebase-admin ``set()`` p50/p99
  (aim: at most 3x);
- one-way throughput of 16 KiB messages (from the first ``send()`` to the last ``data`` event on the other side)
  against raw sequential ``set()`` of the same payloads (aim: at least 0.5x);
- ``connect_to_peer`` time p50 (aim: under 300 ms on the emulator);
- throughput of 1 MiB messages (each split into relay frames and joined again), confirmed;
- one-way throughput of 16 KiB binary messages (``send_bytes``, random bytes), each awaited.

Text comes in two kinds, both generated from a fixed seed: *chat*, sentences of common English words, names,
numbers and punctuation in a varied order (it compresses about as ordinary writing does), and *random*, printable
ASCII characters drawn uniformly (DEFLATE's Huffman coding still saves about a sixth; nothing else). Binary
messages are random bytes (like the chunks of a photo or an archive: nothing to compress).

Every session is end-to-end encrypted; the connection figures are measured three times in the same run: sealed
and compressed (as shipped), sealed without compression (``relay_compression=False``), and with sealing turned off
on both sides (``PlainManager``: the handshake still runs, frames travel in the clear), and the ratios to plain
printed (aim: at least 0.9x), with the CPU seconds each case cost all four processes together (Linux: read from
``/proc``), which a busy machine disturbs less than the time. Then, untimed: the bytes each mode writes to the
database per message (the frames' JSON, as firebase-admin sends it), and the CPU time of sealing and opening one
16 KiB frame with and without compression.

Four processes, like four machines: the emulator (this script with ``--emulator``), the other devices (``--peer``:
a manager that accepts the connection and reports ``done`` when a announced number of messages arrived) and this
one, which measures. Throughput is measured twice: awaiting each ``send()`` (one relay update per message, since
``send()`` returns once its message is durably written) and with all sends at once (the writer batches them).
Each case runs ``--repeat`` times per mode, the modes taking turns case by case, and the best run is kept: on a
shared machine, a burst of load from elsewhere then falls on every mode alike.

Run: ``uv run python benchmarks/relay.py [--round-trips 300] [--messages 400] [--connects 20] [--large 8]
[--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import firebase_admin  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from core import events as ev  # noqa: E402
from core.relay.firebase import Database  # noqa: E402
from core.options import ManagerOptions  # noqa: E402
from core.peer import PeerInfo  # noqa: E402
from core.manager import FirebasePeerConnectionManager  # noqa: E402

RULES = ROOT / "firebase" / "database.rules.json"
TS = {".sv": "timestamp"}

_WORDS = (
    "the be to of and a in that have I it for not on with he as you do at this but his by from they we say her she "
    "or an will my one all would there their what so up out if about who get which go me when make can like time no "
    "just him know take people into year your good some could them see other than then now look only come its over "
    "think also back after use two how our work first well way even new want because any these give day most us "
    "meeting train station tomorrow tonight dinner coffee weekend photos phone laptop charger keys ticket flight "
    "hotel doctor birthday present grocery milk bread cheese pasta garden weather rain sunny late early sorry thanks "
    "great awesome okay sure maybe probably really actually definitely forgot remember bring leave call text"
).split()
_NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kim", "Leo")


def chat_text(size: int, seed: int) -> str:
    """Chat-like text of ``size`` characters: sentences of common words (the frequent ones more often), with names,
    times and numbers, in an order a seeded generator varies."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(_WORDS))]  # Zipf-like: a few words are most of the text
    lines: list[str] = []
    length = 0
    while length < size:
        words = rng.choices(_WORDS, weights, k=rng.randint(3, 18))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(_NAMES))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), f"{rng.randint(1, 12)}:{rng.choice(('00', '15', '30', '45'))}")
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), str(rng.randint(2, 500)))
        sentence = " ".join(words)
        line = sentence[0].upper() + sentence[1:] + rng.choice((".", ".", "!", "?", "...", " :)"))
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines)[:size]


def random_text(size: int, seed: int) -> str:
    """``size`` printable ASCII characters drawn uniformly: text with nothing to compress but its alphabet."""
    rng = random.Random(seed)
    return "".join(rng.choices([chr(c) for c in range(32, 127)], k=size))


CHAT16 = chat_text(16 * 1024, 1)
RANDOM16 = random_text(16 * 1024, 2)
CHAT1M = chat_text(1024 * 1024, 3)
RANDOM1M = random_text(1024 * 1024, 4)
BINARY16 = random.Random(5).randbytes(16 * 1024)


def emulator_child() -> None:
    from emulator import Emulator

    async def run() -> None:
        async with Emulator(rules=RULES) as emu:
            print(emu.port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(run())


class PlainManager(FirebasePeerConnectionManager):
    """The baseline: the same manager with relay frames in the clear."""

    _seal_relay = False



def peer_child(url: str, plain: bool) -> None:
    """The other device: accepts connections; after ``expect:N`` it answers ``done`` once N more messages arrived."""

    async def run() -> None:
        app = firebase_admin.initialize_app(
            AnonymousCredentials(), {"databaseURL": url, "databaseAuthVariableOverride": {"uid": "alice"}}
        )
        options = ManagerOptions(webrtc=False, direct=False, send_window=64, ack_timeout=60, peer_timeout=60)
        kind = PlainManager if plain else FirebasePeerConnectionManager
        device = PeerInfo("phone-plain", "Phone") if plain else PeerInfo("phone", "Phone")
        manager = kind("alice", device, app=app, options=options)

        def on_incoming(event: ev.IncomingConnection) -> None:
            conn = event.connection
            state = {"expect": 0, "got": 0}

            def on_data(e: ev.Data | ev.BinaryData) -> None:
                if isinstance(e.data, str) and e.data.startswith("expect:"):
                    state["expect"], state["got"] = int(e.data[7:]), 0
                    return
                state["got"] += 1
                if state["expect"] and state["got"] == state["expect"]:
                    state["expect"] = 0
                    asyncio.get_running_loop().create_task(conn.send("done"))

            conn.events.on(ev.DATA, on_data)
            conn.events.on(ev.BINARY, on_data)

        manager.events.on(ev.INCOMING_CONNECTION, on_incoming)
        async with manager:
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(run())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


MODES = ("plain", "sealed", "uncompressed")  # PlainManager; as shipped; sealed with relay_compression=False
CASES = (  # (key, label, unit): times of throughput cases, then their labels
    ("chat_awaited", "16 KiB chat text, each awaited", "16k"),
    ("chat_piped", "16 KiB chat text, all at once", "16k"),
    ("random_awaited", "16 KiB random text, each awaited", "16k"),
    ("random_piped", "16 KiB random text, all at once", "16k"),
    ("binary_awaited", "16 KiB random bytes, each awaited", "16k"),
    ("chat_large", "1 MiB chat text, confirmed", "1m"),
    ("random_large", "1 MiB random text, confirmed", "1m"),
)


async def main(args: argparse.Namespace) -> None:
    child = subprocess.Popen([sys.executable, __file__, "--emulator"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=str(ROOT))
    try:
        port = int(child.stdout.readline())
        url = f"http://127.0.0.1:{port}?ns=bench-{uuid.uuid4().hex[:8]}"

        def app() -> firebase_admin.App:
            return firebase_admin.initialize_app(
                AnonymousCredentials(), {"databaseURL": url, "databaseAuthVariableOverride": {"uid": "alice"}},
                name=uuid.uuid4().hex,
            )

        options = ManagerOptions(webrtc=False, direct=False, send_window=64, ack_timeout=60, peer_timeout=60)
        peers = [subprocess.Popen([sys.executable, __file__, "--peer", url, *flag], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=str(ROOT)) for flag in ([], ["--plain"])]
        managers = {
            "plain": PlainManager("alice", PeerInfo("laptop-plain", "Laptop"), app=app(), options=options),
            "sealed": FirebasePeerConnectionManager("alice", PeerInfo("laptop", "Laptop"), app=app(), options=options),
            "uncompressed": FirebasePeerConnectionManager(
                "alice", PeerInfo("laptop-uncompressed", "Laptop"), app=app(),
                options=dataclasses.replace(options, relay_compression=False),
            ),
        }
        targets = {"plain": "phone-plain", "sealed": "phone", "uncompressed": "phone"}
        raw = Database(app())
        try:
            for peer in peers:
                assert peer.stdout.readline().strip() == "ready"
            async with managers["plain"], managers["sealed"], managers["uncompressed"]:
                async with asyncio.timeout(20):
                    while not {"phone", "phone-plain"} <= {p.id for p in await managers["sealed"].get_online_peers()}:
                        await asyncio.sleep(0.02)
                cpu = CpuMeter([child.pid, *(peer.pid for peer in peers)])
                figures = await measure(managers, targets, raw, args, cpu)
                written = {mode: await bytes_written(managers[mode], targets[mode]) for mode in MODES}
        finally:
            for peer in peers:
                peer.stdin.close()
                peer.wait(timeout=30)
        await raw.close()
        report(args, figures, written, sealing_cpu())
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def report(args, figures: dict[str, dict], written: dict[str, dict], cpu: dict) -> None:
    shipped, plain, uncompressed = figures["sealed"], figures["plain"], figures["uncompressed"]
    mib = args.messages * 16 / 1024
    sets, rtts, connects = shipped["sets"], shipped["rtts"], shipped["connects"]
    set50, set99 = pct(sets, 50), pct(sets, 99)
    rt50, rt99 = pct(rtts, 50), pct(rtts, 99)

    units = {key: unit for key, _, unit in CASES}

    def rate(figure: dict, key: str) -> float:
        """MiB/s of a throughput case (``raw`` is 16 KiB messages too)."""
        return (args.large if units.get(key) == "1m" else mib) / figure[key]

    print(f"firebase-admin set(), small value       p50 {ms(set50)}   p99 {ms(set99)}   (n={len(sets)})")
    print(f"confirmed message round trip            p50 {ms(rt50)}   p99 {ms(rt99)}   (n={len(rtts)})")
    print(f"  ratio to one set()                    p50 {rt50 / set50:5.2f}x      p99 {rt99 / set99:5.2f}x"
          "   (aim: at most 3x)")
    print(f"16 KiB chat text one-way                {rate(shipped, 'chat_awaited'):6.2f} MiB/s  "
          f"({args.messages} messages in {shipped['chat_awaited']:.2f} s, each send() awaited)")
    print(f"16 KiB chat text, all sends at once     {rate(shipped, 'chat_piped'):6.2f} MiB/s  "
          f"({shipped['chat_piped']:.2f} s; batched: {shipped['piped_requests']} relay updates)")
    print(f"16 KiB chat text, raw sequential set()  {rate(shipped, 'raw'):6.2f} MiB/s  ({shipped['raw']:.2f} s)")
    print(f"  ratio relay / raw                     {shipped['raw'] / shipped['chat_awaited']:5.2f}x sequential, "
          f"{shipped['raw'] / shipped['chat_piped']:5.2f}x all at once   (aim: at least 0.5x)")
    print(f"connect_to_peer                         p50 {ms(statistics.median(connects))}   "
          f"max {ms(max(connects))}   (n={len(connects)}; aim: p50 under 300 ms)")
    print()
    print("sealed (as shipped: compressed when it pays) and sealed uncompressed, against plain relay frames, same run")
    print("(MiB/s of messages; ratio = plain time / sealed time; aim: at least 0.9x):")
    print(f"  {'':36}{'plain':>10}{'sealed':>10}{'ratio':>8}{'uncompr.':>10}{'ratio':>8}")
    p_rt, s_rt, u_rt = (pct(f["rtts"], 50) for f in (plain, shipped, uncompressed))
    print(f"  {'confirmed round trip p50 (ms)':36}{p_rt * 1000:10.2f}{s_rt * 1000:10.2f}{p_rt / s_rt:7.2f}x"
          f"{u_rt * 1000:10.2f}{p_rt / u_rt:7.2f}x")
    for key, label, _ in CASES:
        print(f"  {label:36}{rate(plain, key):10.2f}{rate(shipped, key):10.2f}{plain[key] / shipped[key]:7.2f}x"
              f"{rate(uncompressed, key):10.2f}{plain[key] / uncompressed[key]:7.2f}x")
    p_c, s_c, u_c = (statistics.median(f["connects"]) for f in (plain, shipped, uncompressed))
    print(f"  {'connect_to_peer p50 (ms)':36}{p_c * 1000:10.2f}{s_c * 1000:10.2f}{'':8}{u_c * 1000:10.2f}")
    print()
    print("CPU seconds per MiB of messages, this process, the peer and the emulator together (median of the runs;")
    print("ratio = plain / sealed: above 1 when sealing costs less than plain):")
    print(f"  {'':36}{'plain':>10}{'sealed':>10}{'ratio':>8}{'uncompr.':>10}{'ratio':>8}")
    for key, label, unit in CASES:
        size = mib if unit == "16k" else args.large
        p_u, s_u, u_u = (f[f"cpu_{key}"] / size for f in (plain, shipped, uncompressed))
        print(f"  {label:36}{p_u:10.3f}{s_u:10.3f}{p_u / s_u:7.2f}x{u_u:10.3f}{p_u / u_u:7.2f}x")
    print()
    print("bytes this side writes to the database per message (every update's JSON, as sent), and sealed / plain:")
    print(f"  {'':36}{'plain':>10}{'sealed':>10}{'ratio':>8}{'uncompr.':>10}{'ratio':>8}")
    for key in written["plain"]:
        p_b, s_b, u_b = (written[mode][key] for mode in MODES)
        print(f"  {key:36}{p_b:10.0f}{s_b:10.0f}{s_b / p_b:7.2f}x{u_b:10.0f}{u_b / p_b:7.2f}x")
    print()
    print("CPU time of sealing + opening one 16 KiB frame in this process (median of several timings):")
    for key, (on, off) in cpu.items():
        print(f"  {key:36}compressed when it pays {on * 1e6:7.0f} us   uncompressed {off * 1e6:7.0f} us")
    print(json.dumps({
        "set_p50_ms": round(set50 * 1000, 2), "set_p99_ms": round(set99 * 1000, 2),
        "confirmed_rtt_p50_ms": round(rt50 * 1000, 2), "confirmed_rtt_p99_ms": round(rt99 * 1000, 2),
        "rtt_ratio_p50": round(rt50 / set50, 2), "rtt_ratio_p99": round(rt99 / set99, 2),
        "relay_mib_s": round(rate(shipped, "chat_awaited"), 2), "raw_set_mib_s": round(rate(shipped, "raw"), 2),
        "throughput_ratio": round(shipped["raw"] / shipped["chat_awaited"], 2),
        "pipelined_mib_s": round(rate(shipped, "chat_piped"), 2),
        "pipelined_ratio": round(shipped["raw"] / shipped["chat_piped"], 2),
        "connect_p50_ms": round(statistics.median(connects) * 1000, 2),
        "sealed_over_plain": {"rtt_p50": round(p_rt / s_rt, 2),
                              **{key: round(plain[key] / shipped[key], 2) for key, _, _ in CASES}},
        "uncompressed_over_plain": {"rtt_p50": round(p_rt / u_rt, 2),
                                    **{key: round(plain[key] / uncompressed[key], 2) for key, _, _ in CASES}},
        "cpu_plain_over_sealed": {key: round(plain[f"cpu_{key}"] / shipped[f"cpu_{key}"], 2) for key, _, _ in CASES},
        "cpu_plain_over_uncompressed": {
            key: round(plain[f"cpu_{key}"] / uncompressed[f"cpu_{key}"], 2) for key, _, _ in CASES
        },
    }))


class CpuMeter:
    """CPU seconds used so far by this process (all its threads) and the others (the emulator and the peers), read
    from ``/proc`` (Linux; elsewhere only this process counts). On a busy machine the CPU a case costs is steadier
    than the time it takes."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __call__(self) -> float:
        total = time.process_time()
        for pid in self._pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime
        return total


async def measure(managers: dict, targets: dict, raw: Database, args, cpu: CpuMeter) -> dict[str, dict]:
    """Every measurement, for every mode; returns each mode's figures (times in seconds: the lowest of
    ``args.repeat`` runs; round trips: all of them).

    The modes take turns case by case (plain, sealed, uncompressed, then the next case; the order rotates with each
    repetition), so a burst of load from elsewhere on the machine falls on all of them alike.
    """
    out: dict[str, dict] = {
        mode: {"rtts": [], **{key: [] for key, _, _ in CASES}, **{f"cpu_{key}": [] for key, _, _ in CASES}}
        for mode in MODES
    }
    for mode in MODES:  # -- connect_to_peer
        connects = out[mode]["connects"] = []
        for _ in range(args.connects):
            t0 = time.perf_counter()
            conn = await managers[mode].connect_to_peer(targets[mode])
            connects.append(time.perf_counter() - t0)
            await conn.disconnect()
    sessions = {}
    for mode in MODES:
        conn = await managers[mode].connect_to_peer(targets[mode], confirm_data_receival=True)
        done = asyncio.Event()
        conn.events.on(ev.DATA, lambda e, done=done: done.set() if e.data == "done" else None)
        for i in range(10):  # warm-up
            await conn.send(f"warm {i}")
        sessions[mode] = (conn, done)

    async def round_trips(conn, rtts: list[float]) -> None:
        conn.confirm_data_receival = True
        for i in range(args.round_trips // args.repeat):
            t0 = time.perf_counter()
            await conn.send(f"message {i}")
            rtts.append(time.perf_counter() - t0)

    async def one_way(conn, done, send, payload, *, at_once: bool = False) -> float:
        """16 KiB messages one way, from the first send() to the peer's ``done``."""
        conn.confirm_data_receival = False
        await conn.send(f"expect:{args.messages}")
        done.clear()
        t0 = time.perf_counter()
        if at_once:
            await asyncio.gather(*(send(payload) for _ in range(args.messages)))
        else:
            for _ in range(args.messages):
                await send(payload)
        await asyncio.wait_for(done.wait(), 120)
        return time.perf_counter() - t0

    async def large(conn, _done, payload) -> float:
        """1 MiB messages (several relay frames each), each confirmed by the peer's application."""
        conn.confirm_data_receival = True
        t0 = time.perf_counter()
        for _ in range(args.large):
            await conn.send(payload)
        return time.perf_counter() - t0

    cases = {
        "chat_awaited": lambda c, d: one_way(c, d, c.send, CHAT16),
        "chat_piped": lambda c, d: one_way(c, d, c.send, CHAT16, at_once=True),
        "random_awaited": lambda c, d: one_way(c, d, c.send, RANDOM16),
        "random_piped": lambda c, d: one_way(c, d, c.send, RANDOM16, at_once=True),
        "binary_awaited": lambda c, d: one_way(c, d, c.send_bytes, BINARY16),
        "chat_large": lambda c, d: large(c, d, CHAT1M),
        "random_large": lambda c, d: large(c, d, RANDOM1M),
    }
    for rep in range(args.repeat):
        order = MODES[rep % 3:] + MODES[: rep % 3]
        for mode in order:
            await round_trips(sessions[mode][0], out[mode]["rtts"])
        for key, run in cases.items():
            for mode in order:
                conn, done = sessions[mode]
                before, cpu_before = conn.stats["relay_requests"], cpu()
                out[mode][key].append(await run(conn, done))
                out[mode][f"cpu_{key}"].append(cpu() - cpu_before)
                if key == "chat_piped":
                    out[mode]["piped_requests"] = conn.stats["relay_requests"] - before
    for conn, _ in sessions.values():
        await conn.disconnect()
    for mode in MODES:
        for key in cases:
            out[mode][key] = min(out[mode][key])
            out[mode][f"cpu_{key}"] = statistics.median(out[mode][f"cpu_{key}"])

    # -- baselines, for the relay against raw firebase-admin: one small set(), then 16 KiB sets in a row
    path = "relay/sessions/alice/benchmarkbenchmark00/phone/messages/s0000000001"
    sets = []
    for i in range(args.round_trips):
        t0 = time.perf_counter()
        await raw.set(path, {"kind": "data", "seq": 1, "data": f"message {i}", "updatedWhen": TS})
        sets.append(time.perf_counter() - t0)
    await raw.delete("relay/sessions/alice/benchmarkbenchmark00")
    base = "relay/sessions/alice/benchmarkbenchmark01/phone/messages"
    raws = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for i in range(args.messages):
            await raw.set(f"{base}/s{i + 1:010d}", {"kind": "data", "seq": i + 1, "data": CHAT16, "updatedWhen": TS})
        raws.append(time.perf_counter() - t0)
        await raw.delete("relay/sessions/alice/benchmarkbenchmark01")
    out["sealed"]["sets"], out["sealed"]["raw"] = sets, min(raws)
    return out


async def bytes_written(manager, peer_id: str, count: int = 8) -> dict[str, float]:
    """Untimed: the bytes of every update this side writes, per message, for each kind of payload (each message
    confirmed before the next, so every update holds one)."""
    db = manager._database()
    counted = [0]
    update = db.update

    async def counting_update(path, values):
        counted[0] += len(json.dumps(values, separators=(",", ":")))
        return await update(path, values)

    conn = await manager.connect_to_peer(peer_id, confirm_data_receival=True)
    db.update = counting_update
    try:
        out = {}
        for key, send, payload in (
            ("16 KiB chat text", conn.send, CHAT16),
            ("16 KiB random text", conn.send, RANDOM16),
            ("16 KiB random bytes", conn.send_bytes, BINARY16),
            ("1 MiB chat text", conn.send, CHAT1M),
            ("1 MiB random text", conn.send, RANDOM1M),
        ):
            counted[0] = 0
            n = count if len(payload) < 2**20 else 2
            for _ in range(n):
                await send(payload)
            out[key] = counted[0] / n
    finally:
        del db.update
        await conn.disconnect()
    return out


def sealing_cpu(rounds: int = 5, n: int = 40) -> dict[str, tuple[float, float]]:
    """Untimed against the relay: CPU seconds to seal and open one 16 KiB frame, compressed when it pays and not."""
    from core.protocol.handshake import SessionKeys
    from core.protocol.sealing import FrameSealer

    k1, k2 = os.urandom(32), os.urandom(32)
    out = {}
    frames = {
        "16 KiB chat text": {"kind": "data", "seq": 1, "data": CHAT16},
        "16 KiB random text": {"kind": "data", "seq": 1, "data": RANDOM16},
        "16 KiB random bytes": {"kind": "binary", "seq": 1, "data": BINARY16},
    }
    for key, frame in frames.items():
        pair = []
        for compress in (True, False):
            sender = FrameSealer(SessionKeys(k1, k2, b""), session_id="S" * 22, own_id="a", peer_id="b",
                                 compress=compress)
            receiver = FrameSealer(SessionKeys(k2, k1, b""), session_id="S" * 22, own_id="b", peer_id="a")
            timings = []
            for _ in range(rounds):
                t0 = time.process_time()
                for _ in range(n):
                    receiver.open(sender.seal(frame))
                timings.append((time.process_time() - t0) / n)
            pair.append(statistics.median(timings))
        out[key] = (pair[0], pair[1])
    return out


if __name__ == "__main__":
    if "--peer" in sys.argv:
        peer_child(sys.argv[sys.argv.index("--peer") + 1], "--plain" in sys.argv)
        sys.exit(0)
    if "--emulator" in sys.argv:
        emulator_child()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--connects", type=int, default=20)
    parser.add_argument("--large", type=int, default=8, help="1 MiB messages sent confirmed")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case per mode (the best is kept)")
    asyncio.run(main(parser.parse_args()))
