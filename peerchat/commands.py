"""The headless commands ``peerchat peers``, ``peerchat send`` and ``peerchat receive``, for scripts.

Results go to stdout, one per line; progress and errors go to stderr (an error is one line, ``peerchat: ...``).

``peers`` prints this user's other online devices, ``ID<TAB>LABEL`` per line.

``send DEVICE [FILE ...] [--text TEXT]`` connects to DEVICE (a label or an id), sends the text and then the files,
and waits until the other device confirmed each of them. It says on stderr which link carries the session:
``connected over WEBRTC via host`` (``via NAT``, ``via TURN relay``), or ``connected over RELAY (why)``. A confirmed text reached the other device's application,
not necessarily its person: an app that asks whether to accept the session has the text before the person answers.
When the other device declines the session, ``send`` prints ``peerchat: DEVICE declined the session`` and exits 6.

``receive`` stays online, accepts every session and every file, and prints what arrived::

    text<TAB>LABEL<TAB>TEXT          (a backslash, tab or newline in LABEL or TEXT is written as \\\\, \\t or
                                      \\n; any other control character as \\xHH, a bidirectional override as \\uHHHH)
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
import importlib
import shutil
import signal
import sys
import tempfile
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
    TRANSFER_FINISHED,
    TRANSFER_PROGRESS,
)

from .backend import Backend, RelayGoneError, describe_error
from .commandline import register  # noqa: F401  (the parsers live apart, for a fast --help)
from .config import ConfigError, Settings, settings_from_args
from .models import (
    describe_close,
    describe_link,
    describe_upgrade_failure,
    find_device,
    format_ago,
    format_bytes,
    format_duration,
    format_rate,
    escape_line,
    path_problem,
    terminal_line,
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


def _command_main(args: argparse.Namespace) -> Any:
    """The coroutine function that runs the parsed command, imported now if the parser named it as
    ``module:function``."""
    target = args.command_main
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
    return target


def run_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a parsed headless command; returns its exit code. Errors are printed as one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        settings = settings_from_args(args)
        return asyncio.run(_until_terminated(_command_main(args)(settings, args, out, err)))
    except KeyboardInterrupt:
        err.write("peerchat: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code_for(exc)
        text = str(exc) if isinstance(exc, CommandError | ConfigError | LookupError) else \
            describe_error("peerchat", exc).removeprefix("peerchat failed: ")
        err.write(f"peerchat: {terminal_line(text)}\n")  # an error may name a label from another device
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
    """Write one line; what came from another device in it is made harmless (:func:`terminal_line`)."""
    stream.write(terminal_line(text) + "\n")
    stream.flush()


def say_link_changes(connection: PeerConnection, err: TextIO) -> None:
    """Print every change of the link that carries ``connection`` (``link: DIRECT -> RELAY (why)``) on ``err``."""

    def changed(event: Any) -> None:
        clear = "\r\033[K" if err.isatty() else ""  # over a progress line being rewritten in place
        now = describe_link(event.transport, event.route)
        err.write(clear)
        _say(err, f"link: {event.previous.upper()} -> {now} ({event.reason})")

    connection.events.on(LINK_CHANGED, changed)


class Recorder:
    """Keeps what a headless command sent and received in this device's conversation history, where the app shows
    it (nothing with history off). A history that cannot be written is said once on ``err`` and never fails the
    command."""

    def __init__(self, settings: Settings, err: TextIO) -> None:
        self._err = err
        self._path = settings.history_path  # opened at the first entry: a command that gets nothing writes nothing
        self._history: Any = None

    def add(self, peer: PeerInfo, direction: str, kind: str, body: str, status: str, **kwargs: Any) -> None:
        if self._path is None:
            return
        from .history import History, HistoryError

        try:
            if self._history is None:
                self._history = History(self._path)
            self._history.add(peer.id, peer.label, direction, kind, body, status, **kwargs)
        except HistoryError as exc:
            _say(self._err, f"peerchat: not kept in the history: {exc}")
            self._path = None

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None


# --- peers -----------------------------------------------------------------------------------------------------


async def peers_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with Backend(settings, watch_interval=0, short_lived=True) as manager:
        # The presence listener delivers the whole list in its first event, just after start(): wait for it.
        deadline = time.monotonic() + args.wait
        while not (peers := await manager.get_online_peers()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    for peer in sorted(peers, key=lambda p: (p.label.lower(), p.id)):
        _say(out, f"{peer.id}\t{escape_line(peer.label)}")
    if not peers:
        _say(err, f"no other device of user {settings.user!r} is online ({settings.describe_relay()})")
    return EXIT_OK


# --- send ------------------------------------------------------------------------------------------------------


async def find_online(manager: PeerConnectionManager, name: str, wait: float, err: TextIO | None = None,
                      *, clock: Any = time.time) -> PeerInfo:
    """The online device called ``name`` (label or id), waiting up to ``wait`` seconds for it to appear; on ``err``
    it says at once that it waits, for how long, and when a known device was last seen.

    Raises:
        LookupError: not online within ``wait`` (the message names its last-seen time when it is known), or
            several online devices share that label.
    """
    deadline = time.monotonic() + wait
    said = False
    while True:
        peers = await manager.get_online_peers()
        try:
            return find_device(peers, name)
        except LookupError as exc:
            if "several" in str(exc):
                raise
            absent = await _absent(manager, name, clock())
            if time.monotonic() >= deadline:
                if absent is None:
                    raise
                raise LookupError(f"{absent}; start peerchat on it, or wait longer with --wait S") from None
            if not said and err is not None:
                said = True
                _say(err, f"{absent or f'no device called {name!r} is online'}; waiting up to {wait:g} s for it…")
        await asyncio.sleep(0.25)


async def _absent(manager: PeerConnectionManager, name: str, now: float) -> str | None:
    """"desktop is offline (last seen 5 min ago)" when ``name`` is a known offline device, else None."""
    try:
        known = await manager.get_known_peers()
    except PeerchatError:
        return None
    try:
        device = find_device([status.info for status in known], name)
    except LookupError:
        return None
    status = next(s for s in known if s.info.id == device.id)
    seen = f"last seen {format_ago(now - status.last_seen)}" if status.last_seen is not None else "last seen: unknown"
    return f"{device.label} is offline ({seen})"


STDIN_NAME = "stdin"


def read_send_inputs(args: argparse.Namespace, spool: Path, stdin: Any) -> tuple[list[Path], str | None]:
    """The files and the text ``send`` sends, checked before anything connects. ``-`` as a FILE copies standard
    input into ``spool`` as ``--name``; ``--text -`` reads the text from it (one trailing newline dropped).

    Raises:
        CommandError: (exit 2) nothing to send, a path that cannot be sent, standard input asked for twice or
            a terminal, a bad ``--name``.
    """
    names: list[str] = list(args.files)
    text: str | None = args.text
    dash = names.count("-")
    name = getattr(args, "name", None)
    if dash > 1 or (dash and text == "-"):
        raise CommandError("standard input can be read once: use it as one FILE (-) or as --text -", EXIT_USAGE)
    if name is not None and not dash:
        raise CommandError("--name names standard input sent as a file: give - as a FILE too", EXIT_USAGE)
    if not names and text is None:
        raise CommandError("nothing to send: give files, --text TEXT, or both (- reads standard input)", EXIT_USAGE)
    files: list[Path] = []
    for item in names:
        if item == "-":
            continue
        problem = path_problem(Path(item))
        if problem is not None:
            raise CommandError(f"nothing sent: {problem}", EXIT_USAGE)
        files.append(Path(item))
    if (dash or text == "-") and stdin.isatty():
        raise CommandError("standard input is a terminal: pipe something in, like: tar c photos | peerchat send "
                           "DEVICE - --name photos.tar", EXIT_USAGE)
    if text == "-":
        try:
            text = stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"--text -: standard input is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                               "send it as a file with -", EXIT_USAGE) from None
        text = text[:-1] if text.endswith("\n") else text
    if dash:
        name = STDIN_NAME if name is None else name
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise CommandError(f"--name: {name!r} is not a file name (no folders, no / or \\)", EXIT_USAGE)
        target = spool / name
        with target.open("wb") as sink:
            shutil.copyfileobj(stdin.buffer, sink, 1024 * 1024)
        files.insert(names.index("-"), target)
    return files, text


async def send_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with tempfile.TemporaryDirectory(prefix="peerchat-send-") as spool:
        files, text = read_send_inputs(args, Path(spool), getattr(args, "stdin", None) or sys.stdin)
        recorder = Recorder(settings, err)
        try:
            return await _send(settings, args, err, files, text, recorder,
                               stdin_file=files[args.files.index("-")] if "-" in args.files else None)
        finally:
            recorder.close()


async def _send(settings: Settings, args: argparse.Namespace, err: TextIO, files: list[Path],
                text: str | None, recorder: Recorder, *, stdin_file: Path | None = None) -> int:
    async with Backend(settings, watch_interval=0, short_lived=True) as manager:
        peer = await find_online(manager, args.device, args.wait, err)

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
                if text is not None:
                    await connection.send(text)
                    _say(err, "text delivered")
                    recorder.add(peer, "out", "text", text, "delivered")
                if files:
                    transfer = await send_files(connection, files, settings, err)
                    for path, entry in zip(files, _top_level(transfer, files)):
                        source = None if path == stdin_file else str(path.resolve())
                        recorder.add(peer, "out", "file", entry[0], "delivered", path=source, size=entry[1])

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


def _top_level(transfer: Any, paths: list[Path]) -> list[tuple[str, int]]:
    """``(name, bytes)`` of each path sent (a folder counts everything in it), for the history."""
    sizes: dict[str, int] = {}
    for entry in transfer.files:
        top = entry.path.split("/", 1)[0]
        sizes[top] = sizes.get(top, 0) + entry.size
    return [(path.name, sizes.get(path.name, 0)) for path in paths]


async def send_files(connection: PeerConnection, files: list[Path], settings: Settings, err: TextIO) -> Any:
    """Send ``files`` and wait until the other device verified every one (progress on ``err``); returns the
    finished transfer."""
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
    return transfer


class ProgressPrinter:
    """Progress lines on stderr: rewritten in place on a terminal (and cleared before any other line, see
    :meth:`clear`), at most one every few seconds otherwise."""

    def __init__(self, stream: TextIO, *, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 2.0)
        self._last = 0.0
        self._dirty = False

    def update(self, event: Any) -> None:
        now = time.monotonic()
        complete = event.bytes_done >= event.bytes_total
        if now - self._last < self.interval and not complete:
            return
        self._last = now
        percent = 100 * event.bytes_done / event.bytes_total if event.bytes_total else 100.0
        # The last progress event can come before the file's own "done": all bytes there means all files.
        files_done = event.files_total if complete else event.files_done
        verb = "sending" if event.direction == "send" else "receiving"
        # Every byte there: the receiver checks the SHA-256 (after a resume, maybe still hashing the part it had).
        left = ("the other device is checking them" if event.direction == "send" else "checking them") \
            if complete and event.bytes_total else f"{format_duration(event.eta)} left"
        line = (f"{verb} {files_done}/{event.files_total} files  {percent:5.1f}%  "
                f"{format_bytes(event.bytes_done)} of {format_bytes(event.bytes_total)}  {format_rate(event.rate)}  "
                f"{left}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the progress line off a terminal, so that the next line starts clean (the next update redraws)."""
        if self._dirty:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._dirty = False

    close = clear


