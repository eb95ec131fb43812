"""Sans-I/O units of device trust: identity keys, fingerprints, comparison codes, the session handshake, sealed
frames; and the key stores (the file one on a temporary folder)."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from core.errors import HandshakeError, KeyStoreError, PeerVersionError, ProtocolError
from core.protocol.handshake import VERSION, InitiatorHandshake, ResponderHandshake, refusal, version_refusal
from core.protocol.identity import DeviceKey, comparison_code, fingerprint, parse_key_text, trust_of
from core.protocol.sealing import OVERHEAD_BYTES, FrameSealer, sealed_frame_limit
from core.trust.store import FileKeyStore, MemoryKeyStore

IDS = {"user_id": "alice", "session_id": "S" * 22}


def handshake(laptop: DeviceKey, desktop: DeviceKey, session_id: str = "S" * 22):
    ids = {**IDS, "session_id": session_id}
    init = InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **ids)
    resp = ResponderHandshake(desktop, init.hello(), own_id="desktop", peer_id="laptop", **ids)
    confirm, i_keys = init.on_answer(resp.answer())
    r_keys = resp.on_confirm(confirm)
    return init, resp, i_keys, r_keys


def sealers(i_keys, r_keys, session_id: str = "S" * 22):
    return (
        FrameSealer(i_keys, session_id=session_id, own_id="laptop", peer_id="desktop"),
        FrameSealer(r_keys, session_id=session_id, own_id="desktop", peer_id="laptop"),
    )


# ------------------------------------------------------------------------------------------------------ identity
def test_fingerprint_is_short_readable_and_stable():
    key = DeviceKey.generate()
    fp = fingerprint(key.public)
    assert fp == key.fingerprint and len(fp) == 19 and fp.count("-") == 3
    assert fp != DeviceKey.generate().fingerprint


def test_both_devices_compute_the_same_comparison_code():
    a, b, c = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    code = comparison_code(a.public, b.public)
    assert code == comparison_code(b.public, a.public)
    assert len(code.replace(" ", "")) == 12 and code.replace(" ", "").isdigit()
    assert code != comparison_code(a.public, c.public)


def test_key_text_round_trip_and_bad_keys():
    key = DeviceKey.generate()
    assert parse_key_text(key.public_text) == key.public
    for bad in (None, 3, "", "x" * 44, base64.b64encode(b"\0" * 31).decode() + "==="):
        with pytest.raises(ValueError):
            parse_key_text(bad)


def test_trust_decisions():
    store = MemoryKeyStore()
    key, other = DeviceKey.generate().public_text, DeviceKey.generate().public_text
    assert store.trust("desktop", key) == "new"
    store.remember("desktop", key, "desktop")
    assert store.trust("desktop", key) == "trusted"
    assert store.trust("desktop", other) == "key-changed"
    assert store.trust("desktop", None) == "key-changed"
    with pytest.raises(ValueError, match="forget it first"):
        store.remember("desktop", other)
    store.verify("desktop", key)
    assert store.trust("desktop", key) == "verified"
    store.remember("desktop", key)  # remembering again keeps the verification
    assert store.trust("desktop", key) == "verified"
    assert store.forget("desktop") and not store.forget("desktop")
    assert store.trust("desktop", other) == "new"
    assert trust_of(None, None) == "new"


# ------------------------------------------------------------------------------------------------------ handshake
def test_handshake_gives_both_sides_matching_keys_and_each_others_identity():
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    init, resp, i_keys, r_keys = handshake(laptop, desktop)
    assert init.peer_key == desktop.public and resp.peer_key == laptop.public
    assert i_keys.send == r_keys.receive and i_keys.receive == r_keys.send and i_keys.send != i_keys.receive


def test_every_session_has_fresh_keys():
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    _, _, first, _ = handshake(laptop, desktop)
    _, _, second, _ = handshake(laptop, desktop)
    assert first.send != second.send and first.receive != second.receive


def test_an_answer_not_signed_by_the_key_it_names_is_refused():
    laptop, desktop, mallory = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    init = InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **IDS)
    answer = base64.b64decode(ResponderHandshake(mallory, init.hello(), own_id="desktop", peer_id="laptop", **IDS).answer())
    forged = base64.b64encode(desktop.public + answer[32:]).decode()  # desktop's key, mallory's signature
    with pytest.raises(HandshakeError):
        init.on_answer(forged)


def test_an_answer_from_another_session_is_refused():
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    init = InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **IDS)
    other = {**IDS, "session_id": "T" * 22}
    resp = ResponderHandshake(desktop, init.hello(), own_id="desktop", peer_id="laptop", **other)
    with pytest.raises(HandshakeError):
        init.on_answer(resp.answer())


def test_a_confirmation_by_another_key_is_refused():
    laptop, desktop, mallory = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    # A database writer puts laptop's identity key beside its own fresh key into the hello; it cannot sign the
    # confirmation with laptop's key.
    own = InitiatorHandshake(mallory, own_id="laptop", peer_id="desktop", **IDS)
    hello = "2:" + base64.b64encode(laptop.public + base64.b64decode(own.hello().partition(":")[2])[32:]).decode()
    resp = ResponderHandshake(desktop, hello, own_id="desktop", peer_id="laptop", **IDS)
    assert resp.peer_key == laptop.public
    signed_by_mallory = base64.b64decode(resp.answer())
    with pytest.raises(HandshakeError):
        own.on_answer(base64.b64encode(signed_by_mallory).decode())  # its transcript names mallory's key
    with pytest.raises(HandshakeError):
        resp.on_confirm(base64.b64encode(mallory.sign(b"initiator" + b"x" * 32)).decode())
    with pytest.raises(HandshakeError):
        resp.on_confirm(own.hello())  # malformed: wrong size


@pytest.mark.parametrize("bad", [None, 12, "", "!!!", "A" * 500, base64.b64encode(b"x" * 10).decode()])
def test_malformed_handshake_messages_are_refused(bad):
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    with pytest.raises(HandshakeError):
        ResponderHandshake(desktop, bad, own_id="desktop", peer_id="laptop", **IDS)
    with pytest.raises(HandshakeError):
        InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **IDS).on_answer(bad)


def test_a_hello_of_another_version_says_which_device_to_update():
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    current = InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **IDS).hello()
    assert current.startswith(f"{VERSION}:")
    body = current.partition(":")[2]
    cases = [(body, "older", "on it", "outdated"),  # version 1 had no prefix
             (f"{VERSION + 1}:{body}", "newer", "on this device", "too-new")]
    for hello, age, where, reason in cases:
        with pytest.raises(PeerVersionError) as caught:
            ResponderHandshake(desktop, hello, own_id="desktop", peer_id="laptop", **IDS)
        assert age in str(caught.value) and where in str(caught.value)
        assert InitiatorHandshake.refused(version_refusal(caught.value)) == reason
    for bad in ("x:" + body, "99999:" + body, ":" + body):
        with pytest.raises(HandshakeError) as caught:
            ResponderHandshake(desktop, bad, own_id="desktop", peer_id="laptop", **IDS)
        assert not isinstance(caught.value, PeerVersionError)


def test_refusals():
    assert InitiatorHandshake.refused(refusal("key-changed")) == "key-changed"
    assert InitiatorHandshake.refused("refused:whatever") == "refused"
    assert InitiatorHandshake.refused("AAAA") is None
    with pytest.raises(ValueError):
        refusal("nope")


# ------------------------------------------------------------------------------------------------------ sealing
@pytest.fixture
def pair():
    _, _, i_keys, r_keys = handshake(DeviceKey.generate(), DeviceKey.generate())
    return sealers(i_keys, r_keys)


@pytest.mark.parametrize(
    "frame",
    [
        {"kind": "data", "seq": 1, "data": "hello ünïcode ✓"},
        {"kind": "data", "seq": 2, "data": "piece", "more": True},
        {"kind": "data", "seq": 3, "data": "", "confirm": True},
        {"kind": "binary", "seq": 4, "data": bytes(range(256))},  # the stream holds binary data as bytes
        {"kind": "signal", "seq": 5, "data": '{"sdp":"v=0"}'},
        {"kind": "close", "seq": 6, "data": "declined\nbusy"},
        {"kind": "ping", "seq": 3},
        {"kind": "pong", "seq": 3},
    ],
)
def test_sealed_frames_open_on_the_other_side_and_show_no_plaintext(pair, frame):
    laptop, desktop = pair
    stored = laptop.seal(frame)
    assert desktop.open(stored) == frame
    assert set(stored) - {"kind", "seq", "data", "confirm", "more"} == set()
    if frame.get("data"):
        data = frame["data"]
        assert (data if isinstance(data, str) else base64.b64encode(data).decode()) not in stored["data"]


def test_binary_frames_are_not_base64_encoded_twice(pair):
    laptop, _ = pair
    raw = os.urandom(3000)
    stored = laptop.seal({"kind": "binary", "seq": 1, "data": base64.b64encode(raw).decode()})
    assert len(base64.b64decode(stored["data"])) == len(raw) + OVERHEAD_BYTES  # a format byte and the tag


def test_tampered_replayed_moved_and_reflected_frames_fail(pair):
    laptop, desktop = pair
    stored = laptop.seal({"kind": "data", "seq": 7, "data": "secret"})
    flipped = bytearray(base64.b64decode(stored["data"]))
    flipped[0] ^= 1
    cases = [
        {**stored, "data": base64.b64encode(bytes(flipped)).decode()},  # tampered
        {**stored, "seq": 8},  # moved to another position
        {**stored, "kind": "signal"},  # another kind
        {**stored, "confirm": True},  # a flag added
        {**stored, "more": True},
    ]
    for case in cases:
        with pytest.raises(ProtocolError, match="failed authentication"):
            desktop.open(case)
    with pytest.raises(ProtocolError):
        laptop.open(stored)  # reflected back to its sender
    _, _, i2, r2 = handshake(DeviceKey.generate(), DeviceKey.generate())
    _, other_desktop = sealers(i2, r2)
    with pytest.raises(ProtocolError):
        other_desktop.open(stored)  # moved to another session
    _, same_keys_other_session = sealers(*handshake(DeviceKey.generate(), DeviceKey.generate())[2:], session_id="T" * 22)
    with pytest.raises(ProtocolError):
        same_keys_other_session.open(stored)


def test_the_session_id_is_bound_even_with_the_same_keys():
    _, _, i_keys, r_keys = handshake(DeviceKey.generate(), DeviceKey.generate())
    laptop, _ = sealers(i_keys, r_keys)
    _, elsewhere = sealers(i_keys, r_keys, session_id="T" * 22)
    with pytest.raises(ProtocolError):
        elsewhere.open(laptop.seal({"kind": "data", "seq": 1, "data": "x"}))


@pytest.mark.parametrize("bad", [{}, {"kind": "ack", "seq": 1}, {"kind": "data", "seq": True}, {"kind": "data", "seq": 1, "data": 5}, {"kind": "data", "seq": 1, "data": "***"}, {"kind": "data", "seq": 1, "confirm": "yes", "data": ""}])
def test_malformed_sealed_frames_are_protocol_errors(pair, bad):
    with pytest.raises(ProtocolError):
        pair[1].open(bad)


def test_acknowledgement_tags(pair):
    laptop, desktop = pair
    tag = laptop.ack_tag(5)
    assert desktop.check_ack(5, tag) == 5
    for seq, bad_tag in ((6, tag), (5, laptop.ack_tag(4)), (5, None), (True, tag), (5, "***")):
        with pytest.raises(ProtocolError):
            desktop.check_ack(seq, bad_tag)
    with pytest.raises(ProtocolError):
        laptop.check_ack(5, tag)


def test_sealed_frame_limit_fits_the_relay():
    limit = sealed_frame_limit(65536)
    assert limit % 4 == 0 and (limit + OVERHEAD_BYTES + 2) // 3 * 4 <= 65536
    _, _, i_keys, r_keys = handshake(DeviceKey.generate(), DeviceKey.generate())
    laptop, _ = sealers(i_keys, r_keys)
    assert len(laptop.seal({"kind": "data", "seq": 1, "data": "x" * limit})["data"]) <= 65536
    assert len(laptop.seal({"kind": "binary", "seq": 2, "data": "A" * limit})["data"]) <= 65536


# ------------------------------------------------------------------------------------------------------ key stores
def test_file_key_store_keeps_identity_and_devices_owner_only(tmp_path):
    folder = tmp_path / "keys"
    store = FileKeyStore(folder)
    identity = store.identity()
    key = DeviceKey.generate().public_text
    store.remember("desktop", key, "desktop")
    store.verify("desktop", key)
    again = FileKeyStore(folder)
    assert again.identity().public == identity.public
    assert again.trust("desktop", key) == "verified" and again.get("desktop").label == "desktop"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("identity.key", "devices.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert again.forget("desktop") and FileKeyStore(folder).get("desktop") is None


def test_file_key_store_refuses_damaged_files_and_keeps_them(tmp_path):
    store = FileKeyStore(tmp_path)
    (tmp_path / "identity.key").write_text("not a key")
    with pytest.raises(KeyStoreError, match="identity.key"):
        store.identity()
    assert (tmp_path / "identity.key").read_text() == "not a key"
    (tmp_path / "devices.json").write_text("{broken")
    with pytest.raises(KeyStoreError, match="devices.json"):
        store.known()
    with pytest.raises(KeyStoreError):
        store.remember("desktop", DeviceKey.generate().public_text)
    assert (tmp_path / "devices.json").read_text() == "{broken"
