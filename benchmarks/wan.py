"""Benchmark across a simulated WAN: two devices behind two home NATs, the relay and a STUN server on an "internet",
50 ms each way and 1% loss on the routers (``tc netem``; where the kernel has no netem, the loss alone, by nftables,
and the script says so).

The network is the NAT tests' (``tests/nat/internet.py``): network namespaces made and removed by this script, so
it needs root, nftables and coturn (``.ci/run`` installs them). Each side runs in its own process in its own home;
this process starts them, carries the raw rounds' WebRTC signals between them and prints the figures.

Rounds (each a fresh pair of processes):

- ``webrtc``: peerchat over WebRTC: a manager per side on the relay, upgraded through the NATs with the STUN
  server; chat round trips (a confirmed ``send()`` and its echo), then ``core.files.FileTransfers`` of the file, with
  a chat line every half second meanwhile;
- ``webrtc-raw``: a bare aiortc data channel over the same path (same STUN server, same NATs): the same round
  trips (a message and its echo) and the same bytes as 64 KiB messages with the usual back-pressure. The baseline;
  aim: ``webrtc`` at least 0.9x of it;
- ``relay``: peerchat with WebRTC off, everything through the relay (the emulator in the internet), for comparison.

Run: ``sudo uv run python benchmarks/wan.py [--mib 64] [--trips 30] [--rounds webrtc webrtc-raw relay]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests" / "nat")]

from transfer import RAW_MESSAGE, out, rss_mib, stdin_lines, transfer_side  # noqa: E402

from core import events as ev  # noqa: E402
from core.files.transfers import DEFAULT_WINDOW  # noqa: E402
from core.peer import PeerConnection, PeerInfo  # noqa: E402

MIB = 1024 * 1024
ROUND_LIMIT = 900.0  # bound on one round (both processes); never an assertion about speed


# ------------------------------------------------------------------------------------------------ the two sides
async def echo_trips(send: Any, echoes: asyncio.Queue[str], count: int) -> list[float]:
    """``count`` round trips, one after the other: send ``trip i`` and wait for its echo."""
    trips = []
    for i in range(count):
        started = time.perf_counter()
        await send(f"trip {i}")
        while await echoes.get() != f"trip {i}":
            pass
        trips.append(time.perf_counter() - started)
    return trips


async def peerchat_side(role: str, args: argparse.Namespace, lines: asyncio.StreamReader) -> None:
    import firebase_admin
    from google.auth.credentials import AnonymousCredentials

    from core.manager import FirebasePeerConnectionManager
    from core.options import IceServer, ManagerOptions

    webrtc = args.round == "webrtc"
    options = ManagerOptions(webrtc=webrtc, ice_servers=(IceServer(args.stun),), upgrade_timeout=20.0,
                             connect_timeout=40.0)
    app = firebase_admin.initialize_app(
        AnonymousCredentials(), {"databaseURL": args.db, "databaseAuthVariableOverride": {"uid": "alice"}}, name=role)
    device = "laptop" if role == "sender" else "desktop"
    manager = FirebasePeerConnectionManager("alice", PeerInfo(device, device), app=app, options=options)
    await manager.start()
    try:
        if role == "receiver":
            incoming: asyncio.Future[PeerConnection] = asyncio.get_running_loop().create_future()
            manager.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
            out(peer={"ready": True})
            connection = await incoming
            await transfer_side(role, args, connection)  # it echoes every chat line, the round trips' too
            return
        await lines.readline()  # the receiver is online
        while not any(p.id == "desktop" for p in await manager.get_online_peers()):
            await asyncio.sleep(0.1)
        connection = await manager.connect_to_peer("desktop", confirm_data_receival=True)
        if webrtc and connection.transport != "webrtc":
            raise SystemExit(f"the connection did not upgrade to WebRTC: {connection.upgrade_failure}")
        echoes: asyncio.Queue[str] = asyncio.Queue()
        listener = lambda d: echoes.put_nowait(d.data)  # noqa: E731
        connection.events.on(ev.DATA, listener)
        trips = await echo_trips(connection.send, echoes, args.trips)
        connection.events.remove_listener(ev.DATA, listener)
        out(trips={"trips": trips, "route": str(connection.route) if connection.route else connection.transport})
        await transfer_side(role, args, connection)
    finally:
        await manager.stop()


async def raw_side(role: str, args: argparse.Namespace, lines: asyncio.StreamReader) -> None:
    """A bare aiortc data channel through the same NATs with the same STUN server (no relay, no reliable stream)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from core.options import IceServer
    from core.webrtc.link import LinkOptions, _gather_on, rtc_configuration

    options = LinkOptions(ice_servers=(IceServer(args.stun),))
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(rtc_configuration(options))
    room, opened, done = asyncio.Event(), loop.create_future(), loop.create_future()
    echoes: asyncio.Queue[str] = asyncio.Queue()
    channel: Any = None
    received = 0

    def on_message(data: str | bytes) -> None:
        nonlocal received
        if isinstance(data, str):
            if role == "receiver":
                channel.send(data)
            else:
                echoes.put_nowait(data)
            return
        received += len(data)
        if received >= args.bytes and not done.done():
            done.set_result(time.time())

    def attach(new: Any) -> None:
        nonlocal channel
        channel = new
        channel.bufferedAmountLowThreshold = options.low_water
        channel.on("bufferedamountlow", room.set)
        channel.on("message", on_message)
        if channel.readyState == "open":
            opened.done() or opened.set_result(None)
        channel.on("open", lambda: opened.done() or opened.set_result(None))

    async def read_signals() -> None:
        while line := await lines.readline():
            signal = json.loads(line)["signal"]
            await pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], signal["type"]))
            if signal["type"] == "offer":
                _gather_on(pc, options)
                await pc.setLocalDescription(await pc.createAnswer())
                out(peer={"signal": {"type": "answer", "sdp": pc.localDescription.sdp}})

    reading = loop.create_task(read_signals())
    if role == "receiver":
        pc.on("datachannel", attach)
        end = await done
        out(result={"end": end, "rss": rss_mib()})
        await asyncio.sleep(2)  # the sender may still read its last echo
        await pc.close()
        reading.cancel()
        return
    attach(pc.createDataChannel("raw"))
    _gather_on(pc, options)
    await pc.setLocalDescription(await pc.createOffer())
    out(peer={"signal": {"type": "offer", "sdp": pc.localDescription.sdp}})
    async with asyncio.timeout(60):
        await opened
    trips = await echo_trips(lambda text: _sync(channel.send, text), echoes, args.trips)
    out(trips={"trips": trips, "route": "raw"})
    start = time.time()
    with open(args.file, "rb") as f:
        while block := f.read(RAW_MESSAGE):
            while channel.bufferedAmount > options.high_water:
                room.clear()
                await room.wait()
            channel.send(block)
    out(result={"start": start, "rss": rss_mib()})
    await asyncio.sleep(30)  # the parent stops this process once the receiver counted every byte


