"""Tests for core's public face: ``__all__`` is exactly the public surface, and importing core loads no Textual."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import core
from core import errors, events

INTERFACES = {
    "DeviceStatus",
    "FirebasePeerConnectionManager",
    "IceServer",
    "ManagerOptions",
    "PeerConnection",
    "PeerConnectionManager",
    "PeerInfo",
    "WebRTCUpgrader",
    "webrtc_upgrader",
    "FileEntry",
    "FileTransfers",
    "IncomingOffer",
    "Transfer",
    "TransferState",
}


def _error_names():
    return {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, errors.PeerchatError)}


def _payload_names():
    return {
        n
        for n, o in vars(events).items()
        if inspect.isclass(o) and dataclasses.is_dataclass(o) and o.__module__ == events.__name__
    }


def test_all_is_exactly_the_interfaces_errors_and_event_payloads():
    assert set(core.__all__) == INTERFACES | _error_names() | _payload_names()
    assert len(core.__all__) == len(set(core.__all__))


def test_every_exported_name_resolves_to_the_defining_object():
    for name in core.__all__:
        obj = getattr(core, name)
        assert obj is getattr(errors, name, None) or obj is getattr(events, name, None) or name in INTERFACES


def test_event_payloads_are_frozen_dataclasses():
    for name in _payload_names():
        assert getattr(events, name).__dataclass_params__.frozen, name


def test_every_error_has_a_docstring_for_people():
    for name in _error_names():
        assert (getattr(errors, name).__doc__ or "").strip(), name


def test_file_transfers_are_exported_from_their_modules():
    from core import files, transfer

    for name in ("FileTransfers", "IncomingOffer", "Transfer", "TransferState"):
        assert getattr(core, name) is getattr(files, name)
    assert core.FileEntry is transfer.FileEntry


def test_import_core_loads_no_textual():
    code = "import sys, core; bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'peerchat'))); print(bad); sys.exit(1 if bad else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
