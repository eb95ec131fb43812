"""Tests for core's public face: ``__all__`` is exactly the public surface, names resolve to their definitions, and
importing core loads no Textual (what it loads at all is in test_layers.py)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import core
from core import errors, events, peer
from core.files import transfers

INTERFACES = {
    "ConnectionRequest",
    "FileKeyStore",
    "KeyStore",
    "KnownDevice",
    "MemoryKeyStore",
    "Trust",
    "comparison_code",
    "fingerprint",
    "DeviceStatus",
    "FirebasePeerConnectionManager",
    "IceServer",
    "ManagerOptions",
    "PeerConnection",
    "PeerConnectionManager",
    "PeerInfo",
    "Route",
    "Transport",
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


PAYLOAD_MODULES = (events, peer, transfers)


def _payloads():
    """Every event payload class, from the modules that define them (connection and manager events, the upgrade's
    failure beside PeerConnection, file transfer events beside FileTransfers)."""
    return {
        n: o
        for module in PAYLOAD_MODULES
        for n, o in vars(module).items()
        if inspect.isclass(o) and dataclasses.is_dataclass(o) and o.__module__ == module.__name__
        and (module is not peer or n == "UpgradeFailed")
        and (module is not transfers or n.startswith(("Transfer", "Incoming")) and n not in INTERFACES)
    }


def _payload_names():
    return set(_payloads())


def test_all_is_exactly_the_interfaces_errors_and_event_payloads():
    assert set(core.__all__) == INTERFACES | _error_names() | _payload_names()
    assert len(core.__all__) == len(set(core.__all__))


def test_every_exported_name_resolves_to_the_defining_object():
    for name in core.__all__:
        obj = getattr(core, name)
        assert obj is getattr(errors, name, None) or obj is _payloads().get(name) or name in INTERFACES


def test_event_payloads_are_frozen_dataclasses():
    for name, payload in _payloads().items():
        assert payload.__dataclass_params__.frozen, name


def test_every_error_has_a_docstring_for_people():
    for name in _error_names():
        assert (getattr(errors, name).__doc__ or "").strip(), name


def test_file_transfers_are_exported_from_their_modules():
    from core.files import protocol

    for name in ("FileTransfers", "IncomingOffer", "Transfer", "TransferState"):
        assert getattr(core, name) is getattr(transfers, name)
    assert core.FileEntry is protocol.FileEntry


def test_payloads_are_the_documented_ones():
    assert _payload_names() == {
        "AwaitingAccept", "PeerKeyChanged",
        "BinaryData", "ConnectionClosed", "Data", "IncomingConnection", "Latency", "LinkChanged", "PeersChanged",
        "ProtocolErrorEvent", "Recovered", "RelayRestored", "RelayUnavailable", "Slow", "UpgradeFailed",
        "IncomingTransfer", "TransferProgress", "TransferFileDone", "TransferFinished", "TransferFailed",
    }


