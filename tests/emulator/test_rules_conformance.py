"""Conformance of the rules engine with what live Firebase did for each expression in the shared fixture file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulator.rules import RuleSet, RulesParseError

FIXTURE = Path(__file__).resolve().parents[2] / "../shared/conformance/rules-live-firebase.json"


def _load() -> dict[str, Any]:
    if not FIXTURE.is_file():
        pytest.skip(f"the conformance fixture {FIXTURE.resolve()} is not present (CI provides it)",
                    allow_module_level=True)
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


CONFORMANCE = _load()
CASES = CONFORMANCE["tests"]


def _deploy(case: dict[str, Any], rule: str) -> tuple[RuleSet, tuple[str, ...]]:
    """{'rules': {<wildchildren path>: {'.read': rule}}} and the concrete path that the test reads."""
    wildchildren: dict[str, str] = case.get("wildchildren", {})
    node: dict[str, Any] = {".read": rule}
    for name in reversed(list(wildchildren)):
        node = {name: node}
    return RuleSet.from_json({"rules": node}), tuple(wildchildren.values())


def _read(case: dict[str, Any], rule: str) -> bool:
    rules, path = _deploy(case, rule)
    auth = CONFORMANCE["users"][case["user"]]
    return rules.can_read(case.get("data"), path, auth=auth, now=1_700_000_000_000, query=case.get("query"))


def test_the_fixture_has_cases_of_every_kind():
    assert len(CASES) >= 90
    assert any(not c["isValid"] for c in CASES)
    assert any(c["isValid"] and c["failAtRuntime"] for c in CASES)
    assert any(c["isValid"] and not c["failAtRuntime"] and c["evaluateTo"] for c in CASES)
    assert any(c["isValid"] and not c["failAtRuntime"] and not c["evaluateTo"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["rule"] for c in CASES])
def test_live_firebase_behaviour(case: dict[str, Any]):
    if not case["isValid"]:
        with pytest.raises(RulesParseError) as info:
            _deploy(case, case["rule"])
        assert str(info.value).startswith("Parse error")
        assert "/.read" in str(info.value)
        return
    if case["failAtRuntime"]:
        # An error makes the rule false, and it stays false even when or-ed with true.
        assert _read(case, case["rule"]) is False
        assert _read(case, f"({case['rule']}) || true") is False
        return
    assert _read(case, case["rule"]) is case["evaluateTo"]
    # Without an error, '|| true' rescues a false rule: proves the false above was not a hidden error.
    assert _read(case, f"({case['rule']}) || true") is True
