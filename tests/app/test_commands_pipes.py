"""End-to-end tests of the pipes (`send -`, `send --text -`, `receive --stdout`) and of the command line's rough
edges, each in real OS processes on the shared emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest


def peerchat(args: list[str], env: dict[str, str], *, stdin: int | None = subprocess.DEVNULL
             ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "peerchat", *args], env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], timeout: float = 60, stdin: bytes | None = None
           ) -> tuple[int, bytes, str]:
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"peerchat {process.args[3:]} did not finish within {timeout} s:\n{out!r}\n{err.decode()}")
    return process.returncode, out, err.decode()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FIREBASE_DATABASE_EMULATOR_HOST", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


@pytest.fixture
def common(emulator) -> list[str]:
    return ["--emulator", emulator.host_port, "--user", f"e2e{uuid.uuid4().hex[:8]}", "--no-webrtc"]


def start_receiver(args: list[str], common: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    receiver = peerchat(["receive", "--timeout", "90", "--label", "desktop", *args, *common], env)
    assert receiver.stderr is not None
    assert b"receiving as desktop" in receiver.stderr.readline()  # online from here on
    return receiver


def test_a_binary_file_piped_through_send_and_receive_stdout_is_byte_identical(common, cli_env, tmp_path):
    payload = os.urandom(300_000) + b"\x00\r\n\xff" * 1000
    receiver = start_receiver(["--stdout"], common, cli_env)
    try:
        sender = peerchat(["send", "desktop", "-", "--name", "blob.bin", "--label", "laptop", *common], cli_env,
                          stdin=subprocess.PIPE)
        code, _, err = finish(sender, 90, stdin=payload)
        assert code == 0, err
        assert "files delivered and verified" in err
        code, out, err = finish(receiver, 60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert code == 0, err
    assert out == payload
    assert "received blob.bin from laptop" in err
    assert "ended" not in err  # the receiver closed the session itself once it had the file: no news


def test_text_from_standard_input_to_standard_output(common, cli_env):
    receiver = start_receiver(["--stdout"], common, cli_env)
    try:
        sender = peerchat(["send", "desktop", "--text", "-", "--label", "laptop", *common], cli_env,
                          stdin=subprocess.PIPE)
        code, _, err = finish(sender, 90, stdin="grüße\tand a tab\n".encode())
        assert code == 0, err
        code, out, err = finish(receiver, 60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    assert code == 0, err
    assert out.decode() == "grüße\tand a tab\n"


def test_send_to_an_offline_device_says_it_waits_and_when_it_was_last_seen(emulator, common, cli_env, tmp_path):
    import requests

    # The desktop's app ran a moment ago and left its record: offline, last seen now (by the server's clock).
    user = common[common.index("--user") + 1]
    response = requests.put(f"{emulator.url}/presence/{user}/desk-1.json", params={"ns": "peerchat"},
                            json={"label": "desktop", "online": False, "lastSeen": {".sv": "timestamp"}},
                            headers={"Authorization": "Bearer owner"}, timeout=10)
    response.raise_for_status()
    code, _, err = finish(peerchat(["send", "desktop", "--text", "x", "--wait", "1", "--label", "laptop", *common],
                                   cli_env), 60)
    assert code == 3
    lines = err.splitlines()
    assert lines[0] == "desktop is offline (last seen just now); waiting up to 1 s for it…"
    assert lines[-1] == ("peerchat: desktop is offline (last seen just now); start peerchat on it, or wait longer "
                         "with --wait S")


def test_a_file_that_cannot_be_sent_is_refused_before_connecting(common, cli_env, tmp_path):
    fifo = tmp_path / "a-pipe"
    os.mkfifo(fifo)
    receiver = start_receiver(["--count", "1"], common, cli_env)
    try:
        for path, problem in ((fifo, "is not a regular file or folder"), (tmp_path / "gone.txt", "does not exist")):
            code, _, err = finish(peerchat(["send", "desktop", str(path), "--label", "laptop", *common], cli_env))
            assert code == 2
            assert err == f"peerchat: nothing sent: {path} {problem}" + (
                " (a device, pipe or socket)\n" if path == fifo else "\n")
    finally:
        receiver.terminate()
        code, out, err = finish(receiver, 30)
    assert "session from" not in err  # nothing ever reached the receiver
    assert out == b""


def test_receive_into_a_folder_that_cannot_be_written_fails_at_once(common, cli_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = finish(peerchat(["receive", "--download-dir", str(blocker / "inbox"), *common], cli_env))
    assert code == 2
    assert err.startswith(f"peerchat: --download-dir: cannot save files in {blocker / 'inbox'} (")
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["send"], ["send", "--bogus"], ["send", "desktop", "--bogus"],
                                  ["receive", "--bogus"]])
def test_usage_errors_print_the_subcommands_own_usage(argv, cli_env):
    code, _, err = finish(peerchat(argv, cli_env))
    assert code == 2
    assert err.startswith(f"usage: peerchat {argv[0]} "), err


def test_help_says_what_the_defaults_really_are(cli_env, tmp_path):
    code, out, _ = finish(peerchat(["send", "--help"], cli_env))
    assert code == 0
    text = " ".join(out.decode().split())
    assert "(default: this host's name," in text
    assert "- sends standard input as a file" in text
    squashed = "".join(text.split())  # argparse may wrap a long path at its hyphens
    assert f"(default:{tmp_path / 'data' / 'peerchat'})" in squashed  # the history's folder


def test_stdin_used_twice_or_a_bad_name_is_a_usage_error(cli_env, common):
    for argv, message in ((["send", "d", "-", "--text", "-"], "standard input can be read once"),
                          (["send", "d", "-", "--name", "../x"], "--name: '../x' is not a file name"),
                          (["send", "d", "a", "--name", "x"], "--name names standard input")):
        code, _, err = finish(peerchat([*argv, *common], cli_env, stdin=subprocess.PIPE), stdin=b"data")
        assert code == 2 and message in err, err


def test_a_headless_command_leaves_no_device_behind(emulator, cli_env, common):
    import requests

    user = common[common.index("--user") + 1]

    def presence() -> dict:
        response = requests.get(f"{emulator.url}/presence/{user}.json", params={"ns": "peerchat"},
                                headers={"Authorization": "Bearer owner"}, timeout=10)
        response.raise_for_status()
        return response.json() or {}

    receiver = start_receiver(["--device-id", "desk-1"], common, cli_env)
    assert presence()["desk-1"]["online"] is True  # listed while it runs
    receiver.terminate()
    assert finish(receiver, 30)[0] == 130
    assert "desk-1" not in presence()


def test_what_the_commands_send_and_receive_is_in_each_devices_history(common, cli_env, tmp_path):
    from peerchat.history import History, history_file

    payload = tmp_path / "report.pdf"
    payload.write_bytes(b"%PDF" + os.urandom(5000))
    downloads = tmp_path / "inbox"
    receiver = start_receiver(["--count", "2", "--device-id", "desk-1", "--download-dir", str(downloads)], common,
                              cli_env)
    try:
        sender = peerchat(["send", "desktop", str(payload), "--text", "the report", "--label", "laptop",
                           "--device-id", "lap-1", *common], cli_env)
        code, _, err = finish(sender, 90)
        assert code == 0, err
        code, _, err = finish(receiver, 60)
        assert code == 0, err
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
    data = tmp_path / "data" / "peerchat"
    sent = History(history_file(data, "lap-1")).page("desk-1")
    assert [(e.direction, e.kind, e.body, e.status, e.path, e.size) for e in sent] == [
        ("out", "text", "the report", "delivered", None, None),
        ("out", "file", "report.pdf", "delivered", str(payload), 5004)]
    got = History(history_file(data, "desk-1")).page("lap-1")
    assert [(e.direction, e.kind, e.body, e.status, e.path, e.size) for e in got] == [
        ("in", "text", "the report", "received", None, None),
        ("in", "file", "report.pdf", "received", str(downloads / "report.pdf"), 5004)]



def test_with_history_off_the_commands_keep_nothing(tmp_path):
    import dataclasses
    import io

    from core import PeerInfo
    from peerchat.commands import Recorder
    from peerchat.config import Settings
    from peerchat.history import history_file

    settings = Settings(label="laptop", device_id="lap-1", data_dir=tmp_path)
    for history, kept in ((False, False), (True, True)):
        recorder = Recorder(dataclasses.replace(settings, history=history), io.StringIO())
        recorder.add(PeerInfo("desk-1", "desktop"), "out", "text", "hello", "delivered")
        recorder.close()
        assert history_file(tmp_path, "lap-1").exists() is kept
