"""Benchmark of the wait before the first byte: how soon a large file starts moving, against hashing it whole.

A file is no longer hashed before it is offered (its SHA-256 is taken while it is sent and checked at its end), so
``send_files`` returns after two small reads whatever the size. This script measures that over a direct link (TCP +
TLS 1.3 on 127.0.0.1, signalled through the emulator) between two processes, for a large sparse file (4 GiB when the
temporary folder has room, else 1 GiB; created with ``truncate``, so it costs no disk):

- ``offer``: from calling ``send_files`` until it returned (the offer is queued);
- ``first chunk``: from calling ``send_files`` until the first chunk was handed to the connection (the receiver
  accepts by itself, so this includes one round trip for the offer and the accept);
- ``first ack``: until the receiver confirmed the first bytes written (the sender's first progress event);
- against ``hashing``: reading and hashing the whole file with SHA-256 in 1 MiB blocks in the same sender process,
  what every transfer waited for before its offer until now.

Each round sends the file on the same connection and cancels it once the first bytes are confirmed; ``--complete``
adds a last round that moves the whole file and ends verified (it then occupies the file's size on disk).
``--resume 0.75`` adds a round that moves three quarters of the file, stops the sender's transfers (the receiver
keeps its partial file, as after a dropped link) and sends the file again under the same transfer id: the receiver
resumes by itself, and the round gives the wait for the first chunk after the resume and the time to the verified
end, against hashing the part the receiver already had (what each side waited for before its first chunk until
now: the sender and the receiver each hashed that part before anything moved). Hashing a
sparse file reads no disk, so the hashing time is SHA-256's CPU time alone: a real file on a cold disk takes longer.

Run: ``uv run python benchmarks/firstbyte.py [--gib 4] [--rounds 3] [--complete] [--resume 0.75]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import events as ev  # noqa: E402
from core.peer import PeerInfo  # noqa: E402
from transfer import emulator_side, out, stdin_lines, stop_child  # noqa: E402  (the child processes' plumbing, shared)

GIB = 1024 * 1024 * 1024
WAIT = 120.0  # the longest any one step may take


def hash_whole(path: str) -> float:
    """Seconds to read and hash all of ``path`` with SHA-256, 1 MiB at a time (what preceded every offer before)."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ the two sides
async def side(args: argparse.Namespace) -> None:
    import firebase_admin
    from google.auth.credentials import AnonymousCredentials

    from core.files import FileTransfers
    from core.manager import FirebasePeerConnectionManager
    from core.options import ManagerOptions

    lines = await stdin_lines()
    options = ManagerOptions(webrtc=False, direct=True, addresses=("127.0.0.1",), upgrade_timeout=20.0,
                             connect_timeout=40.0)
    app = firebase_admin.initialize_app(AnonymousCredentials(), {
        "databaseURL": args.db, "databaseAuthVariableOverride": {"uid": "alice"}}, name=args.role)
    device = "laptop" if args.role == "sender" else "phone"
    manager = FirebasePeerConnectionManager("alice", PeerInfo(device, device), app=app, options=options)
    await manager.start()
    try:
        if args.role == "receiver":
            incoming = asyncio.get_running_loop().create_future()
            manager.events.on(ev.INCOMING_CONNECTION, lambda e: incoming.done() or incoming.set_result(e.connection))
            out(ready=True)
            connection = await asyncio.wait_for(incoming, WAIT)
            transfers = FileTransfers(connection, download_dir=args.workdir)
            transfers.events.on(ev.INCOMING_TRANSFER, lambda e: asyncio.ensure_future(e.offer.accept()))
            await lines.readline()  # until the parent says the sender is done
            await transfers.close()
            return
        await asyncio.wait_for(lines.readline(), WAIT)  # the receiver is online
        async with asyncio.timeout(WAIT):
            while not any(p.id == "phone" for p in await manager.get_online_peers()):
                await asyncio.sleep(0.1)
            connection = await manager.connect_to_peer("phone")
            while connection.transport != "direct":  # the upgrade follows the relay session by a moment
                if connection.upgrade_failure is not None:
                    raise SystemExit(f"the direct link did not open: {connection.upgrade_failure}")
                await asyncio.sleep(0.05)
        hashing = [await asyncio.to_thread(hash_whole, args.file) for _ in range(args.rounds)]
        out(hashing=hashing)
        await measure(connection, args, FileTransfers(connection))
        if args.resume:
            await measure_resume(connection, args)
    finally:
        await manager.stop()


