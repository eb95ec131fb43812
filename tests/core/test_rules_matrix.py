"""The security rules (firebase/database.rules.json) against the emulator: every operation core performs is allowed,
and hostile operations (other users, unauthenticated, wrong types, missing/extra fields, oversized data, stale
timestamps, deletes of others' data) are denied without side effects."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PermissionDeniedError
from core.relay.firebase import Database
from core.protocol.negotiation import make_request
from core.protocol.records import heartbeat_record

RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
TS = {".sv": "timestamp"}
SID = "abcdefghijklmnopqrstuv"
KEY = "Y9kKQJRxfTRpRzzIT/FgsnQvxqOfKLEndOIXdtVmvak="  # an Ed25519 public key, base64
HELLO = "A" * 88  # the handshake's first message: two 32-byte keys, base64
SESSION = f"relay/sessions/alice/{SID}"
INBOX = f"{SESSION}/laptop"
STALE = 1_000_000  # a timestamp from 1970


def frame(kind="data", seq=1, data="hello", **extra):
    value = {"kind": kind, "seq": seq, "updatedWhen": TS, **extra}
    if data is not None:
        value["data"] = data
    return value


def ack(peer="phone", seq=3, **extra):
    return {"peerId": peer, "seq": seq, "updatedWhen": TS, **extra}


SEED = {
    "presence": {"alice": {"laptop": {"label": "Laptop", "lastSeen": 1, "online": True}}},
    "relay": {
        "negotiation": {"alice": {"phone": {"initiator": "laptop", "sessionId": SID, "updatedWhen": 1}}},
        "sessions": {"alice": {SID: {"laptop": {"messages": {
            "s0000000001": {"kind": "data", "seq": 1, "data": "x", "updatedWhen": 1},
            # the first fragment of a longer message
            "s0000000005": {"kind": "data", "seq": 5, "data": "x", "more": True, "updatedWhen": 1},
        }}}}},
    },
}


@pytest.fixture
async def dbs(firebase_app_factory):
    firebase_app_factory.load_rules(RULES)
    made = {
        "admin": Database(firebase_app_factory.make()),
        "alice": Database(firebase_app_factory.make({"uid": "alice"})),
        "mallory": Database(firebase_app_factory.make({"uid": "mallory"})),
        "anon": Database(firebase_app_factory.make(None)),
    }
    await made["admin"].set("/", SEED)
    yield made
    for d in made.values():
        await d.close()


async def run(database: Database, op: str, path: str, value=None):
    if op == "get":
        return await database.get(path)
    if op == "set":
        return await database.set(path, value)
    if op == "update":
        return await database.update(path, value)
    if op == "delete":
        return await database.delete(path)
    if op == "listen":
        listener = await database.listen(path, lambda *e: None)
        await listener.close()
        return None
    raise AssertionError(op)


# Every kind of operation core performs, as alice on alice's data.
ALLOWED = [
    ("heartbeat", "set", "presence/alice/laptop", heartbeat_record("Laptop")),
    ("heartbeat with key", "set", "presence/alice/laptop", heartbeat_record("Laptop", key=KEY)),
    ("clean stop", "set", "presence/alice/laptop", heartbeat_record("Laptop", online=False)),
    ("read presence", "get", "presence/alice", None),
    ("listen presence", "listen", "presence/alice", None),
    ("negotiate", "set", "relay/negotiation/alice/phone", make_request("laptop", SID, HELLO)),
    ("handshake answer", "set", f"{SESSION}/laptop/handshake", "B" * 172),
    ("handshake refusal", "set", f"{SESSION}/laptop/handshake", "refused:key-changed"),
    ("read negotiation", "get", "relay/negotiation/alice/laptop", None),
    ("listen negotiation", "listen", "relay/negotiation/alice/laptop", None),
    ("clear negotiation", "delete", "relay/negotiation/alice/phone", None),
    ("listen inbox", "listen", INBOX, None),
    ("read inbox", "get", f"{INBOX}/messages", None),
    (
        "writer batch",
        "update",
        SESSION,
        {
            "phone/messages/s0000000001": frame("data", 1, "x" * 65536, confirm=True),
            "phone/messages/s0000000002": frame("binary", 2, "AAEC"),
            "phone/messages/s0000000003": frame("signal", 3, '{"type":"offer"}'),
            "phone/messages/s0000000004": frame("close", 4, ""),
            "phone/messages/s0000000005": frame("data", 5, "é" * 30000, more=True),
            "phone/messages/s0000000006": frame("binary", 6, "AAEC", more=True),
            "phone/messages/s0000000007": frame("binary", 7, "AAEC", more=False),
            "phone/messages/ping0000000001": frame("ping", 1, None),
            "phone/messages/pong0000000009": frame("pong", 9, None),
            "phone/acknowledgement": ack("laptop", 0, tag="A" * 22 + "=="),
            "laptop/messages/s0000000001": None,
        },
    ),
    ("end session", "delete", SESSION, None),
]


@pytest.mark.parametrize(("name", "op", "path", "value"), ALLOWED, ids=[a[0] for a in ALLOWED])
async def test_operations_core_performs_are_allowed(dbs, name, op, path, value):
    await run(dbs["alice"], op, path, value)


def _presence(**over):
    value = {"label": "Laptop", "lastSeen": TS, "online": True}
    value.update(over)
    return {k: v for k, v in value.items() if v is not ...}


def _negotiation(**over):
    value = {"initiator": "laptop", "sessionId": SID, "updatedWhen": TS}
    value.update(over)
    return {k: v for k, v in value.items() if v is not ...}


M = ...  # marks a field as missing

DENIED = [
    # another user's presence, negotiations and sessions: read and write
    ("other reads presence", "mallory", "get", "presence/alice", None),
    ("other reads a device", "mallory", "get", "presence/alice/laptop", None),
    ("other listens presence", "mallory", "listen", "presence/alice", None),
    ("other adds a device", "mallory", "set", "presence/alice/evil", _presence()),
    ("other overwrites presence", "mallory", "set", "presence/alice/laptop", _presence(online=False)),
    ("other deletes presence", "mallory", "delete", "presence/alice/laptop", None),
    ("other reads negotiations", "mallory", "get", "relay/negotiation/alice", None),
    ("other listens negotiation", "mallory", "listen", "relay/negotiation/alice/phone", None),
    ("other negotiates", "mallory", "set", "relay/negotiation/alice/phone", _negotiation()),
    ("other deletes negotiation", "mallory", "delete", "relay/negotiation/alice/phone", None),
    ("other reads session", "mallory", "get", SESSION, None),
    ("other listens inbox", "mallory", "listen", INBOX, None),
    ("other writes message", "mallory", "set", f"{INBOX}/messages/s0000000002", frame(seq=2)),
    ("other writes ack", "mallory", "set", f"{INBOX}/acknowledgement", ack()),
    ("other batch", "mallory", "update", SESSION, {"laptop/messages/s0000000002": frame(seq=2)}),
    ("other deletes session", "mallory", "delete", SESSION, None),
    ("other deletes message", "mallory", "delete", f"{INBOX}/messages/s0000000001", None),
    # unauthenticated
    ("anon reads presence", "anon", "get", "presence/alice", None),
    ("anon writes presence", "anon", "set", "presence/alice/x", _presence()),
    ("anon reads negotiation", "anon", "get", "relay/negotiation/alice/phone", None),
    ("anon negotiates", "anon", "set", "relay/negotiation/alice/phone", _negotiation()),
    ("anon reads session", "anon", "get", SESSION, None),
    ("anon writes message", "anon", "set", f"{INBOX}/messages/s0000000002", frame(seq=2)),
    ("anon deletes session", "anon", "delete", SESSION, None),
    # outside the user's own data, even for the user
    ("read root", "alice", "get", "/", None),
    ("read every user's presence", "alice", "get", "presence", None),
    ("read relay", "alice", "get", "relay", None),
    ("list all sessions", "alice", "get", "relay/sessions/alice", None),
    ("write elsewhere", "alice", "set", "other/x", 1),
    ("write unknown relay branch", "alice", "set", "relay/other/alice", 1),
    ("delete all presence", "alice", "delete", "presence", None),
    # presence: wrong types, missing and extra fields, sizes, stale timestamps, bad ids
    ("label not a string", "alice", "set", "presence/alice/laptop", _presence(label=5)),
    ("label empty", "alice", "set", "presence/alice/laptop", _presence(label="")),
    ("label too long", "alice", "set", "presence/alice/laptop", _presence(label="x" * 101)),
    ("lastSeen stale", "alice", "set", "presence/alice/laptop", _presence(lastSeen=STALE)),
    ("lastSeen a string", "alice", "set", "presence/alice/laptop", _presence(lastSeen="now")),
    ("online a string", "alice", "set", "presence/alice/laptop", _presence(online="yes")),
    ("presence missing online", "alice", "set", "presence/alice/laptop", _presence(online=M)),
    ("presence missing lastSeen", "alice", "set", "presence/alice/laptop", _presence(lastSeen=M)),
    ("presence extra field", "alice", "set", "presence/alice/laptop", _presence(admin=True)),
    ("presence not an object", "alice", "set", "presence/alice/laptop", "online"),
    ("presence bad device id", "alice", "set", "presence/alice/bad id", _presence()),
    ("presence partial stale", "alice", "set", "presence/alice/laptop/lastSeen", STALE),
    ("presence key a number", "alice", "set", "presence/alice/laptop", _presence(key=5)),
    ("presence key too long", "alice", "set", "presence/alice/laptop", _presence(key=KEY + "A")),
    ("presence key not base64", "alice", "set", "presence/alice/laptop", _presence(key="!" * 43 + "=")),
    ("presence key not canonical", "alice", "set", "presence/alice/laptop", _presence(key="A" * 42 + "B=")),
    # negotiation
    ("negotiation missing sessionId", "alice", "set", "relay/negotiation/alice/phone", _negotiation(sessionId=M)),
    ("negotiation short sessionId", "alice", "set", "relay/negotiation/alice/phone", _negotiation(sessionId="abc")),
    ("negotiation sessionId chars", "alice", "set", "relay/negotiation/alice/phone",
     _negotiation(sessionId="abcdefghijklmnop:rst")),
    ("negotiation to itself", "alice", "set", "relay/negotiation/alice/phone", _negotiation(initiator="phone")),
    ("negotiation initiator a number", "alice", "set", "relay/negotiation/alice/phone", _negotiation(initiator=7)),
    ("negotiation stale", "alice", "set", "relay/negotiation/alice/phone", _negotiation(updatedWhen=STALE)),
    ("negotiation extra field", "alice", "set", "relay/negotiation/alice/phone", _negotiation(note="hi")),
    ("negotiation hello a number", "alice", "set", "relay/negotiation/alice/phone", _negotiation(hello=5)),
    ("negotiation hello too long", "alice", "set", "relay/negotiation/alice/phone", _negotiation(hello="A" * 401)),
    ("negotiation hello empty", "alice", "set", "relay/negotiation/alice/phone", _negotiation(hello="")),
    ("handshake a number", "alice", "set", f"{INBOX}/handshake", 5),
    ("handshake too long", "alice", "set", f"{INBOX}/handshake", "A" * 401),
    ("handshake an object", "alice", "set", f"{INBOX}/handshake", {"a": "b"}),
    # session messages
    ("message too large", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, data="x" * 65537)),
    ("message unknown kind", "alice", "set", f"{INBOX}/messages/s0000000002", frame("exec", 2)),
    ("message negative seq", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=-2)),
    ("message fractional seq", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2.5)),
    ("message seq a string", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq="2")),
    ("message data a number", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, data=5)),
    ("data frame without data", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, data=None)),
    ("message stale", "alice", "set", f"{INBOX}/messages/s0000000002", {**frame(seq=2), "updatedWhen": STALE}),
    ("message missing updatedWhen", "alice", "set", f"{INBOX}/messages/s0000000002",
     {"kind": "data", "seq": 2, "data": "x"}),
    ("message confirm not a boolean", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, confirm=1)),
    ("message more not a boolean", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, more="yes")),
    ("signal marked as a fragment", "alice", "set", f"{INBOX}/messages/s0000000002",
     frame("signal", 2, "{}", more=True)),
    ("message extra field", "alice", "set", f"{INBOX}/messages/s0000000002", frame(seq=2, url="http://x")),
    ("message bad key", "alice", "set", f"{INBOX}/messages/x1", frame(seq=1)),
    ("message partial write", "alice", "set", f"{INBOX}/messages/s0000000009/data", "x"),
    ("unknown inbox child", "alice", "set", f"{INBOX}/junk", "x"),
    ("bad session id", "alice", "set", "relay/sessions/alice/short/laptop/messages/s0000000001", frame()),
    ("bad device id in session", "alice", "set", f"{SESSION}/a b/messages/s0000000001", frame()),
    # acknowledgements
    ("ack from the inbox owner", "alice", "set", f"{INBOX}/acknowledgement", ack(peer="laptop")),
    ("ack missing seq", "alice", "set", f"{INBOX}/acknowledgement", {"peerId": "phone", "updatedWhen": TS}),
    ("ack seq a string", "alice", "set", f"{INBOX}/acknowledgement", ack(seq="3")),
    ("ack stale", "alice", "set", f"{INBOX}/acknowledgement", {**ack(), "updatedWhen": STALE}),
    ("ack extra field", "alice", "set", f"{INBOX}/acknowledgement", ack(extra=1)),
    ("ack tag a number", "alice", "set", f"{INBOX}/acknowledgement", ack(tag=5)),
    ("ack tag too long", "alice", "set", f"{INBOX}/acknowledgement", ack(tag="A" * 65)),
    ("batch with one bad key", "alice", "update", SESSION,
     {"phone/messages/s0000000001": frame(), "phone/messages/s0000000002": frame(seq=2, data=5)}),
    # a plain value where the layout has an object, at every level
    ("user's presence a string", "alice", "set", "presence/alice", "online"),
    ("user's presence a number", "alice", "set", "presence/alice", 1),
    ("user's negotiations a string", "alice", "set", "relay/negotiation/alice", "x"),
    ("user's negotiations a boolean", "alice", "set", "relay/negotiation/alice", True),
    ("user's sessions a string", "alice", "set", "relay/sessions/alice", "x"),
    ("session a string", "alice", "set", SESSION, "x"),
    ("session a number", "alice", "update", "relay/sessions/alice", {SID: 5}),
    ("inbox a string", "alice", "set", INBOX, "x"),
    ("inbox a string in a batch", "alice", "update", SESSION, {"laptop": "x"}),
    ("messages a string", "alice", "set", f"{INBOX}/messages", "x"),
    ("messages a string in a batch", "alice", "update", INBOX, {"messages": "x"}),
    ("acknowledgement a string", "alice", "set", f"{INBOX}/acknowledgement", "x"),
    ("negotiation a string", "alice", "set", "relay/negotiation/alice/phone", "x"),
    ("frame a string", "alice", "set", f"{INBOX}/messages/s0000000002", "x"),
    # cross-field checks run whatever part of a frame is written
    ("a fragment turned into a signal", "alice", "set", f"{INBOX}/messages/s0000000005/kind", "signal"),
    ("a fragment turned into a close", "alice", "update", f"{INBOX}/messages/s0000000005", {"kind": "close"}),
    ("a fragment turned into a ping", "alice", "update", f"{INBOX}/messages/s0000000005", {"kind": "ping"}),
    ("a fragment's data removed", "alice", "delete", f"{INBOX}/messages/s0000000005/data", None),
]


def test_the_matrix_is_large_enough():
    assert len(DENIED) >= 40


@pytest.mark.parametrize(("name", "who", "op", "path", "value"), DENIED, ids=[d[0] for d in DENIED])
async def test_hostile_operations_are_denied_without_side_effects(dbs, name, who, op, path, value):
    with pytest.raises(PermissionDeniedError):
        await run(dbs[who], op, path, value)
    assert await dbs["admin"].get("/") == SEED
