"""The security rules always come with peerchat: a wheel ships them inside the package, and the embedded emulator
refuses to start (with one clear line) rather than run without them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from core import ManagerOptions
from peerchat import rules
from peerchat.backend import Backend, RelayGoneError, relay_answers
from peerchat.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_checkout_finds_the_rules_of_its_firebase_folder():
    assert rules.rules_file() == ROOT / "firebase" / "database.rules.json"


def test_missing_rules_are_one_line_that_says_what_to_do(tmp_path: Path):
    with pytest.raises(rules.RulesMissingError) as caught:
        rules.rules_file((tmp_path / "database.rules.json",))
    message = str(caught.value)
    assert "\n" not in message and "missing" in message and "reinstall" in message


async def test_the_embedded_emulator_refuses_to_start_without_rules(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(rules, "CANDIDATES", (tmp_path / "nowhere.json",))
    port = free_port()
    settings = Settings(user=f"u{uuid.uuid4().hex[:8]}", label="laptop", device_id="laptop-1", webrtc=False,
                        download_dir=tmp_path)
    backend = Backend(settings, embedded_at=("127.0.0.1", port), watch_interval=0,
                      options=ManagerOptions(webrtc=False))
    with pytest.raises(RelayGoneError, match="security rules"):
        await backend.start()
    assert backend.emulator is None
    assert not await relay_answers("127.0.0.1", port)


def test_peerchat_emulator_refuses_to_start_without_rules(tmp_path: Path):
    code = (
        "from pathlib import Path\nfrom peerchat import rules\n"
        f"rules.CANDIDATES = (Path({str(tmp_path / 'nowhere.json')!r}),)\n"
        "from peerchat.cli import main\nmain(['emulator', '--port', '0'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("peerchat emulator: the security rules") and result.stderr.count("\n") == 1


@pytest.mark.skipif(shutil.which("uv") is None, reason="building the wheel needs uv")
def test_the_wheel_ships_the_rules_and_the_three_packages(tmp_path: Path):
    subprocess.run(["uv", "build", "--wheel", "-q", "-o", str(tmp_path)], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)
    (wheel,) = tmp_path.glob("peerchat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = json.loads(archive.read("peerchat/database.rules.json"))
    assert {"core/__init__.py", "emulator/__init__.py", "peerchat/__init__.py", "peerchat/rules.py"} <= names
    assert shipped == json.loads((ROOT / "firebase" / "database.rules.json").read_text())
