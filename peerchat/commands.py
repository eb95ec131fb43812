"""The headless commands ``peerchat peers``, ``peerchat send`` and ``peerchat receive``, for scripts.

Results go to stdout, one per line; progress and errors go to stderr (an error is one line, ``peerchat: ...``).

``peers`` prints this user's other online devices, ``ID<TAB>LABEL`` per line.

``send DEVICE [FILE ...] [--text TEXT]`` connects to DEVICE (a label or an id), sends the text and then the files,
and waits until the other device confirmed each of them. It says on stderr which link carries the session:
``connected over WEBRTC via host`` (``via NAT``, ``via TURN relay``), or ``connected over RELAY (why)``. A confirmed text reached the other device's application,
not necessarily its person: an app that asks whether to accept the session has the text before the person answers.
When the other device declines the session, ``send`` prints ``peerchat: DEVICE declined the session`` and exits 6.

``receive`` stays online, accepts every session and every file, and prints what arrived::

    text<TAB>LABEL<TAB>TEXT          (a backslash, tab or newline in TEXT is written as \\\\, \\t or \\n)
    file<TAB>LABEL<TAB>SAVED-PATH

Exit codes:

====  ===================================================================================================
0     done: everything was sent and confirmed, or ``--count`` items were received
1     an unexpected error (a bug: please report it with the line printed)
2     bad usage or settings: an unknown flag, an invalid setting, a file to send that does not exist
3     the device is not online (or several share that label)
4     the relay cannot be reached (the emulator is not running, the network or database URL is wrong)
5     timed out: ``receive --timeout`` ran out before ``--count`` items, or a confirmation never came
6     the other device declined, a transfer failed, or the connection closed before everything was sent
130   interrupted (Ctrl-C or SIGTERM; the device goes offline cleanly first)
====  ===================================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from core import (
    ConnectError,
    PeerConnection,
    PeerConnectionManager,
    PeerInfo,
    ConnectionClosedError,
    ConnectionDeclinedError,
    PeerchatError,
    PeerOfflineError,
    PeerTimeoutError,
    RelayError,
    TransferError,
)
from core.events import (
    AWAITING_ACCEPT,
    CLOSED,
    DATA,
    INCOMING_CONNECTION,
    INCOMING_TRANSFER,
    LINK_CHANGED,
    TRANSFER_FAILED,
    TRANSFER_FILE_DONE,
    TRANSFER_PROGRESS,
)

from .backend import Backend, RelayGoneError, describe_error
from .config import ConfigError, Settings, add_settings_arguments, settings_from_args
from .models import (
    describe_close,
    describe_link,
    describe_upgrade_failure,
    find_device,
    format_bytes,
    format_duration,
    format_rate,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_RELAY = 4
EXIT_TIMEOUT = 5
EXIT_FAILED = 6
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command failed in a way it can explain; ``code`` is its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for ``error``."""
    match error:
        case CommandError(code=code):
            return code
        case ConfigError():
            return EXIT_USAGE
        case PeerOfflineError() | LookupError():
            return EXIT_NOT_FOUND
        case RelayGoneError() | RelayError():
            return EXIT_RELAY
        case PeerTimeoutError() | TimeoutError():
            return EXIT_TIMEOUT
        case ConnectionDeclinedError() | TransferError() | ConnectionClosedError() | ConnectError():
            return EXIT_FAILED
    return EXIT_ERROR


def escape_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def register(subparsers: Any) -> None:
    """Add ``peers``, ``send`` and ``receive`` to an argparse subparsers object."""
    epilog = "exit codes: 0 ok, 1 unexpected error, 2 bad usage, 3 device not online, 4 relay unreachable, " \
             "5 timed out, 6 declined/failed/closed, 130 interrupted"
    peers = subparsers.add_parser("peers", help="list this user's other online devices", epilog=epilog)
    peers.add_argument("--wait", type=float, default=2.0, metavar="S",
                       help="how long to wait for the first device to show up (default: 2)")
    add_settings_arguments(peers)
    peers.set_defaults(command_main=peers_main, handler=run_command)

    send = subparsers.add_parser("send", help="send text and files to one of your devices", epilog=epilog)
    send.add_argument("device", metavar="DEVICE", help="the device's label or id")
    send.add_argument("files", metavar="FILE", nargs="*", type=Path, help="files or folders to send")
    send.add_argument("--text", help="a message to send before the files")
    send.add_argument("--wait", type=float, default=10.0, metavar="S",
                      help="how long to wait for DEVICE to come online (default: 10)")
    add_settings_arguments(send)
    send.set_defaults(command_main=send_main, handler=run_command)

    receive = subparsers.add_parser("receive", help="stay online and save what your devices send", epilog=epilog)
    receive.add_argument("--count", type=int, metavar="N", help="exit after N texts and files")
    receive.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds (code 5 if --count "
                         "was not reached)")
    add_settings_arguments(receive)  # --download-dir is one of the settings
    receive.set_defaults(command_main=receive_main, handler=run_command)

    from .trust_commands import register as register_trust

    register_trust(subparsers, epilog)