# When the first chunk of the latest transfer was handed to the connection (measure() watches send_bytes).
first_chunk_sent: list[float] = []


async def measure(connection: Any, args: argparse.Namespace, transfers: Any) -> None:
    """Send the file ``args.rounds`` times, each cancelled once its first bytes are confirmed; then, with
    ``--complete``, once more to its verified end."""
    from core.files.protocol import CHUNK

    first_chunk = first_chunk_sent
    real_send = connection.send_bytes

    async def send_bytes(data: bytes) -> None:
        if data[0] == CHUNK and not first_chunk:
            first_chunk.append(time.perf_counter())
        await real_send(data)

    connection.send_bytes = send_bytes
    for index in range(args.rounds + (1 if args.complete else 0)):
        complete = index == args.rounds
        first_chunk.clear()
        confirmed = asyncio.get_running_loop().create_future()
        handler = (lambda p: p.bytes_done > 0 and not confirmed.done() and confirmed.set_result(time.perf_counter()))
        transfers.events.on(ev.TRANSFER_PROGRESS, handler)
        start = time.perf_counter()
        transfer = await transfers.send_files([args.file])
        offered = time.perf_counter()
        acked = await asyncio.wait_for(confirmed, WAIT)
        transfers.events.remove_listener(ev.TRANSFER_PROGRESS, handler)
        result = {"offer": offered - start, "first_chunk": first_chunk[0] - start, "first_ack": acked - start,
                  "complete": complete}
        if complete:
            await asyncio.wait_for(transfer.wait(), 1800)
            result["end"] = time.perf_counter() - start
        else:
            await transfer.cancel()
            await asyncio.sleep(0.5)  # the receiver removes its partial file
        out(round=result)
    await transfers.close()


async def measure_resume(connection: Any, args: argparse.Namespace) -> None:
    """Move ``args.resume`` of the file, stop (the receiver keeps its part), send it again: how soon the first chunk
    leaves after the resume, and when the file ends verified."""
    from core.files import FileTransfers

    size = Path(args.file).stat().st_size
    transfers = FileTransfers(connection)
    far = asyncio.get_running_loop().create_future()
    transfers.events.on(ev.TRANSFER_PROGRESS, lambda p: p.bytes_done >= size * args.resume and not far.done()
                        and far.set_result(None))
    first = await transfers.send_files([args.file])
    await asyncio.wait_for(far, 1800)
    await transfers.close()  # stops without cancelling: the receiver keeps what a resume needs
    await asyncio.sleep(1.0)
    transfers = FileTransfers(connection)
    first_chunk_sent.clear()
    start = time.perf_counter()
    again = await transfers.send_files([args.file], transfer_id=first.id)
    async with asyncio.timeout(WAIT):
        while not first_chunk_sent:
            await asyncio.sleep(0.001)
    first_chunk = first_chunk_sent[0] - start
    await asyncio.wait_for(again.wait(), 1800)
    end = time.perf_counter() - start
    out(resume={"kept": again.resumed_bytes, "first_chunk": first_chunk, "end": end,
                "hashing_kept": await asyncio.to_thread(hash_prefix, args.file, again.resumed_bytes)})
    await transfers.close()


