"""A relay peer in its own process, for tests and benchmarks: a FirebasePeerConnectionManager that echoes.

Run as ``python relay_peer.py --database-url URL --user UID --device ID [--heartbeat S] [--peer-timeout S] [--webrtc]``
(``--webrtc``: upgrade accepted connections to WebRTC, with host candidates on 127.0.0.1 only).

It starts a manager for ``--device``, accepts every incoming connection and sends back each ``data`` message as
``echo:<message>`` and each ``binary`` message unchanged, in order. Lines written to stdout (JSON)::

    {"event": "ready"}                              the manager is started (presence written)
    {"event": "incoming", "peer": "...", "session": "...", "transport": "relay"|"webrtc"}
    {"event": "closed", "reason": "..."}            a connection ended
    {"event": "failed", "error": "..."}             start failed (the process then exits with status 1)

It runs until stdin closes (then stops cleanly) or it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import firebase_admin
from google.auth.credentials import AnonymousCredentials

from core import events as ev
from core.errors import PeerchatError
from core.options import ManagerOptions
from core.peer import PeerInfo
from core.manager import FirebasePeerConnectionManager
from core.webrtc.upgrade import webrtc_upgrader


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> int:
    app = firebase_admin.initialize_app(
        AnonymousCredentials(),
        {"databaseURL": args.database_url, "databaseAuthVariableOverride": {"uid": args.user}},
    )
    options = ManagerOptions(
        heartbeat_interval=args.heartbeat,
        peer_timeout=args.peer_timeout,
        ping_interval=min(2.0, args.peer_timeout / 4),
        send_window=args.window,
        close_timeout=1.0,
        webrtc=args.webrtc,
        direct=False,
    )
    upgrader = webrtc_upgrader(options, host_addresses=("127.0.0.1",)) if args.webrtc else None
    manager = FirebasePeerConnectionManager(args.user, PeerInfo(args.device, args.device.title()), app=app,
                                            options=options, upgrader=upgrader)
    pending: set[asyncio.Task[None]] = set()

    def on_incoming(event: ev.IncomingConnection) -> None:
        conn = event.connection
        emit(event="incoming", peer=conn.peer.id, session=conn.session_id, transport=conn.transport)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        conn.events.on(ev.DATA, lambda e: queue.put_nowait(("data", e.data)))
        conn.events.on(ev.BINARY, lambda e: queue.put_nowait(("binary", e.data)))

        async def echo() -> None:
            try:
                while True:
                    kind, data = await queue.get()
                    if kind == "data":
                        await conn.send(f"echo:{data}")
                    else:
                        await conn.send_bytes(data)
            except PeerchatError:
                pass

        task = asyncio.get_running_loop().create_task(echo())
        pending.add(task)
        conn.events.on(ev.CLOSED, lambda e: (task.cancel(), emit(event="closed", reason=e.reason)))

    manager.events.on(ev.INCOMING_CONNECTION, on_incoming)
    try:
        await manager.start()
    except PeerchatError as exc:
        emit(event="failed", error=str(exc))
        return 1
    emit(event="ready")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        pass
    await manager.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--peer-timeout", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--webrtc", action="store_true")
    sys.exit(asyncio.run(main(parser.parse_args())))
