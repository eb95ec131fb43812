"""Benchmark of the WebRTC link: text throughput against a raw aiortc data channel, and time to open, p50.

Two processes on loopback: this one offers and sends, a child (this script with ``--child``) answers and counts;
signals and results travel as JSON lines over the child's stdin and stdout. For each message size, rounds
alternate between our :class:`core.webrtc.WebRTCLink` and a raw aiortc data channel that sends the same text
messages with the same back-pressure (pause above the high-water mark, resume on ``bufferedamountlow``), so the
ratio shows what the link's framing, events and flow control cost. Time to open runs from creating the peer
connection on the offering side to its data channel being open (offer, answer, ICE, DTLS, SCTP).

Run: ``uv run python benchmarks/webrtc.py [--sizes 1024 16384] [--mib 8] [--rounds 3] [--opens 15]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from core.webrtc import LinkOptions, WebRTCLink, _gather_on, rtc_configuration

OPTIONS = LinkOptions(host_addresses=("127.0.0.1",), open_timeout=20.0)
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


# ------------------------------------------------------------------------------------------------------ the child
async def child() -> None:
    """Answer every setup from the parent, count what arrives, report when the expected count is reached."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    peers: dict[int, WebRTCLink | RawPeer] = {}

    def out(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def counter(trial: int, expected: int) -> Callable[[int], None]:
        state = {"count": 0, "bytes": 0}

        def count(size: int) -> None:
            state["count"] += 1
            state["bytes"] += size
            if state["count"] == expected:
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

    async def run(self, kind: str, size: int, count: int) -> tuple[float, float]:
        """One trial: (seconds to open, bytes per second for ``count`` messages of ``size`` characters)."""
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
        started = time.perf_counter()
        for _ in range(count):
            await send(text)
        received = await asyncio.wait_for(self.wait("received", trial), 120)
        elapsed = time.perf_counter() - started
        assert received["bytes"] == size * count, received
        await close()
        self.send(close=trial)
        await asyncio.wait_for(self.wait("closed", trial), 30)
        return opened, size * count / elapsed


async def parent(args: argparse.Namespace) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    bench = Parent(proc)
    reading = asyncio.create_task(bench.read())
    opens: dict[str, list[float]] = {"link": [], "raw": []}
    print(f"WebRTC link vs raw aiortc data channel, two processes on 127.0.0.1, {args.mib} MiB of text per run, "
          f"median of {args.rounds} alternating rounds")
    try:
        for size in args.sizes:
            count = args.mib * 1024 * 1024 // size
            rates: dict[str, list[float]] = {"link": [], "raw": []}
            for _ in range(args.rounds):
                for kind in ("raw", "link"):
                    opened, rate = await bench.run(kind, size, count)
                    opens[kind].append(opened)
                    rates[kind].append(rate)
            link, raw = statistics.median(rates["link"]), statistics.median(rates["raw"])
            print(f"  {size:>6} B messages: link {link / 1e6:7.1f} MB/s   raw {raw / 1e6:7.1f} MB/s   "
                  f"ratio {link / raw:.2f}x")
        for _ in range(max(0, args.opens - len(opens["link"]))):
            for kind in ("raw", "link"):
                opens[kind].append((await bench.run(kind, 64, 1))[0])
        for kind, label in (("link", "link"), ("raw", "raw aiortc")):
            values = sorted(opens[kind])
            print(f"  time to open, {label:<10}: p50 {statistics.median(values) * 1000:6.1f} ms   "
                  f"max {values[-1] * 1000:6.1f} ms   ({len(values)} opens)")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
        reading.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--opens", type=int, default=15)
    arguments = parser.parse_args()
    asyncio.run(child() if arguments.child else parent(arguments))
