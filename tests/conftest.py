"""Fixtures every integration test shares: a Realtime Database emulator, a fresh namespace per test, and
firebase-admin apps pointed at it. Importing it also turns peerchat's default public STUN server off for the whole run
(``PEERCHAT_ICE_SERVERS=none``), subprocesses included.

- ``emulator`` (session): our emulator running in a background thread, or, when
  ``FIREBASE_DATABASE_EMULATOR_HOST`` is set, a handle on that server (Google's emulator) with the same interface.
- ``namespace``: a unique namespace name for one test, so tests never see each other's data or rules.
- ``firebase_app_factory``: ``make(auth_override=...)`` creates firebase-admin apps on that namespace (deleted at
  teardown); ``load_rules(rules)`` loads rules into it.

Use ``firebase_admin.db.reference(path, app=app)`` with the apps it makes. Blocking SDK calls in async tests go
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import firebase_admin
import pytest
import requests
from google.auth.credentials import AnonymousCredentials

from emulator import Emulator

EMULATOR_HOST_ENV = "FIREBASE_DATABASE_EMULATOR_HOST"

# No test may ever send a packet to a public address, and peerchat's settings default to a public STUN server: turn
# it off for this process and every process a test starts (they inherit the environment). A test that names ICE
# servers does so with --ice-server, which wins over this. tests/app/test_config.py fails if this ever stops working.
os.environ["PEERCHAT_ICE_SERVERS"] = "none"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""``auth_override`` default of ``make()``: no ``databaseAuthVariableOverride`` at all (an admin app)."""


class RemoteEmulator:
    """A running emulator we did not start (Google's, at ``host:port``), driven over HTTP as owner."""

    def __init__(self, host_port: str) -> None:
        self.host_port = host_port
        self.url = f"http://{host_port}"

    def database_url(self, namespace: str) -> str:
        return f"{self.url}?ns={namespace}"

    def load_rules(self, rules: str | Path | Mapping[str, Any], namespace: str | None = None) -> None:
        if namespace is None:
            raise ValueError("an external emulator has no default rules: name the namespace")
        if isinstance(rules, Mapping):
            text = json.dumps(dict(rules))
        elif isinstance(rules, Path):
            text = rules.read_text(encoding="utf-8")
        elif rules.lstrip().startswith(("{", "//", "/*")):
            text = rules
        else:
            text = Path(rules).read_text(encoding="utf-8")
        response = requests.put(f"{self.url}/.settings/rules.json", params={"ns": namespace},
                                data=text.encode(), headers={"Authorization": "Bearer owner"}, timeout=30)
        if response.status_code != 200:
            raise ValueError(f"rules refused ({response.status_code}): {response.text}")

    def clear(self, namespace: str) -> None:
        response = requests.put(f"{self.url}/.json", params={"ns": namespace}, data=b"null",
                                headers={"Authorization": "Bearer owner"}, timeout=30)
        response.raise_for_status()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator | RemoteEmulator]:
    """A running Realtime Database emulator for the whole session.

    Ours in a background thread (``url``, ``host_port``, ``database_url(ns)``, ``load_rules(rules, namespace)``,
    ``clear(namespace)``), or the server named by ``FIREBASE_DATABASE_EMULATOR_HOST`` behind the same methods.
    Do not stop it: tests that need a restart start an ``Emulator`` of their own. Ours sends a keep-alive every
    half second, so closing a firebase-admin listener takes at most about half a second.
    """
    host_port = os.environ.get(EMULATOR_HOST_ENV)
    if host_port:
        yield RemoteEmulator(host_port)
        return
    # Keep-alives every half second: firebase-admin's ``ListenerRegistration.close()`` only returns once the
    # server sends something on the stream, so with the service's 30 s it would block a test for up to 30 s.
    with Emulator.in_thread(keepalive_interval=0.5) as emu:
        yield emu


@pytest.fixture
def namespace(emulator: Emulator | RemoteEmulator) -> Iterator[str]:
    """A fresh namespace name for this test (its data is cleared afterwards)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    yield name
    try:
        emulator.clear(name)
    except Exception:  # the data is unique to this test; a failed clean-up must not hide the test's result
        pass


class FirebaseAppFactory:
    """Makes firebase-admin apps on one namespace of the emulator and deletes them at teardown.

    ``make()`` gives an admin app (rules bypassed); ``make({"uid": "alice"})`` one whose requests the rules see
    with ``auth = {"uid": "alice"}``; ``make(None)`` an unauthenticated one.
    """

    def __init__(self, emulator: Emulator | RemoteEmulator, namespace: str) -> None:
        self.emulator = emulator
        self.namespace = namespace
        self.database_url = emulator.database_url(namespace)
        self._apps: list[firebase_admin.App] = []

    def make(self, auth_override: Mapping[str, Any] | None = MISSING) -> firebase_admin.App:
        options: dict[str, Any] = {"databaseURL": self.database_url}
        if auth_override is not MISSING:
            options["databaseAuthVariableOverride"] = dict(auth_override) if auth_override is not None else None
        app = firebase_admin.initialize_app(AnonymousCredentials(), options, name=f"test-{uuid.uuid4().hex}")
        self._apps.append(app)
        return app

    def load_rules(self, rules: str | Path | Mapping[str, Any]) -> None:
        """Load rules (text with comments, a file, or the parsed ``{"rules": ...}``) into this namespace."""
        self.emulator.load_rules(rules, self.namespace)

    def close(self) -> None:
        for app in self._apps:
            firebase_admin.delete_app(app)
        self._apps.clear()


@pytest.fixture
def firebase_app_factory(emulator: Emulator | RemoteEmulator, namespace: str) -> Iterator[FirebaseAppFactory]:
    """A :class:`FirebaseAppFactory` for this test's namespace; its apps are deleted after the test."""
    factory = FirebaseAppFactory(emulator, namespace)
    yield factory
    factory.close()
