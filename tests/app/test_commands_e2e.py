"""End-to-end test of the headless commands: `receive` and `send` (a text and a file) in two OS processes, plus
`peers`, on the shared emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


def peerchat(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "peerchat", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"peerchat {process.args[3:]} did not finish within {timeout} s:\n{out}\n{err}")
    return process.returncode, out, err


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FIREBASE_DATABASE_EMULATOR_HOST", None)  # --emulator names it
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # the history
    return env


def test_send_a_text_and_a_file_to_a_receiving_process(emulator, cli_env, tmp_path):
    # Default links (the commands upgrade as they do for a user), on loopback only: two processes on one machine
    # open a direct link.
    common = ["--emulator", emulator.host_port, "--user", f"e2e{uuid.uuid4().hex[:8]}",
              "--addresses", "127.0.0.1", "--ice-server", "none"]
    downloads = tmp_path / "downloads"
    payload = tmp_path / "notes.bin"
    payload.write_bytes(os.urandom(200_000))
    receiver = peerchat(["receive", "--count", "2", "--timeout", "90", "--label", "desktop",
                         "--download-dir", str(downloads), *common], cli_env)
    try:
        sender = peerchat(["send", "desktop", str(payload), "--text", "hello\tthere", "--wait", "60",
                           "--label", "laptop", *common], cli_env)
        code, out, err = finish(sender, 90)
        assert code == 0, err
        assert "text delivered" in err and "files delivered and verified" in err
        assert "connected over DIRECT" in err, err
        code, out, err = finish(receiver, 60)
        assert code == 0, err
        assert "over DIRECT" in err, err
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    lines = out.splitlines()
    saved = downloads / "notes.bin"
    assert lines == ["text\tlaptop\thello\\tthere", f"file\tlaptop\t{saved}"]
    assert saved.read_bytes() == payload.read_bytes()


def test_peers_lists_a_running_device_and_errors_are_one_line(emulator, cli_env, tmp_path):
    common = ["--emulator", emulator.host_port, "--user", f"e2e{uuid.uuid4().hex[:8]}"]
    receiver = peerchat(["receive", "--timeout", "60", "--label", "desktop", "--device-id", "desk-1",
                         "--download-dir", str(tmp_path), *common], cli_env)
    try:
        # The receiver says on stderr when it is online; then `peers` sees it.
        assert "receiving as desktop" in receiver.stderr.readline()
        code, out, err = finish(peerchat(["peers", "--label", "laptop", *common], cli_env))
        assert (code, out) == (0, "desk-1\tdesktop\n"), err
        code, out, err = finish(peerchat(["send", "tv", "--text", "x", "--wait", "0", "--label", "laptop",
                                          *common], cli_env))
        assert code == 3
        assert err == "peerchat: no online device is called 'tv'; online now: desktop (desk-1)\n"
    finally:
        receiver.terminate()
        code, _, err = finish(receiver, 30)
    assert code == 130, err  # SIGTERM: stopped cleanly, like Ctrl-C
    assert err.endswith("peerchat: interrupted\n")


def test_the_app_runs_from_the_command_line_and_quits_with_ctrl_q(emulator, cli_env, tmp_path):
    """`peerchat` with no subcommand starts the Textual app in a terminal (a pseudo-terminal here)."""
    import pty
    import re
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: become `peerchat --label laptop ...` in the terminal
        env = {**cli_env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
        os.execvpe(sys.executable, [sys.executable, "-m", "peerchat", "--label", "laptop", "--emulator",
                                    emulator.host_port, "--user", f"e2e{uuid.uuid4().hex[:8]}",
                                    "--download-dir", str(tmp_path)], env)
    screen = b""

    def read_until(pattern: bytes, timeout: float) -> bool:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return False
                if not chunk:
                    return False
                screen += chunk
                if pattern in re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen):
                    return True
        return False

    try:
        assert read_until(b"online via emulator", 60), screen[-2000:]
        os.write(fd, b"\x11")  # Ctrl+Q
        read_until(b"\x00never", 10)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
