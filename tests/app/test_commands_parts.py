"""Tests for the pure parts of peerchat.commands: arguments, exit codes, output lines and progress."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from core.errors import (
    ConnectionClosedError,
    ConnectionDeclinedError,
    PeerOfflineError,
    PeerTimeoutError,
    RelayUnavailableError,
    TransferDeclinedError,
)
from core.files import TransferProgress
from peerchat.backend import RelayGoneError
from peerchat.commands import CommandError, ProgressPrinter, escape_line, exit_code_for, register, run_command
from peerchat.config import ConfigError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="peerchat")
    register(root.add_subparsers(dest="command"))
    return root


def test_send_and_receive_arguments():
    args = parser().parse_args(["send", "laptop", "a.txt", "b.txt", "--text", "hi", "--emulator", "127.0.0.1:1"])
    assert (args.device, args.files, args.text, args.emulator) == ("laptop", ["a.txt", "b.txt"], "hi",
                                                                    "127.0.0.1:1")
    args = parser().parse_args(["receive", "--count", "2", "--timeout", "30", "--download-dir", "/tmp/x"])
    assert (args.count, args.timeout, args.download_dir) == (2, 30.0, "/tmp/x")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CommandError("x", 5), 5),
        (ConfigError("x"), 2),
        (PeerOfflineError("x"), 3),
        (LookupError("x"), 3),
        (RelayGoneError("x"), 4),
        (RelayUnavailableError("x"), 4),
        (PeerTimeoutError("x"), 5),
        (ConnectionDeclinedError("x"), 6),
        (TransferDeclinedError("x"), 6),
        (ConnectionClosedError("x"), 6),
        (RuntimeError("x"), 1),
    ],
)
def test_exit_codes(error, code):
    assert exit_code_for(error) == code


def test_bad_input_is_one_line_with_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    err = io.StringIO()
    args = parser().parse_args(["send", "laptop", str(tmp_path / "missing.txt"), "--emulator", "127.0.0.1:1"])
    assert run_command(args, out=io.StringIO(), err=err) == 2
    assert err.getvalue() == f"peerchat: nothing sent: {tmp_path / 'missing.txt'} does not exist\n"

    err = io.StringIO()
    args = parser().parse_args(["peers", "--emulator", "nonsense"])
    assert run_command(args, out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("peerchat: emulator: expected HOST:PORT")

    err = io.StringIO()
    args = parser().parse_args(["receive", "--count", "0", "--emulator", "127.0.0.1:1"])
    assert run_command(args, out=io.StringIO(), err=err) == 2
    assert err.getvalue() == "peerchat: --count must be at least 1\n"


def test_unreachable_emulator_exits_4(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = io.StringIO()
    args = parser().parse_args(["peers", "--emulator", f"127.0.0.1:{port}"])
    assert run_command(args, out=io.StringIO(), err=err) == 4
    assert err.getvalue().count("\n") == 1
    assert f"no emulator answers at 127.0.0.1:{port}" in err.getvalue()


def test_escape_line():
    assert escape_line("a\tb\nc\\d") == "a\\tb\\nc\\\\d"


def test_progress_printer_without_a_terminal_prints_whole_lines():
    stream = io.StringIO()
    printer = ProgressPrinter(stream, interval=0)
    event = TransferProgress(transfer=None, direction="send", bytes_done=512, bytes_total=1024, rate=2048.0,  # type: ignore[arg-type]
                             eta=0.25, files_done=0, files_total=1)
    printer.update(event)
    printer.close()
    assert stream.getvalue() == "sending 0/1 files   50.0%  512 B of 1.0 KiB  2.0 KiB/s  0 s left\n"


def test_progress_printer_says_when_every_byte_is_there_and_being_checked():
    for direction, waiting in (("send", "the other device is checking them"), ("receive", "checking them")):
        stream = io.StringIO()
        printer = ProgressPrinter(stream, interval=0)
        printer.update(TransferProgress(transfer=None, direction=direction, bytes_done=1024,  # type: ignore[arg-type]
                                        bytes_total=1024, rate=2048.0, eta=0.0, files_done=0, files_total=1))
        verb = "sending" if direction == "send" else "receiving"
        assert stream.getvalue() == f"{verb} 1/1 files  100.0%  1.0 KiB of 1.0 KiB  2.0 KiB/s  {waiting}\n"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_last_progress_line_counts_every_file_and_is_cleared_before_the_next_line():
    stream = FakeTerminal()
    printer = ProgressPrinter(stream, interval=0)
    done = TransferProgress(transfer=None, direction="receive", bytes_done=1024, bytes_total=1024, rate=None,  # type: ignore[arg-type]
                            eta=0.0, files_done=0, files_total=1)
    printer.update(done)
    assert "receiving 1/1 files  100.0%" in stream.getvalue()
    printer.clear()
    stream.write("file\tlaptop\t/x\n")
    assert stream.getvalue().endswith("\r\x1b[Kfile\tlaptop\t/x\n")
    printer.clear()  # nothing to clear twice
    assert stream.getvalue().count("\r\x1b[K") == 2


def test_every_link_change_is_printed_with_its_reason():
    from pyee.asyncio import AsyncIOEventEmitter

    from core.events import LINK_CHANGED, LinkChanged
    from peerchat.commands import say_link_changes

    class Connection:
        events = AsyncIOEventEmitter()

    err = io.StringIO()
    connection = Connection()
    say_link_changes(connection, err)  # type: ignore[arg-type]
    connection.events.emit(LINK_CHANGED, LinkChanged("relay", "direct", "the other device closed the direct link"))
    connection.events.emit(LINK_CHANGED, LinkChanged("direct", "relay", "direct link opened (127.0.0.1)"))
    assert err.getvalue().splitlines() == [
        "link: DIRECT -> RELAY (the other device closed the direct link)",
        "link: RELAY -> DIRECT (direct link opened (127.0.0.1))",
    ]


HOSTILE = "evil\x1b]8;;https://x.example\x07link\x1b]8;;\x07\x1b[2J\u202eexe.txt\x9b1m"


def test_escape_line_makes_every_control_character_and_override_visible():
    line = escape_line(HOSTILE + "\t\\")
    assert line == ("evil\\x1b]8;;https://x.example\\x07link\\x1b]8;;\\x07\\x1b[2J\\u202eexe.txt\\x9b1m"
                    "\\t\\\\")
    assert all(c.isprintable() for c in line)


def test_headless_lines_never_carry_a_devices_control_characters(tmp_path):
    """A label written into the database by anyone who can write there reaches scripts and terminals harmless:
    tab-separated results keep their columns, human lines and errors show the characters as escapes."""
    from peerchat.commands import _say  # the writer every line of a headless command goes through

    out = io.StringIO()
    _say(out, f"id1\t{escape_line(HOSTILE)}")
    _say(out, f"connecting to {HOSTILE} (id1)…")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].split("\t") == ["id1", escape_line(HOSTILE)]
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "\\x1b]8;;" in lines[1] and "\\u202e" in lines[1]