def run_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a parsed headless command; returns its exit code. Errors are printed as one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = settings_from_args(args)
        return asyncio.run(_until_terminated(args.command_main(settings, args, out, err)))
    except KeyboardInterrupt:
        err.write("peerchat: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        text = str(exc) if isinstance(exc, CommandError | ConfigError | LookupError) else \
            describe_error("peerchat", exc).removeprefix("peerchat failed: ")
        err.write(f"peerchat: {text}\n")
        err.flush()
        return code


async def _until_terminated(command: Any) -> int:
    """Run ``command``; SIGTERM stops it like Ctrl-C does (cleanly: this device goes offline at once)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await command
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def say_link_changes(connection: PeerConnection, err: TextIO) -> None:
    """Print every change of the link that carries ``connection`` (``link: DIRECT -> RELAY (why)``) on ``err``."""

    def changed(event: Any) -> None:
        clear = "\r\033[K" if err.isatty() else ""  # over a progress line being rewritten in place
        now = describe_link(event.transport, event.route)
        _say(err, f"{clear}link: {event.previous.upper()} -> {now} ({event.reason})")

    connection.events.on(LINK_CHANGED, changed)


# --- peers -----------------------------------------------------------------------------------------------------


async def peers_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with Backend(settings, watch_interval=0) as manager:
        # The presence listener delivers the whole list in its first event, just after start(): wait for it.
        deadline = time.monotonic() + args.wait
        while not (peers := await manager.get_online_peers()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    for peer in sorted(peers, key=lambda p: (p.label.lower(), p.id)):
        _say(out, f"{peer.id}\t{peer.label}")
    if not peers:
        _say(err, f"no other device of user {settings.user!r} is online ({settings.describe_relay()})")
    return EXIT_OK


# --- send ------------------------------------------------------------------------------------------------------


async def find_online(manager: PeerConnectionManager, name: str, wait: float) -> PeerInfo:
    """The online device called ``name`` (label or id), waiting up to ``wait`` seconds for it to appear."""
    deadline = time.monotonic() + wait
    while True:
        peers = await manager.get_online_peers()
        try:
            return find_device(peers, name)
        except LookupError as exc:
            if "several" in str(exc) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.25)


async def send_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    files: list[Path] = list(args.files)
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise CommandError(f"nothing sent: {', '.join(missing)} does not exist", EXIT_USAGE)
    if not files and args.text is None:
        raise CommandError("nothing to send: give files, --text TEXT, or both", EXIT_USAGE)
    async with Backend(settings, watch_interval=0) as manager:
        peer = await find_online(manager, args.device, args.wait)

        def declined_error(declined: ConnectionDeclinedError) -> CommandError:
            who = declined.label or peer.label
            return CommandError(f"{who} declined the session" + (f" ({declined.reason})" if declined.reason else ""),
                                EXIT_FAILED)

        _say(err, f"connecting to {peer.label} ({peer.id})…")

        def waiting(event: Any) -> None:
            if event.peer.id == peer.id:
                _say(err, f"waiting for {peer.label} to accept…")

        manager.events.on(AWAITING_ACCEPT, waiting)
        try:
            connection = await manager.connect_to_peer(peer.id, confirm_data_receival=True)
        except ConnectionDeclinedError as exc:
            if "declined" not in str(exc):  # refused in the handshake: the message says why and what to do
                raise CommandError(str(exc), EXIT_FAILED) from exc
            raise declined_error(exc) from exc
        finally:
            manager.events.remove_listener(AWAITING_ACCEPT, waiting)
        closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.events.on(CLOSED, lambda event: closed.done() or closed.set_result(event))
        say_link_changes(connection, err)

        async def send_all() -> None:
            async with connection:
                _say(err, f"connected over {describe_connection(connection, peer.label)}")
                if args.text is not None:
                    await connection.send(args.text)
                    _say(err, "text delivered")
                if files:
                    await send_files(connection, files, settings, err)

        sending = asyncio.ensure_future(send_all())
        try:
            await asyncio.wait({sending, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done() and isinstance(closed.result().error, ConnectionDeclinedError):
                # A file offer made as the decline arrived may wait for an answer that never comes: stop here.
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, PeerchatError):
                    await sending
                raise declined_error(closed.result().error)
            await sending
        except PeerchatError as exc:
            declined = await _declined(connection, closed, exc)
            if declined is None:
                raise
            raise declined_error(declined) from exc
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, PeerchatError):
                    await sending
    return EXIT_OK


def describe_connection(connection: PeerConnection, label: str) -> str:
    """``"WEBRTC via NAT"``, or ``"RELAY (no route to desktop except the relay: add a TURN server …)"``."""
    text = describe_link(connection.transport, connection.route)
    failure = connection.upgrade_failure
    if connection.transport == "relay" and failure is not None:
        text += f" ({describe_upgrade_failure(failure, label)})"
    return text


async def _declined(connection: PeerConnection, closed: asyncio.Future[Any],
                    error: BaseException) -> ConnectionDeclinedError | None:
    """The decline behind ``error``, if the other device declined the session (a failed transfer says only that
    the connection closed: the connection's close event tells why)."""
    if isinstance(error, ConnectionDeclinedError):
        return error
    if connection.is_closed:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                event = await asyncio.shield(closed)
                if isinstance(event.error, ConnectionDeclinedError):
                    return event.error
    return None


async def send_files(connection: PeerConnection, files: list[Path], settings: Settings, err: TextIO) -> None:
    """Send ``files`` and wait until the other device verified every one (progress on ``err``)."""
    from core import FileTransfers

    transfers = FileTransfers(connection, download_dir=settings.download_dir)
    progress = ProgressPrinter(err)
    transfers.events.on(TRANSFER_PROGRESS, progress.update)
    try:
        transfer = await transfers.send_files(files)
        _say(err, f"offered {len(transfer.files)} file(s), {format_bytes(transfer.bytes_total)}")
        await transfer.wait()
    finally:
        progress.close()
        await transfers.close()
    _say(err, f"files delivered and verified ({format_bytes(transfer.bytes_total)})")


class ProgressPrinter:
    """Progress lines on stderr: rewritten in place on a terminal, at most one every few seconds otherwise."""

    def __init__(self, stream: TextIO, *, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 2.0)
        self._last = 0.0
        self._dirty = False

    def update(self, event: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and event.bytes_done < event.bytes_total:
            return
        self._last = now
        percent = 100 * event.bytes_done / event.bytes_total if event.bytes_total else 100.0
        line = (f"{event.direction} {event.files_done}/{event.files_total} files  {percent:5.1f}%  "
                f"{format_bytes(event.bytes_done)} of {format_bytes(event.bytes_total)}  {format_rate(event.rate)}  "
                f"{format_duration(event.eta)} left")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False


# --- receive ---------------------------------------------------------------------------------------------------


async def receive_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1", EXIT_USAGE)
    if args.timeout is not None and args.timeout <= 0:
        raise CommandError("--timeout must be more than 0 seconds", EXIT_USAGE)
    download_dir = settings.download_dir
    received = 0
    enough = asyncio.Event()
    closers: list[Any] = []

    def arrived(kind: str, label: str, value: str) -> None:
        nonlocal received
        _say(out, f"{kind}\t{escape_line(label)}\t{escape_line(value)}")
        received += 1
        if args.count is not None and received >= args.count:
            enough.set()

    def on_incoming(event: Any) -> None:
        connection: PeerConnection = event.connection
        label = connection.peer.label
        connection.events.on(DATA, lambda data: arrived("text", label, data.data))
        connection.events.on(CLOSED, lambda closed: _say(
            err, f"session with {label} ended: {describe_close(closed.reason, closed.error)}"))
        closers.append(connection.disconnect)
        _say(err, f"session from {label} ({connection.peer.id}) over {describe_connection(connection, label)}")
        say_link_changes(connection, err)
        attach_receiver(connection, download_dir, arrived, err, closers)

    async with Backend(settings, watch_interval=0) as manager:
        manager.events.on(INCOMING_CONNECTION, on_incoming)
        _say(err, f"receiving as {settings.label} ({settings.device_id}) of user {settings.user} on "
                  f"{settings.describe_relay()}; files go to {download_dir}")
        try:
            async with asyncio.timeout(args.timeout):
                await enough.wait()
        except TimeoutError:
            if args.count is not None:
                raise CommandError(f"timed out after {args.timeout:g} s with {received} of {args.count} items "
                                   "received", EXIT_TIMEOUT) from None
        finally:
            manager.events.remove_listener(INCOMING_CONNECTION, on_incoming)
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    await close()
    return EXIT_OK


def attach_receiver(connection: PeerConnection, download_dir: Path, arrived: Any, err: TextIO,
                    closers: list[Any]) -> None:
    """Accept every file offer on ``connection`` into ``download_dir``; report each saved file."""
    from core import FileTransfers

    label = connection.peer.label
    transfers = FileTransfers(connection, download_dir=download_dir)
    progress = ProgressPrinter(err)
    closers.append(transfers.close)

    async def on_offer(event: Any) -> None:
        offer = event.offer
        if offer.transfer is not None:
            _say(err, f"resuming {len(offer.files)} file(s) from {label} into {download_dir}")
            return
        _say(err, f"accepting {len(offer.files)} file(s) ({format_bytes(offer.total_bytes)}) from {label} "
                  f"into {download_dir}")
        try:
            await offer.accept(download_dir)
        except Exception as exc:  # refused for want of space or a disk error: say so, keep receiving
            _say(err, describe_error(f"accepting files from {label}", exc))

    transfers.events.on(INCOMING_TRANSFER, on_offer)
    transfers.events.on(TRANSFER_PROGRESS, progress.update)
    transfers.events.on(TRANSFER_FILE_DONE,
                        lambda done: done.direction == "receive" and arrived("file", label, str(done.saved_to)))
    transfers.events.on(TRANSFER_FAILED,
                        lambda failed: _say(err, describe_error(f"a transfer from {label}", failed.error)))
