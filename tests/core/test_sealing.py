"""Sans-I/O units of sealed relay frames with compression: the format byte inside the ciphertext, both formats
round-trip, compression kept only when it pays (and the same bytes every time a frame is sealed), bounded
inflation, and the canonical base64 check the stored data goes through."""

from __future__ import annotations

import base64
import os
import random
import tracemalloc
import zlib

import pytest

from core.errors import ProtocolError
from core.options import ManagerOptions
from core.protocol.handshake import PROTOCOL, InitiatorHandshake, ResponderHandshake
from core.protocol.identity import DeviceKey
from core.protocol.records import decode_base64
from core.protocol.sealing import (
    AS_IS,
    DEFLATED,
    OVERHEAD_BYTES,
    FrameSealer,
    deflate,
    inflate,
    sealed_frame_limit,
)

SESSION = "S" * 22
LIMIT = sealed_frame_limit(64 * 1024)


def chat_text(size: int, seed: int = 7) -> str:
    """Chat-like text: sentences of common words, varied by a seeded generator."""
    rng = random.Random(seed)
    words = ("see you at the station tomorrow morning I think we should take train because it is faster "
             "than bus and cheaper too did you remember to bring keys for flat what time does film start").split()
    out: list[str] = []
    while sum(map(len, out)) < size:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        out.append(sentence[0].upper() + sentence[1:] + rng.choice(".!?") + " ")
    return "".join(out)[:size]


def random_text(size: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(32, 127)) for _ in range(size))


def sealers(*, compress: bool = True):
    laptop, desktop = DeviceKey.generate(), DeviceKey.generate()
    ids = {"user_id": "alice", "session_id": SESSION}
    init = InitiatorHandshake(laptop, own_id="laptop", peer_id="desktop", **ids)
    resp = ResponderHandshake(desktop, init.hello(), own_id="desktop", peer_id="laptop", **ids)
    confirm, i_keys = init.on_answer(resp.answer())
    r_keys = resp.on_confirm(confirm)
    return (
        FrameSealer(i_keys, session_id=SESSION, own_id="laptop", peer_id="desktop", compress=compress),
        FrameSealer(r_keys, session_id=SESSION, own_id="desktop", peer_id="laptop", compress=compress),
    )


def stored_bytes(stored: dict) -> int:
    return len(base64.b64decode(stored["data"]))


# ------------------------------------------------------------------------------------------------ both formats
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "frame",
    [
        {"kind": "data", "seq": 1, "data": chat_text(20_000)},
        {"kind": "data", "seq": 2, "data": chat_text(LIMIT), "more": True},  # exactly a full frame
        {"kind": "data", "seq": 3, "data": random_text(5000), "confirm": True},
        {"kind": "data", "seq": 4, "data": "short ünïcode ✓"},
        {"kind": "data", "seq": 5, "data": ""},
        {"kind": "signal", "seq": 6, "data": '{"sdp":"' + "a=candidate:1 1 udp 2130706431 10.0.0.1 5000\\r\\n" * 40 + '"}'},
        {"kind": "close", "seq": 7, "data": "declined\nbusy"},
        {"kind": "ping", "seq": 3},
    ],
)
def test_frames_round_trip_compressed_or_not(frame, compress):
    laptop, desktop = sealers(compress=compress)
    assert desktop.open(laptop.seal(frame)) == frame


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("raw", [os.urandom(30_000), b"\0" * 30_000, bytes(range(256)) * 100, b""])
def test_binary_frames_round_trip_and_keep_their_bytes(raw, compress):
    laptop, desktop = sealers(compress=compress)
    # The stream's bytes (a fragment is a memoryview) are sealed as they are, and opened to bytes: no base64 between.
    for seq, data in enumerate((raw, memoryview(raw), base64.b64encode(raw).decode()), 1):
        opened = desktop.open(laptop.seal({"kind": "binary", "seq": seq, "data": data}))
        assert type(opened["data"]) is bytes and opened["data"] == raw


def test_a_receiver_opens_compressed_frames_whatever_its_own_setting():
    laptop, desktop = sealers(compress=True)
    desktop.compress = False  # only what desktop writes
    text = chat_text(10_000)
    stored = laptop.seal({"kind": "data", "seq": 1, "data": text})
    assert laptop.counts["deflated"] == 1
    assert desktop.open(stored)["data"] == text


