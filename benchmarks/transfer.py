"""Benchmark of file transfer: throughput against the raw link, and the peak resident memory of each side.

Each round runs the sender and the receiver in two fresh processes (this script with ``--role``), so each side's
peak RSS is its own; this process only creates the file, starts them, passes their messages to each other (JSON
lines on stdin/stdout: WebRTC signals, "ready") and prints the figures.

Rounds:

- ``webrtc``: ``core.files.FileTransfers`` over the manager's connection upgraded to WebRTC (the default upgrader,
  host candidates on 127.0.0.1; signalled through the emulator), against ``webrtc-raw``: a bare aiortc data channel
  sending the same bytes as 64 KiB binary messages with the usual back-pressure. ``webrtc-link`` (optional) runs
  the transfer over a bare ``core.webrtc.WebRTCLink`` in a minimal PeerConnection, without the reliable stream.
- ``direct``: ``FileTransfers`` over the manager's connection on the direct link (TCP + TLS 1.3 on 127.0.0.1,
  signalled through the emulator), against ``direct-raw``: bare asyncio TLS 1.3 with pinned certificates, the file
  read in 1 MiB blocks on one side and written to a file on the other, ``await drain()`` between blocks.
- ``relay``: ``FileTransfers`` over the relay connection (``core.relay.connection``) through the emulator (its own process),
  against ``relay-raw``: sequential firebase-admin ``set()`` calls writing the same bytes, base64, in chunks of the
  size the transfer uses (nobody reads them). ``relay-conn`` (optional) sends the same chunks with the relay
  connection's own ``send_bytes``, without the transfer layer, to tell the layer's cost from the connection's.

Throughput counts from the moment ``send_files`` was called (hashing included) or from when the offer went out
(hashing excluded), until the sender heard the last file was verified. Aims: direct at least 0.8x raw, WebRTC at
least 0.9x raw, relay at least 0.5x raw. CPU time is summed over both sides (and the emulator, shown apart) and
given per GiB moved.

The peak RSS of each side is its own process's (``ru_maxrss``, start-up included). CPU time is printed whole and
"while the file moved" (from the first byte sent or accepted, without imports and connecting), both sides summed;
for the direct rounds the last line compares the latter with the raw round's. Each round says the size it moved.

Run: ``uv run python benchmarks/transfer.py [--mib 256] [--direct-mib 1024] [--repeat 5] [--rounds direct direct-raw
webrtc webrtc-raw relay relay-raw]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyee.asyncio import AsyncIOEventEmitter  # noqa: E402

from core import events as ev  # noqa: E402
from core.peer import PeerConnection, PeerInfo  # noqa: E402

RULES = ROOT / "firebase" / "database.rules.json"
RAW_MESSAGE = 64 * 1024
MIB = 1024 * 1024


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, every thread) of this process, or of ``pid`` (Linux: /proc; else 0)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def out(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 22)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# --------------------------------------------------------------------------------- a WebRTCLink as a connection
class LinkConnection(PeerConnection):
    """The least PeerConnection around a WebRTCLink: what FileTransfers uses (bytes, strings, closed)."""

    def __init__(self, link: Any) -> None:
        from core.protocol.packets import MAX_PACKET_BYTES

        self.events = AsyncIOEventEmitter()
        self._link = link
        self._closed = False
        # The link adds a one-byte header per data-channel message: one transfer frame fills one message.
        self.max_bytes_message = MAX_PACKET_BYTES - 1
        link.events.on("message", self._on_message)
        link.events.on("closed", lambda info: self._close())

    def _on_message(self, message: Any) -> None:
        if isinstance(message.data, bytes):
            self.events.emit(ev.BINARY, ev.BinaryData(message.data))
        else:
            self.events.emit(ev.DATA, ev.Data(message.data))

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.events.emit(ev.CLOSED, ev.ConnectionClosed(self, "peer-requested-closed"))

    peer = property(lambda self: PeerInfo("peer", "peer"))
    session_id = property(lambda self: "benchmark")
    transport = property(lambda self: "webrtc")  # type: ignore[assignment]
    rtt = property(lambda self: None)
    is_slow = property(lambda self: False)
    is_closed = property(lambda self: self._closed)

    async def send(self, data: str) -> None:
        await self._link.send(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._link.send(bytes(data))

    async def disconnect(self) -> None:
        await self._link.close()
        self._close()




# ------------------------------------------------------------------------------------------------ the two sides
async def webrtc_side(role: str, args: argparse.Namespace, lines: asyncio.StreamReader) -> None:
    from core.webrtc.link import LinkOptions, WebRTCLink, _gather_on, rtc_configuration

    options = LinkOptions(host_addresses=("127.0.0.1",), open_timeout=30.0, idle_timeout=60.0)
    raw = args.round == "webrtc-raw"  # else "webrtc-link"
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    if raw:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(rtc_configuration(options))
        room = asyncio.Event()
        opened = loop.create_future()
        received = 0

        def attach(channel: Any) -> None:
            nonlocal chan
            chan = channel
            channel.bufferedAmountLowThreshold = options.low_water
            channel.on("bufferedamountlow", room.set)
            channel.on("open", lambda: opened.done() or opened.set_result(None))
            if channel.readyState == "open" and not opened.done():
                opened.set_result(None)
            channel.on("message", on_message)

        def on_message(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received >= args.bytes and not done.done():
                done.set_result(time.time())

        chan: Any = None

        async def handle(signal: dict[str, Any]) -> None:
            await pc.setRemoteDescription(RTCSessionDescription(signal["sdp"], signal["type"]))
            if signal["type"] == "offer":
                pc.on("datachannel", attach)
                _gather_on(pc, options)
                await pc.setLocalDescription(await pc.createAnswer())
                out(peer={"signal": {"type": "answer", "sdp": pc.localDescription.sdp}})

        async def read_signals() -> None:
            while line := await lines.readline():
                await handle(json.loads(line)["signal"])

        loop.create_task(read_signals())
        if role == "sender":
            attach(pc.createDataChannel("raw"))
            _gather_on(pc, options)
            await pc.setLocalDescription(await pc.createOffer())
            out(peer={"signal": {"type": "offer", "sdp": pc.localDescription.sdp}})
            await opened
            start = time.time()
            with open(args.file, "rb") as f:
                while block := f.read(RAW_MESSAGE):
                    while chan.bufferedAmount > options.high_water:
                        room.clear()
                        await room.wait()
                    chan.send(block)
            out(result={"start": start, "rss": rss_mib(), "cpu": cpu_seconds()})
            await asyncio.sleep(5)  # let the receiver count the last bytes
        else:
            end = await done
            out(result={"end": end, "bytes": received, "rss": rss_mib(), "cpu": cpu_seconds()})
            await pc.close()
        return

    async def send_signal(signal: dict[str, Any]) -> None:
        out(peer={"signal": signal})

    link = WebRTCLink("offerer" if role == "sender" else "answerer", send_signal, options)

    async def read_signals() -> None:
        while line := await lines.readline():
            await link.handle_signal(json.loads(line)["signal"])

    loop.create_task(read_signals())
    await link.open()
    await transfer_side(role, args, LinkConnection(link))


async def tls_side(role: str, args: argparse.Namespace, lines: asyncio.StreamReader) -> None:
    """Bare asyncio TLS 1.3 with pinned certificates, file to file: the direct link's baseline."""
    import base64 as b64

    from core.direct.certs import client_context, server_context, session_certificate

    own = session_certificate()
    out(peer={"cert": b64.b64encode(own.der).decode()})
    peer = json.loads(await lines.readline())
    peer_der = b64.b64decode(peer["cert"])
    block = MIB
    if role == "receiver":
        done = asyncio.get_running_loop().create_future()
        target = Path(tempfile.mkdtemp(prefix="peerchat-bench-", dir=args.workdir)) / "raw.bin"

        cpu_at_start = 0.0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal cpu_at_start
            cpu_at_start = cpu_seconds()
            received = 0
            with open(target, "wb") as f:
                while received < args.bytes:
                    data = await reader.read(block)
                    if not data:
                        break
                    f.write(data)
                    received += len(data)
            writer.write(b"k")
            await writer.drain()
            done.set_result(time.time())

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(own, peer_der))
        out(peer={"port": server.sockets[0].getsockname()[1]})
        end = await done
        server.close()
        out(result={"end": end, "rss": rss_mib(), "cpu": cpu_seconds(), "saved": str(target),
                    "cpu_moving": cpu_seconds() - cpu_at_start})
        return
    port = json.loads(await lines.readline())["port"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(own, peer_der),
                                                   server_hostname="peerchat")
    start = time.time()
    cpu_at_start = cpu_seconds()
    with open(args.file, "rb") as f:
        while data := f.read(block):
            writer.write(data)
            await writer.drain()
    await reader.readexactly(1)  # the receiver wrote everything
    out(result={"start": start, "rss": rss_mib(), "cpu": cpu_seconds(), "cpu_moving": cpu_seconds() - cpu_at_start})
    writer.close()


