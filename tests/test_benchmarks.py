"""The benchmark scripts still load: each one's --help runs in a fresh interpreter, as a person would start it
(``uv run python benchmarks/NAME.py``). A script that no longer imports (a name clash, a module that moved) fails
here instead of on the day someone needs its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert {"transfer.py", "webrtc.py", "relay.py", "firstbyte.py"} <= {script.name for script in BENCHMARKS}


@pytest.mark.parametrize("script", BENCHMARKS, ids=[script.stem for script in BENCHMARKS])
def test_a_benchmark_script_loads_and_explains_itself(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                          cwd=script.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
