"""Benchmark of the WebRTC link: text throughput against a raw aiortc data channel, and time to open, p50.

Two processes on loopback: this one offers and sends, a child (this script with ``--child``) answers and counts;
signals and results travel as JSON lines over the child's stdin and stdout. For each message size, rounds
alternate between our :class:`core.webrtc.WebRTCLink` and a raw aiortc data channel that sends the same text
messages with the same back-pressure (pause above the high-water mark, resume on ``bufferedamountlow``), so the
ratio shows what the link's framing, events and flow control cost. Time to open runs from creating the peer
connection on the offering side to its data channel being open (offer, answer, ICE, DTLS, SCTP).

The same rounds also send through a whole :class:`core.peer.PeerConnection` (two FirebasePeerConnectionManagers on
our Realtime Database emulator, upgraded by :func:`core.webrtc.upgrade.webrtc_upgrader`), and the upgrade time is measured
from relay-connected (the upgrader starts) to WebRTC-open (the link is attached).

Run: ``uv run python benchmarks/webrtc.py [--sizes 1024 16384] [--mib 4] [--rounds 5] [--opens 15] [--no-connection]``

Profile: set ``PEERCHAT_BENCH_PROFILE=PREFIX`` to write cProfile statistics of each process to ``PREFIX.parent`` and
``PREFIX.child`` (read them with ``python -m pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The project first: this folder's emulator.py (a benchmark) must not stand for the emulator package.
sys.path.insert(0, str(ROOT))

import firebase_admin  # noqa: E402
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from core import events as ev  # noqa: E402
from core.manager import FirebasePeerConnectionManager  # noqa: E402
from core.options import ManagerOptions  # noqa: E402
from core.peer import PeerInfo  # noqa: E402
from core.relay.connection import RelayConnection  # noqa: E402
from core.webrtc.link import LinkOptions, WebRTCLink, _gather_on, rtc_configuration  # noqa: E402
from core.webrtc.upgrade import webrtc_upgrader  # noqa: E402
from emulator import Emulator  # noqa: E402

OPTIONS = LinkOptions(host_addresses=("127.0.0.1",), open_timeout=20.0)
RULES = ROOT / "firebase" / "database.rules.json"
USER = "bench"
MANAGER_OPTIONS = ManagerOptions(upgrade_timeout=20.0, connect_timeout=30.0)
END = "END"
HIGH_WATER, LOW_WATER = OPTIONS.high_water, OPTIONS.low_water


# ------------------------------------------------------------------------------------------ raw aiortc, both sides
class RawPeer:
    """A bare aiortc peer connection with one data channel, gathering on loopback like the link does."""

    def __init__(self, send_signal: Callable[[dict[str, Any]], None]) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(OPTIONS))
        self.send_signal = send_signal
        self.channel: RTCDataChannel | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.room = asyncio.Event()

    def attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self.room.set)
        if channel.readyState == "open":
            self.opened.set_result(None)
        else:
            channel.on("open", lambda: self.opened.done() or self.opened.set_result(None))

    async def offer(self) -> None:
        self.attach(self.pc.createDataChannel("raw"))
        _gather_on(self.pc, OPTIONS)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.send_signal({"type": "offer", "sdp": self.pc.localDescription.sdp})

    async def handle_signal(self, signal: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], signal["type"]))
        if signal["type"] == "offer":
            self.pc.on("datachannel", self.attach)
            _gather_on(self.pc, OPTIONS)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            self.send_signal({"type": "answer", "sdp": self.pc.localDescription.sdp})

    async def send(self, text: str) -> None:
        assert self.channel is not None
        while self.channel.bufferedAmount > HIGH_WATER:
            self.room.clear()
            await self.room.wait()
        self.channel.send(text)

    async def close(self) -> None:
        await self.pc.close()


def make_manager(database_url: str, device: str) -> FirebasePeerConnectionManager:
    app = firebase_admin.initialize_app(
        AnonymousCredentials(), {"databaseURL": database_url, "databaseAuthVariableOverride": {"uid": USER}},
        name=device,
    )
    upgrader = webrtc_upgrader(MANAGER_OPTIONS, host_addresses=("127.0.0.1",))
    return FirebasePeerConnectionManager(USER, PeerInfo(device, device), app=app, options=MANAGER_OPTIONS,
                                         upgrader=upgrader)


# ------------------------------------------------------------------------------------------------------ the child
async def child(database_url: str | None) -> None:
    """Answer every setup from the parent, count what arrives, report when the expected count is reached."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    peers: dict[int, WebRTCLink | RawPeer] = {}

    def out(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    manager = None
    if database_url is not None:
        manager = make_manager(database_url, "phone")

        def on_incoming(event: ev.IncomingConnection) -> None:
            state: dict[str, Any] = {"count": 0, "bytes": 0, "cpu": 0.0, "transport": event.connection.transport}

            def on_data(data: ev.Data) -> None:
                if data.data == END:
                    state["cpu"] = time.process_time() - state["cpu"]
                    out(pc_received=state)
                else:
                    if state["count"] == 0:
                        state["cpu"] = time.process_time()
                    state["count"] += 1
                    state["bytes"] += len(data.data)

            event.connection.events.on(ev.DATA, on_data)

        manager.events.on(ev.INCOMING_CONNECTION, on_incoming)
        await manager.start()
        out(ready=True)

    def counter(trial: int, expected: int) -> Callable[[int], None]:
        state = {"count": 0, "bytes": 0, "cpu": 0.0}

        def count(size: int) -> None:
            if state["count"] == 0:
                state["cpu"] = time.process_time()
            state["count"] += 1
            state["bytes"] += size
            if state["count"] == expected:
                state["cpu"] = time.process_time() - state["cpu"]
                out(received={"id": trial, **state})

        return count

    while line := await reader.readline():
        item = json.loads(line)
        if "setup" in item:
            trial, kind, expected = item["setup"]["id"], item["setup"]["kind"], item["setup"]["count"]
            count = counter(trial, expected)

            def signal_out(signal: dict[str, Any], trial: int = trial) -> None:
                out(signal=signal, id=trial)

            if kind == "link":

                async def send_signal(signal: dict[str, Any], out_: Callable[..., None] = signal_out) -> None:
                    out_(signal)

                link = WebRTCLink("answerer", send_signal, OPTIONS)
                link.events.on("message", lambda message, count=count: count(len(message.data)))
                peers[trial] = link
                loop.create_task(link.open())
            else:
                raw = RawPeer(signal_out)
                raw.pc.on("datachannel", lambda channel, count=count: channel.on(
                    "message", lambda data: count(len(data))))
                peers[trial] = raw
        elif "signal" in item:
            await peers[item["id"]].handle_signal(item["signal"])
        elif "close" in item:
            peer = peers.pop(item["close"])
            await peer.close()
            out(closed=item["close"])
    if manager is not None:
        await manager.stop()


# ----------------------------------------------------------------------------------------------------- the parent
class Parent:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.trial = 0
        self.signal_handlers: dict[int, Callable[[dict[str, Any]], Any]] = {}
        self.waiters: dict[tuple[str, int], asyncio.Future[Any]] = {}

    def send(self, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(fields) + "\n").encode())

    def wait(self, what: str, trial: int) -> asyncio.Future[Any]:
        return self.waiters.setdefault((what, trial), asyncio.get_running_loop().create_future())

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            item = json.loads(line)
            if "signal" in item:
                await self.signal_handlers[item["id"]](item["signal"])
            elif "received" in item:
                self.wait("received", item["received"]["id"]).set_result(item["received"])
            elif "closed" in item:
                self.wait("closed", item["closed"]).set_result(None)
            elif "pc_received" in item:
                self.wait("pc_received", self.trial).set_result(item["pc_received"])
            elif "ready" in item:
                self.wait("ready", 0).set_result(None)

    async def run(self, kind: str, size: int, count: int) -> tuple[float, float, float]:
        """One trial: seconds to open, bytes per second and CPU seconds (both processes) for ``count`` messages."""
        self.trial += 1
        trial = self.trial
        text = "x" * size
        self.send(setup={"id": trial, "kind": kind, "count": count})
        started = time.perf_counter()
        if kind == "link":

            async def send_signal(signal: dict[str, Any]) -> None:
                self.send(signal=signal, id=trial)

            link = WebRTCLink("offerer", send_signal, OPTIONS)
            self.signal_handlers[trial] = link.handle_signal
            await link.open()
            send, close = link.send, link.close
        else:
            raw = RawPeer(lambda signal: self.send(signal=signal, id=trial))
            self.signal_handlers[trial] = raw.handle_signal
            await raw.offer()
            await raw.opened
            send, close = raw.send, raw.close
        opened = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            await send(text)
        received = await asyncio.wait_for(self.wait("received", trial), 120)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu + received["cpu"]
        assert received["bytes"] == size * count, received
        await close()
        self.send(close=trial)
        await asyncio.wait_for(self.wait("closed", trial), 30)
        return opened, size * count / elapsed, cpu


    async def run_connection(
        self, manager: FirebasePeerConnectionManager, size: int, count: int
    ) -> tuple[float, float]:
        """One trial over a whole PeerConnection: bytes per second and CPU seconds (both processes)."""
        self.trial += 1
        text = "x" * size
        conn = await manager.connect_to_peer("phone")
        try:
            if conn.transport != "webrtc":
                raise RuntimeError(f"the connection was not upgraded (transport {conn.transport})")
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                await conn.send(text)
            await conn.send(END)
            received = await asyncio.wait_for(self.wait("pc_received", self.trial), 300)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu + received["cpu"]
            if received["bytes"] != size * count:
                raise RuntimeError(f"the peer received {received}, expected {count} messages")
            return size * count / elapsed, cpu
        finally:
            await conn.disconnect()


