"""Sans-I/O tests of the file-transfer protocol: frames, the sending and receiving state machines, the rate meter."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.errors import (
    DiskError,
    InsufficientSpaceError,
    IntegrityError,
    ProtocolError,
    TransferCancelledError,
    TransferDeclinedError,
    TransferInterruptedError,
)
from core.files.protocol import (
    CHUNK_HEADER_SIZE,
    Accept,
    Ack,
    Cancel,
    Chunk,
    Decline,
    Digest,
    FileDone,
    FileEntry,
    Failed,
    FileHasher,
    Finished,
    ForeignOffer,
    HashFile,
    Hashing,
    Offer,
    OfferAssembler,
    RateMeter,
    ReadChunk,
    ReceiveMachine,
    Rewind,
    SendMessage,
    SendMachine,
    Verified,
    VerifyFile,
    WriteChunk,
    decode_message,
    encode_message,
    encode_offer,
    fingerprint,
    new_transfer_id,
)

TID = "0123456789abcdef0123456789abcdef"


def entry(path: str, size: int) -> FileEntry:
    return FileEntry(path=path, size=size, fingerprint=fingerprint(size, 0, b"x" * size, b"x" * size))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frames(actions: list) -> list:
    return [decode_message(a.data) for a in actions if isinstance(a, SendMessage)]


def of_type(actions: list, cls: type) -> list:
    return [a for a in actions if isinstance(a, cls)]


# --- frames -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Accept(id=TID, offsets=(0, 10, 4096)),
        Decline(id=TID, reason="no thanks"),
        Ack(id=TID, file=3, offset=65536),
        Verified(id=TID, file=0),
        Cancel(id=TID, kind="disk", message="disk full"),
        Rewind(id=TID, file=1, offset=128),
        Digest(id=TID, file=4, sha256="ab" * 32),
        Hashing(id=TID, file=4, offset=2**33),
        Chunk(id=TID, file=2, offset=2**40, data=b"\x00\xffpayload"),
    ],
)
def test_frames_round_trip(message) -> None:
    assert decode_message(encode_message(message)) == message


def test_chunk_frame_is_binary_with_small_fixed_header() -> None:
    frame = encode_message(Chunk(id=TID, file=0, offset=0, data=b"abc"))
    assert len(frame) == CHUNK_HEADER_SIZE + 3
    assert frame.endswith(b"abc")


def test_offer_round_trips_and_splits_into_parts_that_fit_a_frame_budget() -> None:
    files = tuple(entry(f"dir/sub/file-{i:04d}.bin", i) for i in range(400))
    offer = Offer(id=TID, files=files, chunk_size=1000, window=8)
    parts = encode_offer(offer, max_frame=4000)
    assert len(parts) > 1
    assert all(len(p) <= 4000 for p in parts)
    assembler = OfferAssembler()
    results = [assembler.feed(decode_message(p)) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == offer


def test_single_part_offer() -> None:
    offer = Offer(id=TID, files=(entry("a.txt", 3),), chunk_size=64, window=4)
    (part,) = encode_offer(offer, max_frame=65536)
    assert OfferAssembler().feed(decode_message(part)) == offer


@pytest.mark.parametrize(
    "frame, words",
    [
        (b"", "empty"),
        (b"\x7f{}", "unknown frame type"),
        (b"\x02not json", "json"),
        (b"\x02[1, 2]", "object"),
        (b'\x02{"id": "nothex", "offsets": [0]}', "transfer id"),
        (b"\x02" + json.dumps({"id": TID, "offsets": [-1]}).encode(), "offsets"),
        (b"\x04" + json.dumps({"id": TID, "file": "0", "offset": 0}).encode(), "file"),
        (b"\x06" + json.dumps({"id": TID, "kind": "bogus", "message": ""}).encode(), "kind"),
        (b"\x10" + b"\x00" * 5, "chunk header"),
        (b"\x01" + json.dumps({"v": 2, "id": TID, "chunk_size": 0, "window": 1, "part": 0, "parts": 1,
                                "files": []}).encode(), "chunk size"),
        (b"\x08" + json.dumps({"id": TID, "file": 0, "sha256": "xyz"}).encode(), "sha-256"),
        (b"\x08" + json.dumps({"id": TID, "file": 0}).encode(), "sha-256"),
        (b"\x01" + json.dumps({"v": 2, "id": TID, "chunk_size": 10, "window": 1, "part": 0, "parts": 1,
                                "files": [["a", -5, "0" * 64]]}).encode(), "size"),
        (b"\x01" + json.dumps({"v": 2, "id": TID, "chunk_size": 10, "window": 1, "part": 0, "parts": 1,
                                "files": [["a", 5, "xyz"]]}).encode(), "fingerprint"),
        (b"\x01" + json.dumps({"v": 1, "id": "nothex", "chunk_size": 10, "window": 1, "part": 0, "parts": 1,
                                "files": []}).encode(), "transfer id"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message(frame)
    assert words in str(caught.value).lower()


def test_offer_parts_out_of_order_are_a_protocol_error() -> None:
    offer = Offer(id=TID, files=tuple(entry(f"f{i}", 1) for i in range(100)), chunk_size=10, window=2)
    parts = [decode_message(p) for p in encode_offer(offer, max_frame=2000)]
    assembler = OfferAssembler()
    with pytest.raises(ProtocolError):
        assembler.feed(parts[1])


def test_an_offer_without_files_is_a_protocol_error() -> None:
    (part,) = encode_offer(Offer(id=TID, files=(), chunk_size=10, window=2), max_frame=1000)
    with pytest.raises(ProtocolError, match="no files"):
        OfferAssembler().feed(decode_message(part))


def test_offer_with_folders_round_trips_across_parts() -> None:
    files = tuple(entry(f"tree/sub-{i:03d}/file.bin", i) for i in range(100))
    folders = tuple(f"tree/sub-{i:03d}/empty-{j}" for i in range(100) for j in range(2)) + ("tree",)
    offer = Offer(id=TID, files=files, chunk_size=1000, window=8, folders=folders)
    parts = encode_offer(offer, max_frame=3000)
    assert len(parts) > 2 and all(len(p) <= 3000 for p in parts)
    assembler = OfferAssembler()
    assert [assembler.feed(decode_message(p)) for p in parts][-1] == offer
    assert offer.total_bytes == sum(range(100))  # folders add no bytes


def test_an_offer_without_folders_is_read() -> None:
    body = {"v": 2, "id": TID, "chunk_size": 10, "window": 2, "part": 0, "parts": 1,
            "files": [["a.txt", 3, "0" * 64]]}
    offer = OfferAssembler().feed(decode_message(b"\x01" + json.dumps(body).encode()))
    assert offer is not None and offer.folders == () and offer.files == (FileEntry("a.txt", 3, "0" * 64),)


def test_an_offer_of_only_empty_folders_is_valid() -> None:
    (part,) = encode_offer(Offer(id=TID, files=(), chunk_size=10, window=2, folders=("empty",)), max_frame=1000)
    offer = OfferAssembler().feed(decode_message(part))
    assert offer is not None and offer.folders == ("empty",) and offer.files == ()


def _offer_body(folders) -> bytes:
    return b"\x01" + json.dumps({"v": 2, "id": TID, "chunk_size": 10, "window": 1, "part": 0, "parts": 1,
                                  "files": [["a", 1, "0" * 64]], "folders": folders}).encode()


@pytest.mark.parametrize("folders", ["tree", {"a": 1}, [1], [["a"]], [None], [""], ["x" * 5000]],
                         ids=["string", "object", "number", "list", "null", "empty", "too-long"])
def test_malformed_folder_entries_raise_protocol_error(folders) -> None:
    with pytest.raises(ProtocolError, match="folder"):
        decode_message(_offer_body(folders))


def test_too_many_folders_in_an_offer_is_a_protocol_error(monkeypatch) -> None:
    import core.files.protocol as transfer_module

    monkeypatch.setattr(transfer_module, "MAX_FILES", 5)
    with pytest.raises(ProtocolError, match="folder"):
        decode_message(_offer_body([f"d{i}" for i in range(6)]))
    # The bound holds for the whole offer, not only one part.
    folders = tuple(f"a-rather-long-folder-name-{i:02d}" for i in range(8))
    offer = Offer(id=TID, files=(entry("a", 1),), chunk_size=10, window=2, folders=folders)
    budget = len(encode_offer(Offer(id=TID, files=(), chunk_size=10, window=2, folders=folders[:1]),
                              max_frame=10_000)[0]) + 100
    parts = [decode_message(p) for p in encode_offer(offer, max_frame=budget)]
    assert len(parts) > 2 and all(len(p.folders) <= 5 for p in parts)
    assembler = OfferAssembler()
    with pytest.raises(ProtocolError, match="too many"):
        for part in parts:
            assembler.feed(part)


def test_folders_only_offer_finishes_on_both_sides_at_accept() -> None:
    offer = Offer(id=TID, files=(), chunk_size=10, window=2, folders=("a", "a/b"))
    receiver = ReceiveMachine(offer)
    actions = receiver.accept(())
    assert isinstance(actions[0], SendMessage) and isinstance(actions[-1], Finished) and receiver.finished
    sender = SendMachine(offer)
    assert sender.handle(decode_message(actions[0].data)) == [Finished()]
    assert sender.finished and sender.next_reads(10) == []


def test_transfer_ids_are_unique_hex() -> None:
    a, b = new_transfer_id(), new_transfer_id()
    assert a != b and len(a) == 32 and int(a, 16) >= 0


# --- sender -----------------------------------------------------------------------------------------------------


def make_sender(sizes: list[int], chunk_size: int = 10, window: int = 4) -> SendMachine:
    files = tuple(entry(f"f{i}", s) for i, s in enumerate(sizes))
    return SendMachine(Offer(id=TID, files=files, chunk_size=chunk_size, window=window))


def test_sender_reads_nothing_before_accept() -> None:
    sender = make_sender([100])
    assert sender.next_reads(10) == []


def test_sender_keeps_a_bounded_window_and_refills_on_acks() -> None:
    sender = make_sender([100], chunk_size=10, window=4)
    sender.handle(Accept(id=TID, offsets=(0,)))
    reads = sender.next_reads(10)
    assert [(r.file, r.offset, r.size) for r in reads] == [(0, 0, 10), (0, 10, 10), (0, 20, 10), (0, 30, 10)]
    assert sender.next_reads(10) == []  # the window is full
    sent = [sender.chunk_read(r, b"x" * r.size) for r in reads]
    assert [frames(s)[0].offset for s in sent] == [0, 10, 20, 30]
    sender.handle(Ack(id=TID, file=0, offset=20))
    assert sender.bytes_done == 20
    assert [(r.offset, r.size) for r in sender.next_reads(10)] == [(40, 10), (50, 10)]


def test_sender_uses_smaller_chunks_when_the_link_allows_less() -> None:
    sender = make_sender([25], chunk_size=10, window=8)
    sender.handle(Accept(id=TID, offsets=(0,)))
    assert [(r.offset, r.size) for r in sender.next_reads(4)] == [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4),
                                                                  (20, 4), (24, 1)]


def test_sender_starts_each_file_at_the_offset_the_receiver_already_has() -> None:
    sender = make_sender([30, 30, 0], chunk_size=10, window=8)
    sender.handle(Accept(id=TID, offsets=(30, 15, 0)))
    assert sender.bytes_done == 45
    assert [(r.file, r.offset, r.size) for r in sender.next_reads(10)] == [(1, 15, 10), (1, 25, 5)]


def test_sender_finishes_when_every_file_is_verified() -> None:
    sender = make_sender([10, 0], chunk_size=10)
    assert sender.handle(Accept(id=TID, offsets=(0, 0))) == [HashFile(file=1)]  # the empty file's digest
    (read,) = sender.next_reads(10)
    sender.chunk_read(read, b"x" * 10)
    sender.file_hashed(0, sha(b"x" * 10))
    sender.file_hashed(1, sha(b""))
    assert sender.handle(Ack(id=TID, file=0, offset=10)) == []
    done = sender.handle(Verified(id=TID, file=0))
    assert of_type(done, FileDone) == [FileDone(file=0)]
    assert not of_type(done, Finished)
    done = sender.handle(Verified(id=TID, file=1))
    assert of_type(done, Finished)
    assert sender.finished


def test_sender_on_decline_fails_with_declined() -> None:
    sender = make_sender([10])
    (failed,) = sender.handle(Decline(id=TID, reason="not now"))
    assert isinstance(failed.error, TransferDeclinedError)
    assert "not now" in str(failed.error)


@pytest.mark.parametrize(
    "kind, error",
    [("cancelled", TransferCancelledError), ("disk", DiskError), ("space", InsufficientSpaceError),
     ("integrity", IntegrityError), ("protocol", ProtocolError), ("interrupted", TransferInterruptedError)],
)
def test_a_cancel_from_the_peer_fails_with_the_matching_error(kind: str, error: type) -> None:
    sender = make_sender([10])
    sender.handle(Accept(id=TID, offsets=(0,)))
    (failed,) = sender.handle(Cancel(id=TID, kind=kind, message="because"))
    assert isinstance(failed.error, error)
    assert "because" in str(failed.error)
    assert sender.next_reads(10) == []


def test_local_cancel_tells_the_peer_once() -> None:
    sender = make_sender([10])
    actions = sender.cancel()
    assert frames(actions) == [Cancel(id=TID, kind="cancelled", message="The sender cancelled the transfer.")]
    assert isinstance(of_type(actions, Failed)[0].error, TransferCancelledError)
    assert sender.cancel() == []


def test_local_failure_tells_the_peer_the_kind() -> None:
    sender = make_sender([10])
    sender.handle(Accept(id=TID, offsets=(0,)))
    actions = sender.fail(DiskError("cannot read f0: permission denied"))
    (cancel,) = frames(actions)
    assert cancel.kind == "disk" and "permission denied" in cancel.message


def test_connection_loss_interrupts_without_telling_the_peer() -> None:
    sender = make_sender([10])
    sender.handle(Accept(id=TID, offsets=(0,)))
    actions = sender.connection_lost()
    assert frames(actions) == []
    assert isinstance(of_type(actions, Failed)[0].error, TransferInterruptedError)


def test_stopping_without_cancelling_tells_the_peer_it_was_interrupted() -> None:
    sender = make_sender([10])
    sender.handle(Accept(id=TID, offsets=(0,)))
    actions = sender.interrupt()
    assert frames(actions)[0].kind == "interrupted"
    assert isinstance(of_type(actions, Failed)[0].error, TransferInterruptedError)


def test_sender_rewinds_when_the_receiver_asks_and_drops_stale_reads() -> None:
    sender = make_sender([40], chunk_size=10, window=4)
    sender.handle(Accept(id=TID, offsets=(0,)))
    reads = sender.next_reads(10)
    for r in reads[:2]:
        sender.chunk_read(r, b"x" * 10)
    sender.handle(Rewind(id=TID, file=0, offset=10))
    assert sender.chunk_read(reads[2], b"x" * 10) == []  # read before the rewind: dropped
    assert [(r.offset) for r in sender.next_reads(10)] == [10, 20, 30]


@pytest.mark.parametrize(
    "message",
    [
        Accept(id=TID, offsets=(0, 0)),  # wrong number of offsets
        Accept(id=TID, offsets=(11,)),  # beyond the size
        Ack(id=TID, file=5, offset=0),
        Ack(id=TID, file=0, offset=99),  # acknowledges what was never sent
        Verified(id=TID, file=0),  # not complete yet
        Digest(id=TID, file=0, sha256="0" * 64),  # receivers do not send digests
        Chunk(id=TID, file=0, offset=0, data=b"x"),  # receivers do not send chunks
    ],
)
def test_sender_treats_impossible_messages_as_protocol_errors(message) -> None:
    sender = make_sender([10])
    if not isinstance(message, Accept):
        sender.handle(Accept(id=TID, offsets=(0,)))
    actions = sender.handle(message)
    (failed,) = of_type(actions, Failed)
    assert isinstance(failed.error, ProtocolError)
    assert frames(actions)[0].kind == "protocol"


# --- receiver ---------------------------------------------------------------------------------------------------


def make_receiver(sizes: list[int], chunk_size: int = 10, window: int = 4) -> ReceiveMachine:
    files = tuple(entry(f"f{i}", s) for i, s in enumerate(sizes))
    return ReceiveMachine(Offer(id=TID, files=files, chunk_size=chunk_size, window=window))


def test_receiver_accept_sends_offsets_and_verifies_empty_and_complete_files_once_their_digest_comes() -> None:
    receiver = make_receiver([0, 10, 20])
    actions = receiver.accept((0, 10, 5))
    assert frames(actions) == [Accept(id=TID, offsets=(0, 10, 5))]
    assert of_type(actions, VerifyFile) == []  # nothing is verified without the sender's digest
    assert receiver.bytes_done == 15
    assert receiver.handle(Digest(id=TID, file=0, sha256=sha(b""))) == [VerifyFile(file=0, sha256=sha(b""))]
    assert receiver.handle(Digest(id=TID, file=1, sha256="1" * 64)) == [VerifyFile(file=1, sha256="1" * 64)]
    assert receiver.handle(Digest(id=TID, file=2, sha256="2" * 64)) == []  # 15 bytes still to come


def test_receiver_writes_in_order_chunks_and_acks_every_half_window() -> None:
    receiver = make_receiver([50], chunk_size=10, window=4)
    receiver.accept((0,))
    acks = []
    for offset in range(0, 50, 10):
        (write,) = receiver.handle(Chunk(id=TID, file=0, offset=offset, data=b"x" * 10))
        assert write == WriteChunk(file=0, offset=offset, data=b"x" * 10)
        acks += frames(receiver.chunk_written(write))
    assert acks == [Ack(id=TID, file=0, offset=20), Ack(id=TID, file=0, offset=40), Ack(id=TID, file=0, offset=50)]


def test_receiver_verifies_after_the_last_byte_and_finishes_after_the_last_file() -> None:
    receiver = make_receiver([10])
    receiver.accept((0,))
    (write,) = receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x" * 10))
    assert of_type(receiver.chunk_written(write), VerifyFile) == []  # the digest is not here yet
    assert receiver.handle(Digest(id=TID, file=0, sha256=sha(b"x" * 10))) == [VerifyFile(0, sha(b"x" * 10))]
    actions = receiver.file_verified(0)
    assert frames(actions) == [Verified(id=TID, file=0)]
    assert of_type(actions, Finished) and receiver.finished


def test_receiver_ignores_duplicates_and_asks_once_to_rewind_on_a_gap() -> None:
    receiver = make_receiver([40])
    receiver.accept((0,))
    receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x" * 10))[0])
    assert receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x" * 10)) == []
    assert frames(receiver.handle(Chunk(id=TID, file=0, offset=20, data=b"x" * 10))) == [
        Rewind(id=TID, file=0, offset=10)
    ]
    assert receiver.handle(Chunk(id=TID, file=0, offset=30, data=b"x" * 10)) == []
    assert of_type(receiver.handle(Chunk(id=TID, file=0, offset=10, data=b"x" * 10)), WriteChunk)


@pytest.mark.parametrize(
    "chunk",
    [
        Chunk(id=TID, file=7, offset=0, data=b"x"),
        Chunk(id=TID, file=0, offset=0, data=b""),
        Chunk(id=TID, file=0, offset=0, data=b"x" * 11),  # over the offered chunk size
        Chunk(id=TID, file=0, offset=5, data=b"x" * 10),  # beyond the end... after the gap check
    ],
)
def test_receiver_treats_bad_chunks_as_protocol_errors(chunk: Chunk) -> None:
    receiver = make_receiver([12])
    receiver.accept((5,) if chunk.offset == 5 else (0,))
    actions = receiver.handle(chunk)
    assert isinstance(of_type(actions, Failed)[0].error, ProtocolError)
    assert frames(actions)[0].kind == "protocol"


def test_receiver_ignores_chunks_before_accept_as_protocol_error() -> None:
    receiver = make_receiver([12])
    actions = receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x"))
    assert isinstance(of_type(actions, Failed)[0].error, ProtocolError)


def test_receiver_decline() -> None:
    receiver = make_receiver([12])
    actions = receiver.decline("no room")
    assert frames(actions) == [Decline(id=TID, reason="no room")]
    assert isinstance(of_type(actions, Failed)[0].error, TransferDeclinedError)
    assert receiver.accept((0,)) == []


def test_receiver_integrity_failure_tells_the_sender() -> None:
    receiver = make_receiver([10])
    receiver.accept((0,))
    receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x" * 10))[0])
    actions = receiver.fail(IntegrityError("f0 did not match"))
    assert frames(actions)[0].kind == "integrity"
    assert isinstance(of_type(actions, Failed)[0].error, IntegrityError)


def test_receiver_cancel_by_the_sender() -> None:
    receiver = make_receiver([10])
    receiver.accept((0,))
    (failed,) = receiver.handle(Cancel(id=TID, kind="cancelled", message="The sender cancelled the transfer."))
    assert isinstance(failed.error, TransferCancelledError)
    assert receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x")) == []  # late chunks after the end


def test_receiver_confirmed_offsets_follow_acks() -> None:
    receiver = make_receiver([40], window=4)
    receiver.accept((0,))
    for offset in (0, 10, 20):
        receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=offset, data=b"x" * 10))[0])
    assert receiver.confirmed == (20,)  # the ack at 20 went out; 30 is written but not yet acknowledged
    assert receiver.written == (30,)


# --- digests after the last chunk, resume, versions --------------------------------------------------------------


def test_the_sender_sends_each_files_digest_after_its_last_chunk_and_once() -> None:
    sender = make_sender([25, 5], chunk_size=10, window=8)
    assert sender.handle(Accept(id=TID, offsets=(0, 0))) == []
    sent = []
    for read in sender.next_reads(10):
        sent += frames(sender.chunk_read(read, b"x" * read.size))
        if read.offset + read.size == read_size(sender, read.file):
            sent += frames(sender.file_hashed(read.file, sha(b"x" * read_size(sender, read.file))))
    assert [(type(m).__name__, m.file) for m in sent] == [
        ("Chunk", 0), ("Chunk", 0), ("Chunk", 0), ("Digest", 0), ("Chunk", 1), ("Digest", 1)]
    assert sent[3].sha256 == sha(b"x" * 25)
    assert sender.file_hashed(0, sha(b"x" * 25)) == []  # after a rewind the file is read again, not hashed again


def read_size(sender: SendMachine, file: int) -> int:
    return sender.offer.files[file].size


def test_a_verified_before_the_digest_was_sent_is_a_protocol_error() -> None:
    sender = make_sender([10])
    sender.handle(Accept(id=TID, offsets=(0,)))
    (read,) = sender.next_reads(10)
    sender.chunk_read(read, b"x" * 10)
    sender.handle(Ack(id=TID, file=0, offset=10))
    (failed,) = of_type(sender.handle(Verified(id=TID, file=0)), Failed)
    assert isinstance(failed.error, ProtocolError) and "SHA-256" in str(failed.error)


def test_the_sender_asks_for_the_digest_of_files_it_has_nothing_left_to_send_of() -> None:
    sender = make_sender([30, 30, 0], chunk_size=10, window=8)
    assert sender.handle(Accept(id=TID, offsets=(30, 15, 0))) == [HashFile(file=0), HashFile(file=2)]
    (digest,) = frames(sender.file_hashed(0, "a" * 64))
    assert digest == Digest(id=TID, file=0, sha256="a" * 64)


@pytest.mark.parametrize("digest_first", [True, False], ids=["digest-first", "digest-last"])
def test_the_receiver_verifies_once_it_has_every_byte_and_the_digest_in_either_order(digest_first: bool) -> None:
    receiver = make_receiver([20], chunk_size=10)
    receiver.accept((0,))
    digest = Digest(id=TID, file=0, sha256=sha(b"x" * 20))
    verify = [VerifyFile(file=0, sha256=digest.sha256)]
    if digest_first:  # a digest may overtake chunks (a rewind sends them again after it)
        assert receiver.handle(digest) == []
    receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=0, data=b"x" * 10))[0])
    last = receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=10, data=b"x" * 10))[0])
    assert of_type(last, VerifyFile) == (verify if digest_first else [])
    if not digest_first:
        assert receiver.handle(digest) == verify
    assert receiver.handle(digest) == []  # the same digest again: nothing more


def test_a_resumed_receiver_verifies_against_the_digest_of_the_whole_file() -> None:
    """The receiver had 15 bytes; the sender hashes those from its disk and the rest as it sends it: the digest
    that comes is the whole file's, and the receiver compares it with its own prefix plus what it wrote."""
    data = bytes(range(30))
    receiver = make_receiver([30], chunk_size=10)
    assert frames(receiver.accept((15,))) == [Accept(id=TID, offsets=(15,))]
    hasher = FileHasher(30)
    assert hasher.gap(15) == (0, 15)
    hasher.update(0, data[:15])  # the resumed prefix, from disk
    for offset in (15, 25):
        chunk = data[offset:offset + 10]
        hasher.update(offset, chunk)
        receiver.chunk_written(receiver.handle(Chunk(id=TID, file=0, offset=offset, data=chunk))[0])
    assert hasher.complete and hasher.hexdigest() == sha(data)
    assert receiver.handle(Digest(id=TID, file=0, sha256=hasher.hexdigest())) == [VerifyFile(0, sha(data))]