# --- receive ---------------------------------------------------------------------------------------------------


def check_download_dir(download_dir: Path) -> None:
    """Fail at start, not at the first file, when ``download_dir`` cannot take files.

    Raises:
        CommandError: (exit 2) it cannot be created or written.
    """
    try:
        download_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=download_dir, prefix=".peerchat-check-"):
            pass
    except OSError as exc:
        raise CommandError(f"--download-dir: cannot save files in {download_dir} ({exc.strerror or exc}); choose "
                           "a folder you can write to", EXIT_USAGE) from None


async def receive_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1", EXIT_USAGE)
    if args.timeout is not None and args.timeout <= 0:
        raise CommandError("--timeout must be more than 0 seconds", EXIT_USAGE)
    to_stdout = getattr(args, "stdout", False)
    if to_stdout and args.count not in (None, 1):
        raise CommandError("--stdout writes one text or file: leave out --count (or give --count 1)", EXIT_USAGE)
    count = 1 if to_stdout else args.count
    if not to_stdout:
        check_download_dir(settings.download_dir)
    recorder = Recorder(settings, err)
    try:
        if to_stdout:
            with tempfile.TemporaryDirectory(prefix="peerchat-receive-") as spool:
                return await _receive(settings, args, out, err, count, Path(spool), recorder, to_stdout=True)
        return await _receive(settings, args, out, err, count, settings.download_dir, recorder, to_stdout=False)
    finally:
        recorder.close()


