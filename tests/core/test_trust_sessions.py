"""Trusted, end-to-end encrypted sessions between two managers on the emulator with the real rules: no plaintext in
any database write, trust on first use and changed keys, the accept callable (accept, decline, abandon,
time-out), and what a database writer without a device key can and cannot do."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import random
import zlib
from pathlib import Path

import pytest

from core import events as ev
from core.errors import (
    ConnectionDeclinedError,
    PeerKeyChangedError,
    PeerNotVerifiedError,
    PeerTimeoutError,
)
from core.files import FileTransfers
from core.manager import FirebasePeerConnectionManager
from core.peer import ConnectionRequest, PeerInfo
from core.protocol.handshake import InitiatorHandshake
from core.protocol.identity import DeviceKey, comparison_code
from core.protocol.negotiation import make_request, new_session_id
from core.protocol.records import negotiation_path
from core.relay.firebase import Database
from core.trust.store import MemoryKeyStore

from test_relay import FAST, RULES, USER, Recorder
from relay_support import wait_for

OPTIONS = dataclasses.replace(FAST, close_timeout=0.5, slow_after=0.3, accept_timeout=8.0)


@pytest.fixture
async def world(firebase_app_factory):
    """``make(device_id, keys=None, accept=None, options=OPTIONS)`` starts a manager; ``admin`` is a database handle
    with every right (a leaked service-account key); everything stops at the end."""
    firebase_app_factory.load_rules(RULES)
    managers: list[FirebasePeerConnectionManager] = []
    admin = Database(firebase_app_factory.make())

    async def make(device_id, *, keys=None, accept=None, options=OPTIONS):
        app = firebase_app_factory.make({"uid": USER})
        m = FirebasePeerConnectionManager(
            USER, PeerInfo(device_id, device_id.title()), app=app, options=options, accept=accept, keys=keys
        )
        managers.append(m)
        await m.start()
        return m

    make.admin = admin
    yield make
    for m in managers:
        await m.stop()
    await admin.close()


async def online(a, b):
    await wait_for(lambda: a._view.get(b.device.id) is not None, what=f"{b.device.id} online")


def incoming_of(manager) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    manager.events.on(ev.INCOMING_CONNECTION, lambda e: fut.done() or fut.set_result(e.connection))
    return fut


# --------------------------------------------------------------------------------------------------- no plaintext
def strings_in(value, out):
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            out.append(str(k))
            strings_in(v, out)
    elif isinstance(value, list):
        for v in value:
            strings_in(v, out)
    return out


def encodings(secret: bytes) -> list[str]:
    """How ``secret`` (or any 24-byte run of it) could appear in a database string: raw, base64 at each of the
    three alignments, hex in both cases."""
    found = []
    piece = secret[:24]
    found.append(piece.decode("latin-1"))
    for shift in range(3):
        b64 = base64.b64encode(secret[shift:]).decode()
        found.append(b64[4:36])  # whole groups, away from the padded end
    found += [piece.hex(), piece.hex().upper()]
    return found


SECRET_PHRASE = "the spare key is under the blue flowerpot by the back door"


def chat_like(size: int, *, secret: str, seed: int = 1) -> str:
    """Text that compresses as chat does: sentences of common words in a seeded order, ``secret`` among them."""
    rng = random.Random(seed)
    words = ("ok I will call you when we get to the station do not forget to bring the charger and the tickets "
             "are on the table see you soon love").split()
    out = [secret]
    while sum(map(len, out)) < size:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 15))).capitalize() + rng.choice(".!?"))
        if rng.random() < 0.05:
            out.append(secret)
    return " ".join(out)[:size]


async def test_no_write_to_the_database_holds_plaintext_during_a_chat_and_a_relay_file_transfer(world, tmp_path):
    admin = world.admin
    writes: list[tuple[str, str, object]] = []
    watcher = await admin.listen("/", lambda kind, path, data: writes.append((kind, path, data)))
    try:
        laptop, phone = await world("laptop"), await world("phone")
        await online(laptop, phone)
        incoming = incoming_of(phone)
        conn = await laptop.connect_to_peer("phone", confirm_data_receival=True)
        other = await asyncio.wait_for(incoming, 10)
        assert conn.transport == "relay"
        text = "the launch code is " + os.urandom(24).hex()
        blob = os.urandom(5000)
        got = Recorder(other.events, ev.DATA, ev.BINARY)
        await conn.send(text)
        await conn.send_bytes(blob)
        long_text = "é" + os.urandom(60_000).hex()  # several frames
        await conn.send(long_text)
        # Chat-like text, compressed before it is sealed (the default): compressed, sealed text shows nothing either.
        deflated_before = conn.stats["sealed_deflated"]
        chat = chat_like(20_000, secret=SECRET_PHRASE)
        await conn.send(chat)
        assert conn.stats["sealed_deflated"] > deflated_before  # this message did go compressed
        await wait_for(lambda: len(got.items) == 4, what="four messages")
        assert got.items == [
            (ev.DATA, ev.Data(text)), (ev.BINARY, ev.BinaryData(blob)), (ev.DATA, ev.Data(long_text)),
            (ev.DATA, ev.Data(chat)),
        ]

        content = os.urandom(300_000)
        source = tmp_path / "secret-plans.bin"
        source.write_bytes(content)
        received = tmp_path / "in"
        sender, receiver = FileTransfers(conn), FileTransfers(other, download_dir=received)
        receiver.events.on(ev.INCOMING_TRANSFER, lambda e: asyncio.ensure_future(e.offer.accept()))
        transfer = await sender.send_files([source])
        await asyncio.wait_for(transfer.wait(), 60)
        assert (received / "secret-plans.bin").read_bytes() == content
        notes = tmp_path / "notes.txt"
        notes.write_text(chat_like(200_000, secret=SECRET_PHRASE, seed=2))
        transfer = await sender.send_files([notes])
        await asyncio.wait_for(transfer.wait(), 60)
        assert (received / "notes.txt").read_text() == notes.read_text()
        await conn.disconnect()
    finally:
        await watcher.close()

    everything = "\n".join(strings_in([[k, p, d] for k, p, d in writes], []))
    assert "s0000000001" in everything  # the watcher saw the session's frames
    secrets = [text.encode(), blob, long_text.encode()[2:], content[100_000:100_100], content[:100]]
    secrets += [SECRET_PHRASE.encode(), chat[:200].encode(), chat[10_000:10_100].encode()]
    secrets += [notes.read_bytes()[:100], notes.read_bytes()[150_000:150_100]]
    for secret in secrets:
        for shown in encodings(secret):
            assert shown not in everything
    # Nor does its DEFLATE stream (the body of its one frame) sit there compressed but unsealed.
    for shown in encodings(zlib.compress(chat.encode(), 1, -15)[:60]):
        assert shown not in everything
    assert "secret-plans" not in everything  # file names travel inside the session too
    assert "notes.txt" not in everything


# --------------------------------------------------------------------------------------------------- trust
async def test_first_session_remembers_keys_and_both_sides_compute_the_same_comparison_code(world):
    requests: list[ConnectionRequest] = []
    laptop, phone = await world("laptop"), await world("phone", accept=lambda r: requests.append(r) or True)
    await online(laptop, phone)
    assert laptop.trust_of("phone") == "new"
    incoming = incoming_of(phone)
    conn = await laptop.connect_to_peer("phone")
    await asyncio.wait_for(incoming, 10)
    (request,) = requests
    assert request.peer == PeerInfo("laptop", "Laptop") and request.trust == "new"
    assert request.fingerprint == laptop.fingerprint and request.key == laptop.public_key
    assert laptop.trust_of("phone") == "trusted" and phone.trust_of("laptop") == "trusted"
    assert laptop.comparison_code(phone.public_key) == phone.comparison_code(laptop.public_key)
    assert laptop.comparison_code(phone.public_key) == comparison_code(laptop.public_key, phone.public_key)
    laptop.verify_device("phone", phone.public_key)
    assert laptop.trust_of("phone") == "verified"
    await conn.disconnect()
    conn = await laptop.connect_to_peer("phone")
    assert requests[-1].trust == "trusted"
    await conn.disconnect()


async def test_a_changed_key_is_refused_on_the_initiating_side(world):
    laptop_keys = MemoryKeyStore()
    laptop, phone = await world("laptop", keys=laptop_keys), await world("phone")
    await online(laptop, phone)
    await (await laptop.connect_to_peer("phone")).disconnect()
    await phone.stop()
    impostor = await world("phone", keys=MemoryKeyStore())  # same id, another key
    await wait_for(lambda: any(s.key == impostor.public_key for s in laptop._view.known), what="the new record")
    assert laptop.trust_of("phone") == "key-changed"
    changed = Recorder(laptop.events, ev.PEER_KEY_CHANGED)
    incoming = Recorder(impostor.events, ev.INCOMING_CONNECTION)
    with pytest.raises(PeerKeyChangedError, match="key of Phone changed") as info:
        await laptop.connect_to_peer("phone")
    assert info.value.presented == impostor.fingerprint and info.value.device_id == "phone"
    assert changed.of(ev.PEER_KEY_CHANGED)[0].presented == impostor.fingerprint
    await asyncio.sleep(0.3)
    assert incoming.items == []  # nothing reached the other side's application
    assert laptop.forget_device("phone")
    await (await laptop.connect_to_peer("phone")).disconnect()
    assert laptop.trust_of("phone") == "trusted"


async def test_a_changed_key_is_refused_on_the_receiving_side(world):
    laptop, phone = await world("laptop"), await world("phone")
    await online(laptop, phone)
    await (await laptop.connect_to_peer("phone")).disconnect()
    await laptop.stop()
    reinstalled = await world("laptop", keys=MemoryKeyStore())
    await online(reinstalled, phone)
    changed = Recorder(phone.events, ev.PEER_KEY_CHANGED, ev.INCOMING_CONNECTION)
    with pytest.raises(ConnectionDeclinedError, match="remembers another key"):
        await reinstalled.connect_to_peer("phone")
    await wait_for(lambda: changed.items, what="the key-changed event")
    assert [n for n, _ in changed.items] == [ev.PEER_KEY_CHANGED]


async def test_require_verified_refuses_unverified_devices_both_ways(world):
    strict = dataclasses.replace(OPTIONS, require_verified=True)
    laptop, phone = await world("laptop", options=strict), await world("phone")
    await online(laptop, phone)
    with pytest.raises(PeerNotVerifiedError, match="not verified"):
        await laptop.connect_to_peer("phone")
    await online(phone, laptop)
    with pytest.raises(ConnectionDeclinedError, match="verified"):
        await phone.connect_to_peer("laptop")
    laptop.verify_device("phone", phone.public_key)
    await (await laptop.connect_to_peer("phone")).disconnect()


# --------------------------------------------------------------------------------------------------- accepting
async def test_connect_returns_only_after_acceptance_and_nothing_is_handed_out_before(world):
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    asked = asyncio.Event()

    async def accept(request):
        asked.set()
        return await answer

    laptop, phone = await world("laptop"), await world("phone", accept=accept)
    await online(laptop, phone)
    seen = Recorder(phone.events, ev.INCOMING_CONNECTION)
    waiting = Recorder(laptop.events, ev.AWAITING_ACCEPT, ev.SLOW, ev.RECOVERED)
    connecting = asyncio.ensure_future(laptop.connect_to_peer("phone"))
    await asyncio.wait_for(asked.wait(), 10)
    await wait_for(lambda: waiting.of(ev.SLOW), what="the slow event")
    assert not connecting.done() and seen.items == [] and phone.connections == ()
    assert waiting.of(ev.AWAITING_ACCEPT)[0].peer.id == "phone"
    answer.set_result(True)
    conn = await asyncio.wait_for(connecting, 10)
    await wait_for(lambda: seen.items, what="incoming_connection")
    assert waiting.of(ev.RECOVERED)
    await conn.disconnect()


async def test_a_decline_raises_from_connect_to_peer(world):
    laptop, phone = await world("laptop"), await world("phone", accept=lambda request: False)
    await online(laptop, phone)
    seen = Recorder(phone.events, ev.INCOMING_CONNECTION)
    with pytest.raises(ConnectionDeclinedError, match="Phone declined") as info:
        await laptop.connect_to_peer("phone")
    assert info.value.label == "Phone"
    assert seen.items == [] and laptop.connections == () and laptop.trust_of("phone") == "new"


@pytest.mark.parametrize("older", ["laptop", "phone"])
async def test_devices_of_different_session_versions_refuse_saying_which_to_update(world, monkeypatch, older):
    """The requesting device speaks an older (or a newer) session protocol than the other: the other refuses before
    any key is derived, and ``connect_to_peer`` says which device to update."""
    current = InitiatorHandshake.hello
    other = (lambda self: current(self).partition(":")[2]) if older == "laptop" else \
        (lambda self: "3:" + current(self).partition(":")[2])
    monkeypatch.setattr(InitiatorHandshake, "hello", other)
    laptop, phone = await world("laptop"), await world("phone")
    await online(laptop, phone)
    seen = Recorder(phone.events, ev.INCOMING_CONNECTION)
    where = "Update peerchat here" if older == "laptop" else "Update peerchat on Phone"
    with pytest.raises(ConnectionDeclinedError, match=where) as info:
        await laptop.connect_to_peer("phone")
    assert info.value.label == "Phone"
    assert seen.items == [] and laptop.connections == () and phone.connections == ()
    assert phone.trust_of("laptop") == "new"  # nothing remembered from a session that never opened


async def test_an_abandoned_request_disappears_from_the_receiver(world):
    cancelled = asyncio.Event()
    asked = asyncio.Event()

    async def accept(request):
        asked.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    laptop, phone = await world("laptop"), await world("phone", accept=accept)
    await online(laptop, phone)
    connecting = asyncio.ensure_future(laptop.connect_to_peer("phone"))
    await asyncio.wait_for(asked.wait(), 10)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    await asyncio.wait_for(cancelled.wait(), 10)
    assert phone.connections == ()
    assert await world.admin.get(f"relay/sessions/{USER}") is None


async def test_acceptance_has_its_own_time_out(world):
    opts = dataclasses.replace(OPTIONS, accept_timeout=0.8)

    async def never(request):
        await asyncio.sleep(60)

    laptop, phone = await world("laptop", options=opts), await world("phone", accept=never)
    await online(laptop, phone)
    with pytest.raises(PeerTimeoutError, match="did not accept the session") as info:
        await laptop.connect_to_peer("phone")
    assert info.value.what == "acceptance of the session"


# --------------------------------------------------------------------------------------------------- a database writer
async def test_a_writer_without_laptops_key_cannot_open_a_session_as_laptop(world):
    asked: list[ConnectionRequest] = []
    laptop, phone = await world("laptop"), await world("phone", accept=lambda r: asked.append(r) or True)
    await online(laptop, phone)
    await (await laptop.connect_to_peer("phone")).disconnect()
    # The writer knows laptop's public key (it is in the presence record), not its private key.
    mallory = DeviceKey.generate()
    session_id = new_session_id()
    own = InitiatorHandshake(mallory, user_id=USER, session_id=session_id, own_id="laptop", peer_id="phone")
    version, _, body = own.hello().partition(":")
    hello = f"{version}:" + base64.b64encode(base64.b64decode(laptop.public_key) + base64.b64decode(body)[32:]).decode()
    await world.admin.set(negotiation_path(USER, "phone"), make_request("laptop", session_id, hello))
    answer = None
    for _ in range(200):
        answer = await world.admin.get(f"relay/sessions/{USER}/{session_id}/laptop/handshake")
        if answer:
            break
        await asyncio.sleep(0.02)
    assert answer, "phone answers the hello"
    with pytest.raises(Exception):
        own.on_answer(answer)  # signed over laptop's key, not mallory's: useless to the writer
    # Its best try at a confirmation: signed with its own key.
    await world.admin.set(f"relay/sessions/{USER}/{session_id}/phone/handshake",
                          base64.b64encode(mallory.sign(b"initiator" + b"\0" * 32)).decode())
    await asyncio.sleep(0.5)
    assert len(asked) == 1 and phone.connections == ()  # only laptop's real session was ever asked about


async def test_forged_tampered_and_replayed_frames_are_dropped_and_signals_cannot_be_injected(world):
    laptop, phone = await world("laptop"), await world("phone")
    await online(laptop, phone)
    incoming = incoming_of(phone)
    conn = await laptop.connect_to_peer("phone", confirm_data_receival=True)
    other = await asyncio.wait_for(incoming, 10)
    signals: list[dict] = []
    other.set_signal_handler(signals.append)
    errors = Recorder(other.events, ev.PROTOCOL_ERROR, ev.DATA)
    inbox = f"relay/sessions/{USER}/{conn.session_id}/phone"
    await conn.send("first")
    await wait_for(lambda: errors.of(ev.DATA), what="the first message")
    # What a watcher of the database captured: the sealed form of that frame (sealing is deterministic).
    seq = conn._stream.next_seq - 1
    frame = conn._sealer.seal({"kind": "data", "seq": seq, "data": "first", "confirm": True})
    ts = {".sv": "timestamp"}
    base = conn._stream.next_seq + 5
    forged = [
        # a plaintext signal, as a writer redirecting the WebRTC link would write it
        {"kind": "signal", "seq": base, "data": '{"type":"offer","sdp":"a=fingerprint:sha-256 AA"}'},
        # a captured sealed frame replayed at another position
        {**frame, "seq": base + 1},
        # the same, its ciphertext altered
        {**frame, "data": ("A" if frame["data"][0] != "A" else "B") + frame["data"][1:]},
    ]
    for i, value in enumerate(forged):
        key = f"s{value['seq']:010d}"
        await world.admin.set(f"{inbox}/messages/{key}", {**value, "updatedWhen": ts})
    await wait_for(lambda: len(errors.of(ev.PROTOCOL_ERROR)) >= 3, what="three protocol errors")
    assert all("failed authentication" in str(e.error) for e in errors.of(ev.PROTOCOL_ERROR))
    assert [d.data for d in errors.of(ev.DATA)] == ["first"]
    assert not [s for s in signals if s.get("type") == "offer"]  # only the peer's own signals got through
    # A forged acknowledgement is dropped too: the session still works.
    await world.admin.set(f"relay/sessions/{USER}/{conn.session_id}/laptop/acknowledgement",
                          {"peerId": "phone", "seq": 999, "tag": "A" * 22 + "==", "updatedWhen": ts})
    await conn.send("second")
    await wait_for(lambda: len(errors.of(ev.DATA)) == 2, what="the second message")
    await conn.disconnect()


async def test_a_database_writer_cannot_redirect_the_direct_link(world):
    """A writer with every right on the database (a leaked service-account key) tries to redirect a real direct
    upgrade to itself: it writes a direct-link offer and answer naming its own listener and certificate into both
    inboxes while the session upgrades, at the sequence numbers the signals use. Its frames fail authentication, no
    device ever dials it, and the link that opens is the real one between the two devices."""
    import json

    from core.direct.certs import session_certificate
    from core.protocol.direct import DirectSignal

    options = dataclasses.replace(OPTIONS, direct=True, webrtc=False, addresses=("127.0.0.1",),
                                  retransmit_interval=0.3)
    laptop, phone = await world("laptop", options=options), await world("phone", options=options)
    await online(laptop, phone)
    dialled: list[object] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(trap, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        cert = session_certificate()
        ts = {".sv": "timestamp"}
        admin = world.admin

        async def inject(session_id: str, inbox_of: str, kind: str) -> None:
            signal = DirectSignal(1, kind, (("127.0.0.1", port),), cert.der).to_json()
            messages = await admin.get(f"relay/sessions/{USER}/{session_id}/{inbox_of}/messages") or {}
            # Over every signal frame already waiting there, and at the next few sequence numbers.
            seqs = {int(key[1:]) for key in messages if key.startswith("s")} | set(range(1, 6))
            for seq in sorted(seqs):
                await admin.set(f"relay/sessions/{USER}/{session_id}/{inbox_of}/messages/s{seq:010d}",
                                {"kind": "signal", "seq": seq, "data": json.dumps(signal), "updatedWhen": ts})

        errors_at: dict[str, Recorder] = {}
        incoming = incoming_of(phone)
        connecting = asyncio.ensure_future(laptop.connect_to_peer("phone", confirm_data_receival=True))
        # The writer sees the session request and strikes as soon as the session exists.
        session_id = None
        async with asyncio.timeout(10):  # the request, or the session's data once the request was cleared
            while session_id is None:
                value = await admin.get(negotiation_path(USER, "phone"))
                sessions = await admin.get(f"relay/sessions/{USER}")
                if isinstance(value, dict) and value.get("sessionId"):
                    session_id = value["sessionId"]
                elif isinstance(sessions, dict) and sessions:
                    session_id = next(iter(sessions))
                else:
                    await asyncio.sleep(0.01)
        await inject(session_id, "phone", "offer")
        await inject(session_id, "laptop", "answer")
        conn = await asyncio.wait_for(connecting, 15)
        other = await asyncio.wait_for(incoming, 15)
        errors_at["phone"] = Recorder(other.events, ev.PROTOCOL_ERROR)
        errors_at["laptop"] = Recorder(conn.events, ev.PROTOCOL_ERROR)
        # Once more while the session runs, so that both sides certainly process forged signals.
        await inject(conn.session_id, "phone", "offer")
        await inject(conn.session_id, "laptop", "answer")
        await wait_for(lambda: errors_at["phone"].items and errors_at["laptop"].items, what="the forged frames")
        for recorder in errors_at.values():
            assert all("failed authentication" in str(e.error) for e in recorder.of(ev.PROTOCOL_ERROR))
        await wait_for(lambda: conn.transport == "direct" and other.transport == "direct", what="the direct link")
        got = Recorder(other.events, ev.DATA)
        await conn.send("over the real link")
        await wait_for(lambda: got.of(ev.DATA), what="the message")
        assert [d.data for d in got.of(ev.DATA)] == ["over the real link"]
        assert dialled == []  # nobody ever dialled the writer's listener
        await conn.disconnect()
    finally:
        server.close()
        await server.wait_closed()