def hash_prefix(path: str, size: int) -> float:
    """Seconds to read and hash the first ``size`` bytes of ``path`` with SHA-256, 1 MiB at a time."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while size > 0 and (block := f.read(min(1 << 20, size))):
            digest.update(block)
            size -= len(block)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------- the parent
async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, __file__, *argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)


async def read_json(proc: asyncio.subprocess.Process) -> dict:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
    if not line:
        raise SystemExit("a side of the benchmark ended early (its error is above)")
    return json.loads(line)


def say(proc: asyncio.subprocess.Process, text: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode() + b"\n")


async def parent(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="peerchat-firstbyte-") as tmp:
        workdir = Path(tmp)
        gib = args.gib
        if gib is None:  # 4 GiB if a complete round could still write it whole, else 1 GiB
            gib = 4 if shutil.disk_usage(workdir).free > 4 * GIB * 2 else 1
        size = gib * GIB
        file = workdir / "sparse.bin"
        with file.open("wb") as f:
            f.truncate(size)
        downloads = workdir / "downloads"
        downloads.mkdir()
        emulator = await spawn("--role", "emulator")
        procs: list[asyncio.subprocess.Process] = [emulator]
        try:
            db = (await read_json(emulator))["ready"]
            common = ["--db", db, "--file", str(file), "--workdir", str(downloads), "--rounds", str(args.rounds),
                      *(["--complete"] if args.complete else []),
                      *(["--resume", str(args.resume)] if args.resume else [])]
            receiver = await spawn("--role", "receiver", *common)
            sender = await spawn("--role", "sender", *common)
            procs += [receiver, sender]
            await read_json(receiver)
            say(sender)
            print(f"First byte, a {gib} GiB sparse file over a direct link (TCP + TLS 1.3, 127.0.0.1), sender and "
                  f"receiver in two processes")
            hashing = (await read_json(sender))["hashing"]
            print(f"  hashing the whole file (SHA-256, 1 MiB blocks), {len(hashing)} times: "
                  + ", ".join(f"{h:.2f} s" for h in hashing) + f"  ({gib / statistics.median(hashing):.2f} GiB/s)")
            rounds = []
            while len(rounds) < args.rounds + (1 if args.complete else 0):
                item = await asyncio.wait_for(read_json(sender), 1800)
                result = item["round"]
                rounds.append(result)
                line = (f"  round {len(rounds)}: offer {result['offer'] * 1000:7.1f} ms   first chunk "
                        f"{result['first_chunk'] * 1000:7.1f} ms   first ack {result['first_ack'] * 1000:7.1f} ms")
                if result["complete"]:
                    line += (f"   whole file verified after {result['end']:.1f} s "
                             f"({gib * 1024 / result['end']:.0f} MiB/s)")
                print(line)
            first = statistics.median(r["first_chunk"] for r in rounds)
            hashed = statistics.median(hashing)
            print(f"  median: first chunk after {first * 1000:.1f} ms; hashing first took {hashed:.2f} s: the "
                  f"first byte leaves {hashed / first:.0f}x sooner than it did")
            if args.resume:
                resume = (await asyncio.wait_for(read_json(sender), 1800))["resume"]
                kept = resume["kept"] / GIB
                print(f"  resumed with {kept:.2f} GiB already on the receiver: first chunk after "
                      f"{resume['first_chunk'] * 1000:.1f} ms, whole file verified after {resume['end']:.1f} s; "
                      f"hashing those {kept:.2f} GiB takes {resume['hashing_kept']:.2f} s, which each side did "
                      f"before its first chunk until now")
            say(receiver)
        finally:  # the sides first (they leave the database cleanly), then the emulator
            for proc in reversed(procs):
                await stop_child(proc, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=None, help="the file's size in GiB (default 4, or 1 without room)")
    parser.add_argument("--rounds", type=int, default=3, help="transfers started and cancelled (and hashes timed)")
    parser.add_argument("--complete", action="store_true", help="then move the whole file once, to its verified end")
    parser.add_argument("--resume", type=float, default=None,
                        help="then move this fraction of the file, stop, and time the resume (e.g. 0.75)")
    parser.add_argument("--role", choices=["sender", "receiver", "emulator"])
    parser.add_argument("--db")
    parser.add_argument("--file")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.role == "emulator":
        asyncio.run(emulator_side())
    elif args.role:
        asyncio.run(side(args))
    else:
        asyncio.run(parent(args))


if __name__ == "__main__":
    main()