# ------------------------------------------------------------------------------------------- when it pays
def test_compressible_text_is_stored_compressed_and_random_data_as_is():
    laptop, _ = sealers(compress=True)
    text = chat_text(16_384)
    compressed = laptop.seal({"kind": "data", "seq": 1, "data": text})
    assert stored_bytes(compressed) < len(text) * 3 // 4  # well under the text itself
    raw = os.urandom(16_384)
    as_is = laptop.seal({"kind": "binary", "seq": 2, "data": raw})
    assert stored_bytes(as_is) == len(raw) + OVERHEAD_BYTES
    short = laptop.seal({"kind": "data", "seq": 3, "data": "ok, see you at eight"})
    assert stored_bytes(short) == len("ok, see you at eight") + OVERHEAD_BYTES
    assert laptop.counts == {"deflated": 1, "as_is": 2}
    plain, _ = sealers(compress=False)
    assert stored_bytes(plain.seal({"kind": "data", "seq": 1, "data": text})) == len(text) + OVERHEAD_BYTES


def test_compression_is_kept_only_when_it_saves_an_eighth():
    # Random bytes with a compressible run: saves something, but less than an eighth.
    body = os.urandom(9000) + b"a" * 1000
    packed = zlib.compress(body, 1, -15)
    assert len(packed) < len(body) and len(packed) > len(body) * 7 // 8
    assert deflate(body) is None
    assert deflate(b"abc" * 20_000) is not None
    assert deflate(b"a" * 100) is None  # too short to be worth trying


def test_a_sample_that_does_not_shrink_skips_the_whole_body():
    # Incompressible first 2 KiB, then a highly compressible rest: judged by the sample, written as it is.
    body = os.urandom(2048) + b"x" * 40_000
    assert deflate(body) is None
    assert deflate(b"x" * 40_000 + os.urandom(2048)) is not None


def test_text_with_repeats_gets_zlibs_fastest_level_and_text_without_them_huffman_coding_alone():
    chat = chat_text(20_000).encode()
    assert deflate(chat) == zlib.compress(chat, 1, -15)
    noise = random_text(20_000).encode()  # nothing repeats: only the alphabet's 95 of 256 byte values to exploit
    huffman = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_HUFFMAN_ONLY)
    packed = deflate(noise)
    assert packed == huffman.compress(noise) + huffman.flush()
    assert len(packed) <= len(noise) * 7 // 8
    assert inflate(packed, len(noise)) == noise


def test_sealing_the_same_frame_again_gives_the_same_bytes():
    """A retransmission reuses the frame's nonce: its plaintext must be the same, compressed or not."""
    laptop, _ = sealers(compress=True)
    for data in (chat_text(30_000), random_text(3000), "hi"):
        frame = {"kind": "data", "seq": 9, "data": data}
        assert laptop.seal(frame) == laptop.seal(dict(frame))


# ------------------------------------------------------------------------------------------ the format byte
def test_the_format_byte_is_authenticated():
    laptop, desktop = sealers(compress=True)
    stored = laptop.seal({"kind": "data", "seq": 1, "data": chat_text(8000)})
    sealed = bytearray(base64.b64decode(stored["data"]))
    for flip in (DEFLATED ^ AS_IS, 0x80):  # the format byte turned to "as is", or to an unknown format
        tampered = bytearray(sealed)
        tampered[0] ^= flip
        with pytest.raises(ProtocolError, match="failed authentication"):
            desktop.open({**stored, "data": base64.b64encode(bytes(tampered)).decode()})
    assert desktop.open(stored)["data"] == chat_text(8000)


TEXT = chat_text(5000).encode()


@pytest.mark.parametrize(
    "plain, message",
    [
        (bytes([7]) + TEXT, "unknown format"),
        (b"", "no format byte"),
        (bytes([DEFLATED]) + b"\xff" * 50, "compressed data is damaged"),
        (bytes([DEFLATED]) + zlib.compress(TEXT, 1, -15)[:-20], "ends early"),
        (bytes([DEFLATED]) + zlib.compress(TEXT, 1, -15) + b"tail", "data after its compressed data"),
        (bytes([AS_IS]) + b"x" * (LIMIT + 1), "over the"),
    ],
)
def test_what_only_a_key_holder_could_write_is_still_checked(plain, message):
    """Frames that authenticate (written with the session key: a bug, or a hostile device that has it) but whose
    plaintext is malformed are dropped as protocol errors, saying why."""
    laptop, desktop = sealers()
    with pytest.raises(ProtocolError, match=message):
        desktop.open(laptop.seal_plaintext("data", 1, plain))


