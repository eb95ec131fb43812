"""The layers of ``core`` and what each package may import, read from the source (every import counts: at the top,
under ``TYPE_CHECKING`` and inside functions), and what importing the light parts loads.

The floors, bottom up (``docs/architecture.md`` explains them):

    vocabulary   core.errors, core.options, core._tasks, core.peer, core.events, core.link
    protocol     core.protocol.*          sans-I/O; imports only the vocabulary
    I/O          core.relay.*, core.webrtc.*, core.direct.*, core.trust.*   never each other
    feature      core.files.*             over ANY PeerConnection: errors, options, peer, events, _tasks only
    top          core.manager, core.links the one place that wires relay, WebRTC and direct together
    face         core (``__init__``)      re-exports; nothing inside core imports it
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

VOCABULARY = {
    "core.errors": set(),
    "core.options": set(),
    "core._tasks": set(),
    "core.peer": set(),
    "core.events": {"core.peer"},
    "core.link": {"core.peer"},
}
FLOOR_MAY_IMPORT = {
    "protocol": {"vocabulary", "protocol"},
    "relay": {"vocabulary", "protocol", "relay"},
    "webrtc": {"vocabulary", "protocol", "webrtc"},
    "direct": {"vocabulary", "protocol", "direct"},
    "trust": {"vocabulary", "protocol", "trust"},
    "files": {"files"},  # and the vocabulary modules in FILES_VOCABULARY
    "manager": {"vocabulary", "protocol", "relay", "webrtc", "direct", "trust", "manager"},
    "face": {"vocabulary", "protocol", "relay", "webrtc", "direct", "trust", "files", "manager"},
}
TOP = {"core.manager", "core.links"}
FILES_VOCABULARY = {"core.errors", "core.options", "core.peer", "core.events", "core._tasks"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, anywhere in the file, resolved to a module of ``known`` when it is one."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def floor_of(module: str) -> str:
    if module == "core":
        return "face"
    if module in VOCABULARY:
        return "vocabulary"
    if module in TOP:
        return "manager"
    return module.split(".")[1]


def graph(package: str) -> dict[str, set[str]]:
    modules = modules_of(package)
    known = set(modules)
    return {name: {m for m in imports_of(name, path, known) if m in known} for name, path in modules.items()}


def test_every_module_of_core_is_on_a_known_floor():
    for module in graph("core"):
        assert floor_of(module) in FLOOR_MAY_IMPORT or module in VOCABULARY, module


def test_imports_in_core_point_down_only():
    wrong = []
    for module, targets in graph("core").items():
        for target in targets - {module}:
            if module in VOCABULARY:
                allowed = target in VOCABULARY[module]
            elif floor_of(module) == "files":
                allowed = floor_of(target) == "files" or target in FILES_VOCABULARY
            else:
                allowed = floor_of(target) in FLOOR_MAY_IMPORT[floor_of(module)]
            if target == "core" and module != "core":
                allowed = False  # nothing inside core imports the package face
            if not allowed:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_core_has_no_import_cycle():
    edges = graph("core")
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt == node or nxt == "core":
                continue
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_emulator_imports_nothing_from_core_or_peerchat():
    modules = modules_of("emulator")
    outside = {
        f"{name} -> {target}"
        for name, path in modules.items()
        for target in imports_of(name, path, set(modules))
        if target.split(".")[0] in {"core", "peerchat"}
    }
    assert outside == set()


def test_peerchat_uses_the_public_face_of_core_only():
    modules = modules_of("peerchat")
    known = set(modules) | set(modules_of("core"))
    private = {
        f"{name} -> {target}"
        for name, path in modules.items()
        for target in imports_of(name, path, known)
        if target.split(".")[0] == "core" and target not in {"core", "core.events"}
    }
    assert private == set()


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The guard itself must be able to fail: a protocol module importing the relay, and a pair of modules
    # importing each other under TYPE_CHECKING, are both reported.
    package = tmp_path / "core"
    (package / "protocol").mkdir(parents=True)
    (package / "relay").mkdir()
    (package / "__init__.py").write_text("")
    (package / "protocol" / "__init__.py").write_text("")
    (package / "relay" / "__init__.py").write_text("")
    (package / "protocol" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..relay import b\n"
    )
    (package / "relay" / "b.py").write_text("def f():\n    from ..protocol.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges = graph("core")
    assert edges["core.protocol.a"] == {"core.relay.b"}
    assert edges["core.relay.b"] == {"core.protocol.a"}
    with pytest.raises(AssertionError):
        test_imports_in_core_point_down_only()
    with pytest.raises(AssertionError):
        test_core_has_no_import_cycle()


HEAVY = ("textual", "aiortc", "firebase_admin", "aiohttp", "aiofiles")


def _loaded(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return sorted({m.split(".")[0] for m in ast.literal_eval(result.stdout.strip().splitlines()[-1])})


def test_import_core_loads_none_of_the_heavy_packages():
    assert _loaded("import core; from core import PeerInfo, ManagerOptions, PeerchatError, events") == []


def test_a_heavy_name_of_core_loads_its_part_on_first_use():
    assert "firebase_admin" in _loaded("from core import FirebasePeerConnectionManager")


def test_import_emulator_loads_neither_aiortc_nor_firebase_admin_nor_core():
    code = "import emulator; from emulator import Emulator, RuleSet\nimport sys\nassert 'core' not in sys.modules"
    assert _loaded(code) == ["aiohttp"]
    assert _loaded("import emulator") == []


def test_peerchat_help_loads_none_of_the_heavy_packages():
    code = (
        "import contextlib, io\nfrom peerchat.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])"
    )
    assert _loaded(code) == []
    code_sub = code.replace("['--help']", "['send', '--help']")
    assert _loaded(code_sub) == []


def test_peerchat_help_loads_neither_core_nor_asyncio():
    """Asking for help builds every parser but runs no command: the library and its event loop stay unloaded."""
    for argv in (["--help"], ["send", "--help"], ["devices", "verify", "--help"]):
        code = (
            "import contextlib, io, sys\nfrom peerchat.cli import main\n"
            f"with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    main({argv!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'asyncio', 'pyee')))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", argv