async def relay_side(role: str, args: argparse.Namespace, lines: asyncio.StreamReader) -> None:
    import firebase_admin
    from google.auth.credentials import AnonymousCredentials

    options_for_app = {"databaseURL": args.db, "databaseAuthVariableOverride": {"uid": "alice"}}
    if args.round == "relay-raw":
        from firebase_admin import db

        from core.files.transfers import max_chunk_payload
        from core.options import ManagerOptions

        app = firebase_admin.initialize_app(AnonymousCredentials(), {"databaseURL": args.db}, name="raw")
        chunk = max_chunk_payload(LinkConnectionStub(), ManagerOptions())

        def write_all() -> tuple[float, float]:
            start = time.time()
            with open(args.file, "rb") as f:
                i = 0
                while block := f.read(chunk):
                    db.reference(f"bench/raw/{i % 16}", app=app).set(base64.b64encode(block).decode())
                    i += 1
            return start, time.time()

        start, end = await asyncio.to_thread(write_all)
        out(result={"start": start, "end": end, "rss": rss_mib(), "cpu": cpu_seconds(), "chunk": chunk})
        return

    from core.options import ManagerOptions
    from core.manager import FirebasePeerConnectionManager
    from core.webrtc.upgrade import webrtc_upgrader

    webrtc = args.round == "webrtc"
    direct = args.round == "direct"
    options = ManagerOptions(webrtc=webrtc, direct=direct, addresses=("127.0.0.1",), upgrade_timeout=20.0,
                             connect_timeout=40.0)
    # WebRTC alone for its round; the default upgrader (direct on, WebRTC off) for the direct round.
    upgrader = webrtc_upgrader(options) if webrtc else None
    app = firebase_admin.initialize_app(AnonymousCredentials(), options_for_app, name=role)
    device = "laptop" if role == "sender" else "phone"
    manager = FirebasePeerConnectionManager("alice", PeerInfo(device, device), app=app, options=options,
                                            upgrader=upgrader)
    await manager.start()
    if role == "receiver":
        incoming = asyncio.get_running_loop().create_future()
        manager.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
        out(peer={"ready": True})
        connection = await incoming
    else:
        await lines.readline()  # the receiver is online
        while not any(p.id == "phone" for p in await manager.get_online_peers()):
            await asyncio.sleep(0.1)
        connection = await manager.connect_to_peer("phone")
    if webrtc and connection.transport != "webrtc":
        raise SystemExit(f"the connection did not upgrade to WebRTC: {connection.upgrade_failure}")
    if direct and connection.transport != "direct":
        raise SystemExit(f"the connection did not open a direct link: {connection.upgrade_failure}")
    try:
        if args.round == "relay-conn":
            await connection_side(role, args, connection)
        else:
            await transfer_side(role, args, connection)
    finally:
        await manager.stop()


