"""A WebRTC link peer in its own process, for tests: signals travel as JSON lines on stdin and stdout.

Run as ``python webrtc_peer.py --role offerer|answerer [--host-address ADDR ...] [--no-loopback]``.

Lines written to stdout (one JSON object each)::

    {"signal": {...}}                   forward to the other process
    {"event": "open"}                   the data channel is open
    {"event": "done", "echoed": N}      offerer: every message came back intact and in order
    {"event": "failed", "error": "..."} something went wrong (the process then exits with status 1)
    {"event": "closed", "reason": "...", "initiator": "..."}

Lines read from stdin: ``{"signal": {...}}`` from the other process. The offerer sends ``--count`` messages (text
and binary, plus one 1 MiB string); the answerer echoes every message back; the offerer checks them and closes.
With ``--flood N`` the offerer sends N one-frame binary messages instead and reports the largest buffered amount
it saw (``{"event": "done", "max_buffered": ..., "frame": ..., "high_water": ...}``); an answerer started with
``--slow SECONDS`` blocks its process that long per message and only answers the final text with ``got N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from core.protocol.packets import MAX_PACKET_BYTES
from core.webrtc.link import LinkClosed, LinkOptions, WebRTCLink

BIG = "".join(chr(0x41 + i % 26) for i in range(1024 * 1024))


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def expected_messages(count: int) -> list[str | bytes]:
    messages: list[str | bytes] = [f"text {i}" if i % 2 else f"bytes {i}".encode() for i in range(count)]
    return [*messages, BIG]


async def read_signals(link: WebRTCLink) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        await link.handle_signal(json.loads(line)["signal"])


async def echo_until_closed(link: WebRTCLink, received: asyncio.Queue[str | bytes], slow: float) -> None:
    """Echo every message; with ``slow``, block the whole process that long per message and echo text only."""
    count = 0
    while True:
        message = await received.get()
        if not slow:
            await link.send(message)
            continue
        time.sleep(slow)  # a slow consumer: the event loop (and aiortc with it) stalls
        if isinstance(message, bytes):
            count += 1
        else:
            await link.send(f"got {count}")


async def flood(link: WebRTCLink, received: asyncio.Queue[str | bytes], count: int) -> dict[str, int]:
    """Send ``count`` one-frame binary messages as fast as send() allows; return the largest buffered amount seen."""
    message = b"f" * (MAX_PACKET_BYTES - 1)
    highest = 0
    for _ in range(count):
        await link.send(message)
        highest = max(highest, link.buffered_amount)
    await link.send("end")
    reply = await received.get()
    if reply != f"got {count}":
        raise AssertionError(f"the receiver answered {reply!r}, expected 'got {count}'")
    return {"max_buffered": highest, "frame": MAX_PACKET_BYTES}


async def main(args: argparse.Namespace) -> int:
    options = LinkOptions(
        host_addresses=tuple(args.host_address) if args.host_address else None,
        include_loopback=not args.no_loopback,
        open_timeout=args.timeout,
        high_water=args.high_water,
        low_water=args.high_water // 4,
    )

    async def send_signal(signal: dict[str, Any]) -> None:
        emit(signal=signal)

    link = WebRTCLink(args.role, send_signal, options)
    closed: asyncio.Future[LinkClosed] = asyncio.get_running_loop().create_future()
    received: asyncio.Queue[str | bytes] = asyncio.Queue()
    link.events.on("closed", lambda info: closed.done() or closed.set_result(info))
    link.events.on("message", lambda message: received.put_nowait(message.data))
    reading = asyncio.create_task(read_signals(link))
    try:
        await link.open()
        emit(event="open")
        if args.role == "offerer" and args.flood:
            async with asyncio.timeout(args.timeout * 4):
                emit(event="done", **(await flood(link, received, args.flood)), high_water=options.high_water)
            await link.close()
        elif args.role == "offerer":
            expected = expected_messages(args.count)
            for message in expected:
                await link.send(message)
            async with asyncio.timeout(args.timeout * 4):
                for index, message in enumerate(expected):
                    echoed = await received.get()
                    if echoed != message:
                        emit(event="failed", error=f"message {index} came back different")
                        return 1
            emit(event="done", echoed=len(expected))
            await link.close()
        else:
            echo = asyncio.create_task(echo_until_closed(link, received, args.slow))
            await asyncio.wait([echo, closed], timeout=args.timeout * 4, return_when=asyncio.FIRST_COMPLETED)
            echo.cancel()
            await asyncio.gather(echo, return_exceptions=True)
        async with asyncio.timeout(args.timeout * 4):
            info = await closed
        emit(event="closed", reason=info.reason, initiator=info.initiator)
        return 0
    except Exception as exc:  # report anything to the test, which prints it
        emit(event="failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        reading.cancel()
        await link.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["offerer", "answerer"], required=True)
    parser.add_argument("--host-address", action="append", default=[])
    parser.add_argument("--no-loopback", action="store_true")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--flood", type=int, default=0, help="offerer: send this many 64 KiB messages instead")
    parser.add_argument("--slow", type=float, default=0.0, help="answerer: block this long per message")
    parser.add_argument("--high-water", type=int, default=LinkOptions.high_water)
    parser.add_argument("--timeout", type=float, default=15.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