async def _sync(function: Any, *args: Any) -> None:
    function(*args)


async def child(args: argparse.Namespace) -> None:
    lines = await stdin_lines()
    if args.round == "webrtc-raw":
        await raw_side(args.role, args, lines)
    else:
        await peerchat_side(args.role, args, lines)


# ----------------------------------------------------------------------------------------------------- the parent
async def run_round(net: Any, name: str, file: Path, size: int, args: argparse.Namespace) -> dict[str, dict]:
    common = ["--round", name, "--file", str(file), "--bytes", str(size), "--workdir", str(file.parent),
              "--db", f"http://{net.relay}?ns=wan{os.getpid()}{name.replace('-', '')}", "--stun", net.stun_url,
              "--trips", str(args.trips), "--window", str(args.window)]
    homes = {"sender": net.homes[0].hosts[0], "receiver": net.homes[1].hosts[0]}
    procs = {
        role: await asyncio.create_subprocess_exec(
            *net.exec_prefix(homes[role]), sys.executable, __file__, "--role", role, *common,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 22)
        for role in ("sender", "receiver")
    }
    results: dict[str, dict] = {}
    finished = asyncio.Event()

    async def pump(role: str) -> None:
        stdout = procs[role].stdout
        assert stdout is not None
        while line := await stdout.readline():
            item = json.loads(line)
            if "peer" in item:
                other = procs["receiver" if role == "sender" else "sender"].stdin
                assert other is not None
                other.write((json.dumps(item["peer"]) + "\n").encode())
            elif "trips" in item:
                results["trips"] = item["trips"]
            elif "result" in item:
                results[role] = item["result"]
                if "sender" in results and "receiver" in results:
                    finished.set()

    pumps = [asyncio.create_task(pump(role)) for role in procs]
    try:
        await asyncio.wait_for(finished.wait(), ROUND_LIMIT)
    finally:
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 5 if name != "webrtc-raw" else 0.1)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in pumps:
            task.cancel()
    return results