async def connection_side(role: str, args: argparse.Namespace, connection: PeerConnection) -> None:
    """The connection alone: ``send_bytes`` of the file in transfer-sized chunks, one after the other."""
    from core.files.transfers import max_chunk_payload
    from core.options import ManagerOptions

    if role == "receiver":
        done = asyncio.get_running_loop().create_future()
        received = 0

        def count(event: ev.BinaryData) -> None:
            nonlocal received
            received += len(event.data)
            if received >= args.bytes and not done.done():
                done.set_result(time.time())

        connection.events.on(ev.BINARY, count)
        out(result={"end": await done, "rss": rss_mib(), "cpu": cpu_seconds()})
        await asyncio.sleep(1)
        return
    chunk = max_chunk_payload(connection, ManagerOptions())
    start = time.time()
    with open(args.file, "rb") as f:
        while block := f.read(chunk):
            await connection.send_bytes(block)
    out(result={"start": start, "rss": rss_mib(), "cpu": cpu_seconds()})
    await asyncio.sleep(5)  # let the receiver count the last bytes


class LinkConnectionStub:
    """Only for the chunk size of the relay: a connection without a declared limit."""

    transport = "relay"
    max_bytes_message = None


async def transfer_side(role: str, args: argparse.Namespace, connection: PeerConnection) -> None:
    from core.files import FileTransfers

    if role == "receiver":
        download = Path(tempfile.mkdtemp(prefix="peerchat-bench-", dir=args.workdir))
        transfers = FileTransfers(connection, download_dir=download)
        # Chat goes on during the transfer: echo every string, so the sender can time round trips.
        connection.events.on(ev.DATA, lambda d: asyncio.ensure_future(connection.send(d.data)))
        finished = asyncio.get_running_loop().create_future()

        cpu_at_offer = 0.0

        async def accept(event: ev.IncomingTransfer) -> None:
            nonlocal cpu_at_offer
            cpu_at_offer = cpu_seconds()
            transfer = await event.offer.accept(download)
            await transfer.wait()
            finished.set_result(transfer)

        transfers.events.on(ev.INCOMING_TRANSFER, accept)
        transfer = await finished
        out(result={"end": time.time(), "rss": rss_mib(), "cpu": cpu_seconds(), "verified": True,
                    "saved": str(transfer.saved_to[0]), "cpu_moving": cpu_seconds() - cpu_at_offer})
        await asyncio.sleep(1)  # let the last acknowledgement leave
        await transfers.close()
        return
    transfers = FileTransfers(connection, window=args.window, send_concurrency=args.concurrency)
    echoes: asyncio.Queue[str] = asyncio.Queue()
    connection.events.on(ev.DATA, lambda d: echoes.put_nowait(d.data))
    start = time.time()
    cpu_at_start = cpu_seconds()
    transfer = await transfers.send_files([args.file])
    offered = time.time()
    chat = asyncio.ensure_future(chat_round_trips(connection, echoes))
    await transfer.wait()
    end = time.time()
    chat.cancel()
    trips = sorted(await chat)
    out(result={"start": start, "offered": offered, "end": end, "rss": rss_mib(), "cpu": cpu_seconds(),
                "cpu_moving": cpu_seconds() - cpu_at_start, "sent": transfer.bytes_sent,
                "chat": [trips[len(trips) // 2], trips[-1], len(trips)] if trips else None})
    await transfers.close()


async def chat_round_trips(connection: PeerConnection, echoes: asyncio.Queue[str]) -> list[float]:
    """Send a chat line every half second during the transfer and time its echo; returns the round trips."""
    trips: list[float] = []
    try:
        for i in range(1_000_000):
            await asyncio.sleep(0.5)
            sent = time.perf_counter()
            await connection.send(f"ping {i}")
            while await echoes.get() != f"ping {i}":
                pass
            trips.append(time.perf_counter() - sent)
    except asyncio.CancelledError:
        pass
    return trips


async def emulator_side() -> None:
    from emulator import Emulator

    lines = await stdin_lines()
    async with Emulator(rules=RULES) as emulator:
        out(ready=emulator.database_url("bench"))
        await lines.readline()  # until the parent closes stdin


async def child(args: argparse.Namespace) -> None:
    if args.role == "emulator":
        await emulator_side()
        return
    lines = await stdin_lines()
    if args.round in ("webrtc-raw", "webrtc-link"):
        await webrtc_side(args.role, args, lines)
    elif args.round == "direct-raw":
        await tls_side(args.role, args, lines)
    else:
        await relay_side(args.role, args, lines)


# ----------------------------------------------------------------------------------------------------- the parent
async def stop_child(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Close a child's stdin (it stops, and writes its profile if any), kill it if it takes over ``timeout`` s."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, __file__, *argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, limit=1 << 22)


async def run_round(name: str, file: Path, size: int, workdir: Path, db: str | None, window: int | None,
                    concurrency: int | None) -> dict[str, dict]:
    common = ["--round", name, "--file", str(file), "--bytes", str(size), "--workdir", str(workdir),
              *(["--window", str(window)] if window is not None else [])]
    if concurrency is not None:
        common += ["--concurrency", str(concurrency)]
    if db:
        common += ["--db", db]
    roles = ["sender"] if name == "relay-raw" else ["sender", "receiver"]
    procs = {role: await spawn("--role", role, *common) for role in roles}
    results: dict[str, dict] = {}
    everything_done = asyncio.Event()

    async def pump(role: str) -> None:
        proc = procs[role]
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            item = json.loads(line)
            if "peer" in item:
                other = procs["receiver" if role == "sender" else "sender"]
                assert other.stdin is not None
                other.stdin.write((json.dumps(item["peer"]) + "\n").encode())
            elif "result" in item:
                results[role] = item["result"]
                if len(results) == len(procs):
                    everything_done.set()

    pumps = [asyncio.create_task(pump(role)) for role in procs]
    try:
        await asyncio.wait_for(everything_done.wait(), 1800)
    finally:
        for proc in procs.values():  # a side that finished stops by itself (the relay's sessions end cleanly)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in pumps:
            task.cancel()
    return results


def rate(size: int, seconds: float) -> float:
    return size / MIB / seconds if seconds > 0 else float("inf")


def round_mib(name: str, args: argparse.Namespace) -> int:
    """The size of the file a round moves: ``--direct-mib`` for the direct rounds when given, else ``--mib``."""
    if name.startswith("direct") and args.direct_mib is not None:
        return args.direct_mib
    return args.mib


async def parent(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="peerchat-bench-") as tmp:
        workdir = Path(tmp)
        files: dict[int, Path] = {}
        for mib in sorted({round_mib(name, args) for name in args.rounds}):
            files[mib] = workdir / f"random-{mib}.bin"
            with open(files[mib], "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MIB))
        emulator = None
        db = None
        if any(r.startswith("relay") or r in ("webrtc", "direct") for r in args.rounds):
            emulator = await spawn("--role", "emulator")
            assert emulator.stdout is not None
            db = json.loads(await emulator.stdout.readline())["ready"]
        sizes = ", ".join(f"{name} {round_mib(name, args)} MiB" for name in args.rounds)
        print(f"File transfer of random bytes ({sizes}), sender and receiver in two processes on 127.0.0.1")
        # Each figure per round, in the order run: with --repeat the rounds alternate, and a link's ratio is taken
        # pair by pair (the n-th transfer against the n-th raw run), so a slow moment of the machine hits both.
        figures: dict[str, list[float]] = {}
        cpu_moving: dict[str, list[float]] = {}
        try:
            for name in args.rounds * args.repeat:
                size = round_mib(name, args) * MIB
                emulator_cpu = cpu_seconds(emulator.pid) if emulator is not None else 0.0
                results = await run_round(name, files[size // MIB], size, workdir, db, args.window,
                                          args.concurrency)
                emulator_cpu = (cpu_seconds(emulator.pid) - emulator_cpu) if emulator is not None else 0.0
                sender, receiver = results["sender"], results.get("receiver", {})
                if name.endswith(("-raw", "-conn")):
                    seconds = (receiver.get("end") or sender["end"]) - sender["start"]
                    figures.setdefault(name, []).append(rate(size, seconds))
                    print(f"  {name:11s} {figures[name][-1]:8.1f} MiB/s   {seconds:7.2f} s for {size // MIB} MiB   "
                          f"peak RSS sender "
                          f"{sender['rss']:.0f} MiB" + (f", receiver {receiver['rss']:.0f} MiB" if receiver else ""))
                    if receiver.get("saved"):
                        os.unlink(receiver["saved"])
                else:
                    total = sender["end"] - sender["start"]
                    moving = sender["end"] - sender["offered"]
                    figures.setdefault(name, []).append(rate(size, moving))
                    chat = sender.get("chat")
                    print(f"  {name:11s} {figures[name][-1]:8.1f} MiB/s   {moving:7.2f} s for {size // MIB} MiB after the offer "
                          f"({rate(size, total):.1f} MiB/s, {total:.2f} s with hashing)   peak RSS sender "
                          f"{sender['rss']:.0f} MiB, receiver {receiver['rss']:.0f} MiB"
                          + (f"   chat round trip meanwhile: median {chat[0] * 1000:.0f} ms, max "
                             f"{chat[1] * 1000:.0f} ms ({chat[2]} lines)" if chat else ""))
                    os.unlink(receiver["saved"])
                cpu = f"sender {sender['cpu']:.1f} s" + (f", receiver {receiver['cpu']:.1f} s" if receiver else "")
                if emulator_cpu and name not in ("webrtc-raw", "direct-raw"):
                    cpu += f", emulator {emulator_cpu:.1f} s"
                per_gib = (sender["cpu"] + receiver.get("cpu", 0.0)) / (size / (1024 * MIB))
                moving = ""
                if "cpu_moving" in sender:  # without starting up (imports, connecting): the transfer alone
                    moving_gib = (sender["cpu_moving"] + receiver["cpu_moving"]) / (size / (1024 * MIB))
                    cpu_moving.setdefault(name, []).append(moving_gib)
                    moving = f" ({moving_gib:.1f} while the file moved)"
                print(f"  {'':11s} CPU time: {cpu}; both sides {per_gib:.1f} CPU-s per GiB{moving}")
        finally:
            if emulator is not None:
                await stop_child(emulator, 10)
        for link, aim in (("direct", 0.8), ("webrtc", 0.9), ("relay", 0.5)):
            raw = f"{link}-raw"
            if link in figures and raw in figures:
                ratios = [a / b for a, b in zip(figures[link], figures[raw])]
                each = f" (pairs: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
                print(f"  {link}: transfer / raw = {statistics.median(ratios):.2f}x{' median' if each else ''}{each} "
                      f"(aim {aim}x)")
            if link in cpu_moving and raw in cpu_moving:
                ours, theirs = statistics.median(cpu_moving[link]), statistics.median(cpu_moving[raw])
                print(f"  {link}: CPU-s per GiB while the file moved, both sides: {ours:.1f} against {theirs:.1f} raw "
                      f"({ours / theirs:.2f}x; the transfer hashes on both sides, the raw round does not)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="the size of the file, in MiB (the issue's figures: 1024)")
    parser.add_argument("--direct-mib", type=int, default=None,
                        help="the size for the direct rounds (direct, direct-raw) only, e.g. 1024 while the slower "
                             "links move 256")
    parser.add_argument("--rounds", nargs="+",
                        default=["direct-raw", "direct", "webrtc", "webrtc-raw", "relay", "relay-raw"],
                        choices=["direct", "direct-raw", "webrtc", "webrtc-raw", "webrtc-link", "relay", "relay-raw",
                                 "relay-conn"],
                        help="relay-conn: the relay connection's own send_bytes throughput, for comparison; "
                             "webrtc-link: the transfer over a bare WebRTC link")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the rounds this many times, alternating; ratios are then given pair by pair, with "
                             "their median (a shared machine's noise hits both sides of a pair alike)")
    parser.add_argument("--window", type=int, default=None,
                        help="chunks in flight per transfer (default: as many as FileTransfers' window in bytes holds)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="send_bytes calls in progress at once (default: FileTransfers' own choice)")
    parser.add_argument("--role", choices=["sender", "receiver", "emulator"])
    parser.add_argument("--round")
    parser.add_argument("--file")
    parser.add_argument("--bytes", type=int)
    parser.add_argument("--workdir")
    parser.add_argument("--db")
    args = parser.parse_args()
    profile_dir = os.environ.get("PEERCHAT_BENCH_PROFILE")
    if args.role and profile_dir:  # each process's profile, for pstats: PEERCHAT_BENCH_PROFILE=<folder>
        import cProfile

        import pstats
        import threading

        name = f"{args.round or 'all'}-{args.role}" if args.role != "emulator" else "emulator"
        # Threads too (the SDK's HTTP calls and listeners, file I/O): each under its own profiler, merged at the end.
        profiles: list[cProfile.Profile] = []
        run = threading.Thread.run

        def profiled_run(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.runcall(run, thread)

        threading.Thread.run = profiled_run  # type: ignore[method-assign]
        main = cProfile.Profile()
        main.runctx("asyncio.run(child(args))", globals(), {"args": args})
        main.dump_stats(str(Path(profile_dir) / f"{name}.prof"))
        if profiles:
            merged = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                merged.add(profile)
            merged.dump_stats(str(Path(profile_dir) / f"{name}-threads.prof"))
        return
    asyncio.run(child(args) if args.role else parent(args))


if __name__ == "__main__":
    main()