async def _receive(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO, count: int | None,
                   download_dir: Path, recorder: Recorder, *, to_stdout: bool) -> int:
    received = 0
    enough = asyncio.Event()
    closers: list[Any] = []
    progress = ProgressPrinter(err)
    for_stdout: list[tuple[str, str]] = []
    running: set[str] = set()  # incoming transfers not finished yet
    idle = asyncio.Event()
    idle.set()

    finished: set[str] = set()

    def track(event: Any, done: bool) -> None:
        if done:
            finished.add(event.transfer.id)
            running.discard(event.transfer.id)
        elif event.transfer.id not in finished:
            running.add(event.transfer.id)
        idle.clear() if running else idle.set()

    def say(stream: TextIO, text: str) -> None:
        progress.clear()
        _say(stream, text)

    def arrived(kind: str, label: str, value: str) -> None:
        nonlocal received
        if enough.is_set():
            return  # --count is reached: what comes after it is not taken
        if to_stdout:  # written once the sessions are closed: a slow reader never stalls them
            for_stdout.append((kind, value))
            say(err, f"received {'a text' if kind == 'text' else Path(value).name} from {label}")
        else:
            say(out, f"{kind}\t{escape_line(label)}\t{escape_line(value)}")
        received += 1
        if count is not None and received >= count:
            enough.set()

    def on_incoming(event: Any) -> None:
        connection: PeerConnection = event.connection
        label = connection.peer.label
        peer = connection.peer

        def got(kind: str, label: str, value: str) -> None:
            if not enough.is_set():  # what --count does not take is not kept either
                if kind == "text":
                    recorder.add(peer, "in", "text", value, "received")
                else:
                    recorder.add(peer, "in", "file", Path(value).name, "received",
                                 path=None if to_stdout else value, size=_size(value))
            arrived(kind, label, value)

        connection.events.on(DATA, lambda data: got("text", label, data.data))
        # Once --count is reached this command closes the sessions itself: that is no news.
        connection.events.on(CLOSED, lambda closed: enough.is_set() or say(
            err, f"session with {label} ended: {describe_close(closed.reason, closed.error)}"))
        closers.append(connection.disconnect)
        say(err, f"session from {label} ({connection.peer.id}) over {describe_connection(connection, label)}")
        say_link_changes(connection, err)
        transfers = attach_receiver(connection, download_dir, got, err, closers, progress=progress, say=say)
        transfers.events.on(TRANSFER_PROGRESS, lambda event: track(event, False))
        transfers.events.on(TRANSFER_FILE_DONE, lambda event: track(event, False))
        transfers.events.on(TRANSFER_FINISHED, lambda event: track(event, True))
        transfers.events.on(TRANSFER_FAILED, lambda event: track(event, True))

    async with Backend(settings, watch_interval=0, short_lived=True) as manager:
        manager.events.on(INCOMING_CONNECTION, on_incoming)
        where = "the first text or file goes to standard output" if to_stdout else f"files go to {download_dir}"
        say(err, f"receiving as {settings.label} ({settings.device_id}) of user {settings.user} on "
                 f"{settings.describe_relay()}; {where}")
        try:
            async with asyncio.timeout(args.timeout):
                await enough.wait()
        except TimeoutError:
            if count is not None:
                raise CommandError(f"timed out after {args.timeout:g} s with {received} of {count} items "
                                   "received", EXIT_TIMEOUT) from None
        finally:
            manager.events.remove_listener(INCOMING_CONNECTION, on_incoming)
            # The last file is saved, but its transfer says so to the sender just after: let it, briefly.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await idle.wait()
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    await close()
            progress.clear()
    for kind, value in for_stdout:
        await asyncio.to_thread(_write_stdout, out, kind, value)
    return EXIT_OK


