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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from core.framing import Message
from core.webrtc import LinkClosed, LinkOptions, WebRTCLink

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


async def echo_until_closed(link: WebRTCLink, received: asyncio.Queue[str | bytes]) -> None:
    while True:
        await link.send(await received.get())


async def main(args: argparse.Namespace) -> int:
    options = LinkOptions(
        host_addresses=tuple(args.host_address) if args.host_address else None,
        include_loopback=not args.no_loopback,
        open_timeout=args.timeout,
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
        if args.role == "offerer":
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
            echo = asyncio.create_task(echo_until_closed(link, received))
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
    parser.add_argument("--timeout", type=float, default=15.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