class TimedUpgrader:
    """Wraps an upgrader to time it: from relay-connected (it starts) to WebRTC-open (it returns)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.times: list[float] = []

    async def __call__(self, connection: RelayConnection) -> None:
        started = time.perf_counter()
        await self.inner(connection)
        self.times.append(time.perf_counter() - started)


def report_times(label: str, values: list[float]) -> None:
    values = sorted(values)
    print(f"  {label:<40}: p50 {statistics.median(values) * 1000:6.1f} ms   max {values[-1] * 1000:6.1f} ms   "
          f"({len(values)} runs)")


async def parent(args: argparse.Namespace, emulator: Emulator | None) -> None:
    database_url = None
    if emulator is not None:
        namespace = f"bench-{uuid.uuid4().hex[:12]}"
        emulator.load_rules(RULES, namespace)
        database_url = emulator.database_url(namespace)
    extra = ["--database-url", database_url] if database_url else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", *extra, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    bench = Parent(proc)
    reading = asyncio.create_task(bench.read())
    manager, timed = None, None
    kinds = ["raw", "link"] + (["connection"] if database_url else [])
    opens: dict[str, list[float]] = {"link": [], "raw": []}
    print(f"WebRTC link vs raw aiortc data channel, two processes on 127.0.0.1, {args.mib} MiB of text per run, "
          f"median of {args.rounds} alternating rounds")
    try:
        if database_url:
            await asyncio.wait_for(bench.wait("ready", 0), 60)
            manager = make_manager(database_url, "laptop")
            timed = TimedUpgrader(manager.upgrader)
            manager.upgrader = timed
            await manager.start()
            async with asyncio.timeout(60):
                while "phone" not in {peer.id for peer in await manager.get_online_peers()}:
                    await asyncio.sleep(0.1)
        for size in args.sizes:
            count = args.mib * 1024 * 1024 // size
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    if kind == "connection":
                        assert manager is not None
                        rate, cpu = await bench.run_connection(manager, size, count)
                    else:
                        opened, rate, cpu = await bench.run(kind, size, count)
                        opens[kind].append(opened)
                    rates[kind].append(rate)
                    cpus[kind].append(cpu / args.mib * 1000)
            rate = {kind: statistics.median(values) for kind, values in rates.items()}
            cpu = {kind: statistics.median(values) for kind, values in cpus.items()}
            names = {"raw": "raw aiortc", "link": "WebRTCLink", "connection": "PeerConnection"}
            for kind in kinds:
                print(f"  {size:>6} B messages, {names[kind]:<14}: {rate[kind] / 1e6:6.2f} MB/s "
                      f"({rate[kind] / rate['raw']:.2f}x raw)   CPU {cpu[kind]:6.0f} ms/MiB "
                      f"({cpu[kind] / cpu['raw']:.2f}x raw)")
        for _ in range(max(0, args.opens - len(opens["link"]))):
            for kind in ("raw", "link"):
                opens[kind].append((await bench.run(kind, 64, 1))[0])
        if manager is not None and timed is not None:
            while len(timed.times) < args.opens:
                conn = await manager.connect_to_peer("phone")
                await conn.disconnect()
        report_times("time to open, raw aiortc data channel", opens["raw"])
        report_times("time to open, WebRTCLink", opens["link"])
        if timed is not None:
            report_times("upgrade, relay-connected to WebRTC-open", timed.times)
    finally:
        if manager is not None:
            await manager.stop()
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
        reading.cancel()


def main(args: argparse.Namespace) -> None:
    prefix = os.environ.get("PEERCHAT_BENCH_PROFILE")
    if not prefix:
        run(args)
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(run, args)
    finally:
        profiler.dump_stats(f"{prefix}.{'child' if args.child else 'parent'}")


def run(args: argparse.Namespace) -> None:
    if args.child:
        asyncio.run(child(args.database_url))
    elif args.no_connection:
        asyncio.run(parent(args, None))
    else:
        with Emulator.in_thread() as emulator:
            asyncio.run(parent(args, emulator))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--opens", type=int, default=15)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--no-connection", action="store_true", help="skip the PeerConnection rounds (no emulator)")
    main(parser.parse_args())
