"""How fast peerchat starts, against a bare ``python -c pass`` measured in the same run.

Prints, each as the median (and min-max) of ``--runs`` runs:

- ``python -c pass``: the interpreter's own start, the floor every Python tool pays;
- ``peerchat --help``: the console script parsing its arguments (no Textual, firebase-admin, aiortc or aiohttp);
- the app's first screen: time from starting ``peerchat`` in a terminal (a pseudo-terminal here) until the device
  list's title is on the screen;
- "online": until the app's relay line says it is online, against an emulator this script runs (so the time to
  start one is not counted) and against the embedded one (``peerchat`` with no settings: it starts its own).

Usage: ``uv run python benchmarks/startup.py [--runs 5]``. Aims on an idle 2-core machine: ``--help`` under 0.3 s,
first screen under 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulator import DEFAULT_PORT as EMBEDDED_PORT  # noqa: E402
from emulator import Emulator  # noqa: E402

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
DEADLINE = 30.0


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("peerchat")
    if script.exists():
        return [str(script)]
    found = shutil.which("peerchat")
    return [found] if found else [sys.executable, "-m", "peerchat"]


def time_command(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True, timeout=60)
    return time.perf_counter() - start


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def time_app(args: list[str], env: dict[str, str], marks: dict[str, bytes]) -> dict[str, float]:
    """Start the app in a pseudo-terminal; seconds until each mark's text is on the screen (escape codes removed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, in an 120x40 terminal
        os.environ.clear()
        os.environ.update(env)
        os.execv(args[0], args)
    start = time.perf_counter()
    seen: dict[str, float] = {}
    screen = b""
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        while len(seen) < len(marks) and time.perf_counter() - start < DEADLINE:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += ANSI.sub(b"", chunk)
            now = time.perf_counter() - start
            for name, text in marks.items():
                if name not in seen and text in screen.replace(b" ", b""):
                    seen[name] = now
    finally:
        os.kill(pid, 15)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            try:  # keep reading so the app is never blocked on a full terminal while it exits
                if select.select([fd], [], [], 0.1)[0]:
                    os.read(fd, 65536)
            except OSError:
                pass
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    missing = set(marks) - set(seen)
    if missing:
        raise RuntimeError(f"never saw {sorted(missing)} within {DEADLINE:g} s; last screen text: {screen[-400:]!r}")
    return seen


def summary(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms  (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    home = tempfile.mkdtemp(prefix="peerchat-startup-")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_CONFIG_HOME": f"{home}/config",
        "XDG_DATA_HOME": f"{home}/data",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "LANG": "C.UTF-8",
    }
    script = console_script()
    results: dict[str, list[float]] = {
        "python -c pass": [], "peerchat --help": [], "app: first screen": [], "app: online (emulator running)": [],
        "app: first screen (embedded)": [], "app: online (embedded emulator)": [],
    }
    first = {"screen": b"Devices", "online": b"onlinevia"}
    embedded_free = port_free(EMBEDDED_PORT)
    if not embedded_free:
        print(f"(something answers on 127.0.0.1:{EMBEDDED_PORT}: the embedded-emulator figures are left out)")
        for name in ("app: first screen (embedded)", "app: online (embedded emulator)"):
            del results[name]
    with Emulator.in_thread(port=0, rules=ROOT / "firebase" / "database.rules.json") as emulator:
        relay = f"127.0.0.1:{emulator.port}"
        for run in range(runs):
            results["python -c pass"].append(time_command([sys.executable, "-c", "pass"], env))
            results["peerchat --help"].append(time_command([*script, "--help"], env))
            marks = time_app([*script, "--label", f"bench{run}", "--emulator", relay], env, first)
            results["app: first screen"].append(marks["screen"])
            results["app: online (emulator running)"].append(marks["online"])
            if not embedded_free:
                continue
            # No settings at all: the app starts the embedded emulator itself (and stops it when it quits).
            marks = time_app([*script, "--label", f"embedded{run}"], env, first)
            results["app: first screen (embedded)"].append(marks["screen"])
            results["app: online (embedded emulator)"].append(marks["online"])
    floor = statistics.median(results["python -c pass"])
    print(f"peerchat start-up, {runs} runs each (median, min-max); ratio against `python -c pass` in the same run")
    for name, values in results.items():
        ratio = statistics.median(values) / floor
        print(f"  {name:34s} {summary(values)}   {ratio:5.1f}x")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