def test_a_frame_sealed_the_way_before_the_format_byte_fails_authentication_rather_than_being_misread():
    laptop, desktop = sealers()
    # An older peerchat: the same keys and ids, no frame format in the associated data, no format byte.
    laptop._out_prefix = b"\0".join((PROTOCOL, SESSION.encode(), b"laptop", b"desktop")) + b"\0"
    old = laptop.seal_plaintext("data", 1, bytes([DEFLATED]) + b"looks like a compressed body")
    with pytest.raises(ProtocolError, match="failed authentication"):
        desktop.open(old)


# --------------------------------------------------------------------------------------- bounded inflation
def test_inflation_past_a_frame_is_refused():
    laptop, desktop = sealers()
    at_limit = bytes([DEFLATED]) + zlib.compress(b"a" * LIMIT, 9, -15)
    assert desktop.open(laptop.seal_plaintext("data", 1, at_limit))["data"] == "a" * LIMIT
    over = bytes([DEFLATED]) + zlib.compress(b"a" * (LIMIT + 1), 9, -15)
    with pytest.raises(ProtocolError, match="inflate past"):
        desktop.open(laptop.seal_plaintext("data", 2, over))
    # Binary frames hold 3/4 as much (their base64 is what fills a frame).
    binary_limit = LIMIT // 4 * 3
    assert desktop.open(laptop.seal_plaintext(
        "binary", 3, bytes([DEFLATED]) + zlib.compress(b"\0" * binary_limit, 9, -15)))["data"] == b"\0" * binary_limit
    with pytest.raises(ProtocolError, match="inflate past"):
        desktop.open(laptop.seal_plaintext("binary", 4, bytes([DEFLATED]) + zlib.compress(b"\0" * (binary_limit + 1), 9, -15)))


def test_a_decompression_bomb_allocates_no_more_than_a_frame():
    laptop, desktop = sealers()
    bomb = bytes([DEFLATED]) + zlib.compress(b"\0" * (64 * 1024 * 1024), 9, -15)  # 64 MiB in about 64 KiB
    stored = laptop.seal_plaintext("data", 1, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="inflate past"):
            desktop.open(stored)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"opening the bomb allocated {peak:,} bytes"


def test_inflate_alone():
    assert inflate(zlib.compress(b"hello" * 10, 1, -15), 50) == b"hello" * 10
    with pytest.raises(ValueError, match="inflate past 49"):
        inflate(zlib.compress(b"hello" * 10, 1, -15), 49)


# ------------------------------------------------------------------------------------ sizes and the option
def test_a_full_frame_fits_the_relay_whatever_it_holds():
    laptop, _ = sealers(compress=True)
    assert LIMIT % 4 == 0 and (LIMIT + OVERHEAD_BYTES + 2) // 3 * 4 <= 64 * 1024
    for frame in (
        {"kind": "data", "seq": 1, "data": random_text(LIMIT)},
        {"kind": "data", "seq": 2, "data": chat_text(LIMIT)},
        {"kind": "binary", "seq": 3, "data": os.urandom(LIMIT // 4 * 3)},
    ):
        assert len(laptop.seal(frame)["data"]) <= 64 * 1024


def test_compression_is_on_by_default_and_can_be_turned_off():
    assert ManagerOptions().relay_compression is True
    assert ManagerOptions(relay_compression=False).relay_compression is False


# -------------------------------------------------------------------------------------- canonical base64
@pytest.mark.parametrize("text", ["YQ==", "YWI=", "YWJj", "", base64.b64encode(os.urandom(1000)).decode()])
def test_canonical_base64_decodes(text):
    assert decode_base64(text) == base64.b64decode(text)


@pytest.mark.parametrize("text", ["YR==", "YWJ=", "YWJjYR==", "YQ=", "YQ===", "YQ==YQ==", "=YQ=", "YW Jj", "YQ==\n", "é", "YWJjZA"])
def test_base64_that_is_not_canonical_is_refused(text):
    with pytest.raises(ValueError, match="base64"):
        decode_base64(text)