def _size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def _write_stdout(out: TextIO, kind: str, value: str) -> None:
    """``receive --stdout``: a text with a newline, a file's bytes exactly (then the file is not kept)."""
    if kind == "text":
        out.write(value if value.endswith("\n") else value + "\n")
        out.flush()
        return
    out.flush()
    sink = getattr(out, "buffer", None)
    with open(value, "rb") as source:
        if sink is None:  # a text stream (tests): the bytes as Latin-1, one character per byte
            out.write(source.read().decode("latin-1"))
        else:
            shutil.copyfileobj(source, sink, 1024 * 1024)
            sink.flush()
    out.flush()


def attach_receiver(connection: PeerConnection, download_dir: Path, arrived: Any, err: TextIO,
                    closers: list[Any], *, progress: ProgressPrinter | None = None, say: Any = None) -> Any:
    """Accept every file offer on ``connection`` into ``download_dir``; report each saved file."""
    from core import FileTransfers

    label = connection.peer.label
    transfers = FileTransfers(connection, download_dir=download_dir)
    progress = progress or ProgressPrinter(err)
    say = say or _say
    closers.append(transfers.close)

    async def on_offer(event: Any) -> None:
        offer = event.offer
        if offer.transfer is not None:
            say(err, f"resuming {len(offer.files)} file(s) from {label} into {download_dir}")
            return
        say(err, f"accepting {len(offer.files)} file(s) ({format_bytes(offer.total_bytes)}) from {label}")
        try:
            await offer.accept(download_dir)
        except Exception as exc:  # refused for want of space or a disk error: say so, keep receiving
            say(err, describe_error(f"accepting files from {label}", exc))

    transfers.events.on(INCOMING_TRANSFER, on_offer)
    transfers.events.on(TRANSFER_PROGRESS, progress.update)
    transfers.events.on(TRANSFER_FILE_DONE,
                        lambda done: done.direction == "receive" and arrived("file", label, str(done.saved_to)))
    transfers.events.on(TRANSFER_FAILED,
                        lambda failed: say(err, describe_error(f"a transfer from {label}", failed.error)))
    return transfers