def test_the_running_hash_covers_the_whole_file_whatever_the_order_of_reads() -> None:
    data = bytes(range(256)) * 4
    hasher = FileHasher(len(data))
    hasher.update(0, data[:100])
    hasher.update(50, data[50:300])  # read again after a rewind: only the new bytes count
    assert hasher.gap(300) is None and hasher.gap(500) == (300, 500)
    with pytest.raises(ValueError, match="gap"):
        hasher.update(500, data[500:600])
    with pytest.raises(ValueError):
        hasher.hexdigest()
    hasher.update(300, data[300:])
    assert hasher.hexdigest() == sha(data)
    empty = FileHasher(0)
    assert empty.complete and empty.hexdigest() == sha(b"")


@pytest.mark.parametrize(
    "message",
    [
        Digest(id=TID, file=3, sha256="0" * 64),  # no such file
    ],
)
def test_the_receiver_treats_impossible_digests_as_protocol_errors(message) -> None:
    receiver = make_receiver([10])
    assert isinstance(of_type(receiver.handle(message), Failed)[0].error, ProtocolError)  # before accept
    receiver = make_receiver([10])
    receiver.accept((0,))
    assert isinstance(of_type(receiver.handle(message), Failed)[0].error, ProtocolError)


def test_the_sender_tells_the_receiver_it_is_hashing_a_long_prefix_and_the_receiver_waits() -> None:
    sender = make_sender([100])
    sender.handle(Accept(id=TID, offsets=(60,)))
    (note,) = frames(sender.hashing(0, 40))
    assert note == Hashing(id=TID, file=0, offset=40)
    receiver = make_receiver([100])
    receiver.accept((60,))
    assert receiver.handle(note) == []
    (failed,) = of_type(receiver.handle(Hashing(id=TID, file=0, offset=101)), Failed)  # past the end of the file
    assert isinstance(failed.error, ProtocolError)