async def parent(args: argparse.Namespace) -> None:
    from internet import Internet, unavailable

    reason = unavailable()
    if reason:
        print(f"wan benchmark skipped: {reason}")
        return
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="peerchat-wan-") as tmp:
        file = Path(tmp) / "random.bin"
        with open(file, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        with Internet(["cone", "cone"], delay_ms=args.delay, loss_percent=args.loss) as net:
            print(f"WAN: two homes behind NATs, STUN at {net.stun_url}, relay at {net.relay}; impairment: "
                  f"{net.impairment}. File: {args.mib} MiB of random bytes; {args.trips} chat round trips each.")
            rates: dict[str, float] = {}
            medians: dict[str, float] = {}
            for name in args.rounds:
                results = await run_round(net, name, file, size, args)
                sender, receiver, trips = results["sender"], results["receiver"], results["trips"]
                times = sorted(trips["trips"])
                medians[name] = statistics.median(times)
                if name == "webrtc-raw":
                    seconds = receiver["end"] - sender["start"]
                else:
                    seconds = sender["end"] - sender["offered"]
                    os.unlink(receiver["saved"])
                rates[name] = size / MIB / seconds
                chat = sender.get("chat")
                print(f"  {name:10s} ({trips['route']}): file {rates[name]:6.2f} MiB/s ({seconds:.1f} s); chat round "
                      f"trip p50 {medians[name] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
                      + (f"; during the transfer p50 {chat[0] * 1000:.0f} ms, max {chat[1] * 1000:.0f} ms"
                         if chat else ""))
            if "webrtc" in rates and "webrtc-raw" in rates:
                print(f"  peerchat over WebRTC / raw aiortc: file {rates['webrtc'] / rates['webrtc-raw']:.2f}x "
                      f"(aim >= 0.9x), chat round trip {medians['webrtc'] / medians['webrtc-raw']:.2f}x the raw time")
            if "relay" in rates and "webrtc" in rates:
                print(f"  relay / WebRTC: file {rates['relay'] / rates['webrtc']:.2f}x, chat round trip "
                      f"{medians['relay'] / medians['webrtc']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="the file's size (default 64 MiB)")
    parser.add_argument("--trips", type=int, default=30, help="chat round trips per round (default 30)")
    parser.add_argument("--delay", type=float, default=50.0, help="ms added each way on each router (netem)")
    parser.add_argument("--loss", type=float, default=1.0, help="percent of packets lost on each router")
    parser.add_argument("--rounds", nargs="+", default=["webrtc", "webrtc-raw", "relay"],
                        choices=["webrtc", "webrtc-raw", "relay"])
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="chunks in flight per transfer")
    parser.add_argument("--concurrency", type=int, default=None)
    for name in ("--role", "--round", "--file", "--workdir", "--db", "--stun"):
        parser.add_argument(name)
    parser.add_argument("--bytes", type=int)
    args = parser.parse_args()
    asyncio.run(child(args) if args.role else parent(args))


if __name__ == "__main__":
    main()