def test_two_different_digests_for_one_file_are_a_protocol_error() -> None:
    receiver = make_receiver([10])
    receiver.accept((0,))
    receiver.handle(Digest(id=TID, file=0, sha256="0" * 64))
    (failed,) = of_type(receiver.handle(Digest(id=TID, file=0, sha256="1" * 64)), Failed)
    assert isinstance(failed.error, ProtocolError)


def test_the_fingerprint_changes_with_size_time_and_both_ends() -> None:
    base = fingerprint(100, 5, b"head", b"tail")
    assert len(base) == 64 and base == fingerprint(100, 5, b"head", b"tail")
    assert len({base, fingerprint(101, 5, b"head", b"tail"), fingerprint(100, 6, b"head", b"tail"),
                fingerprint(100, 5, b"Head", b"tail"), fingerprint(100, 5, b"head", b"tails"),
                fingerprint(100, 5, b"headt", b"ail")}) == 6


def old_offer(version) -> bytes:
    """An offer as a peer speaking another version writes it (version 1: [path, size, sha256])."""
    return b"\x01" + json.dumps({"v": version, "id": TID, "chunk_size": 10, "window": 2, "part": 0, "parts": 1,
                                  "files": [["a.txt", 3, "0" * 64]]}).encode()


def test_an_offer_in_version_1_says_to_update_the_device_that_sent_it() -> None:
    foreign = decode_message(old_offer(1))
    assert foreign == ForeignOffer(id=TID, version=1)
    assert "update peerchat on the other device" in str(foreign.error()).lower()
    # What the old sender shows: "The other device declined the files (<reason>)."
    reason = foreign.decline_reason()
    assert "version 2" in reason and "version 1" in reason and "update peerchat on this device" in reason


@pytest.mark.parametrize("version", [3, "2", None], ids=["newer", "text", "missing"])
def test_an_offer_in_any_other_version_is_declined_saying_which_device_to_update(version) -> None:
    foreign = decode_message(old_offer(version))
    assert isinstance(foreign, ForeignOffer)
    newer = version == 3
    assert ("update peerchat on this device" in str(foreign.error())) is newer
    assert ("update peerchat on the other device" in foreign.decline_reason()) is newer


# --- rate meter -------------------------------------------------------------------------------------------------


def test_rate_meter_reports_rate_and_eta_from_recent_samples() -> None:
    meter = RateMeter(total=1000, start=0.0, initial=100)
    assert meter.update(0.0, 100) == (0.0, None)
    rate, eta = meter.update(1.0, 300)
    assert rate == pytest.approx(200.0)
    assert eta == pytest.approx(3.5)
    rate, eta = meter.update(2.0, 1000)
    assert eta == 0.0
