"""No wait before the first byte: files are hashed while they are sent and verified at their end.

Over the in-memory pair and over the real relay (the emulator, firebase-admin over real sockets): a transfer ends
verified by the digest sent after the last chunk; a file written to while it is sent fails integrity on both sides
and leaves nothing under its name; an interrupted transfer resumes and ends verified and byte-identical; a resume
against a source changed under the same fingerprint fails integrity instead of producing a corrupt file; an offer in
another protocol version is declined saying which device to update.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core import events as ev
from core.errors import IntegrityError, ProtocolError, TransferDeclinedError, TransferInterruptedError
from core.files import disk as disk_module
from core.files.protocol import (CHUNK, DIGEST, HASHING, PROTOCOL_VERSION, Accept, Ack, Chunk, Decline, Digest,
                                 ForeignOffer, OfferPart, Rewind, Verified, decode_message)

try:
    from .memory_connection import MemoryConnectionPair
    from .test_files_transfer import (MB, WAIT, LinkFactory, ScriptedPeer, Side, cut_after, leftovers,
                                      link_pairs, random_file, sha)
except ImportError:  # tests/ is not a package
    from memory_connection import MemoryConnectionPair
    from test_files_transfer import (MB, WAIT, LinkFactory, ScriptedPeer, Side, cut_after, leftovers,
                                     link_pairs, random_file, sha)

SMALL = {"chunk_size": 16 * 1024, "window": 4}  # many chunks, few in flight: a file takes a while to move


@pytest.fixture(params=["memory", "relay"])
async def link(request: pytest.FixtureRequest) -> AsyncIterator[LinkFactory]:
    async for make in link_pairs(request):
        yield make


def record_sent_frames(connection) -> list[bytes]:
    """Every transfer frame ``connection`` sends, in order (the real send_bytes still runs)."""
    sent: list[bytes] = []
    real = connection.send_bytes

    async def send_bytes(data: bytes) -> None:
        sent.append(bytes(data[:1]) if data[:1] == bytes([CHUNK]) else bytes(data))
        await real(data)

    connection.send_bytes = send_bytes
    return sent


async def test_a_transfer_ends_verified_by_the_digest_sent_after_the_last_chunk(link: LinkFactory,
                                                                                 tmp_path: Path) -> None:
    a, b = await link()
    frames = record_sent_frames(a)
    sender, receiver = Side(a, **SMALL), Side(b, **SMALL)
    sources = [random_file(tmp_path / "out" / "one.bin", 100_000, seed=1),
               random_file(tmp_path / "out" / "empty.bin", 0)]
    outgoing = await sender.transfers.send_files(sources)
    incoming = await (await receiver.next_offer()).accept(tmp_path / "downloads")
    await asyncio.wait_for(asyncio.gather(outgoing.wait(), incoming.wait()), WAIT)
    for source in sources:
        assert sha(tmp_path / "downloads" / source.name) == sha(source)
    kinds = [f[0] for f in frames]
    digests = [decode_message(f) for f in frames if f[0] == DIGEST]
    assert sorted((d.file, d.sha256) for d in digests) == [(0, sha(sources[0])), (1, sha(sources[1]))]
    # The digest of the file with chunks follows its last chunk (the empty file's needs none to go first).
    digest_of_the_first = next(i for i, f in enumerate(frames) if f[0] == DIGEST and decode_message(f).file == 0)
    assert kinds.count(CHUNK) == 7 and CHUNK not in kinds[digest_of_the_first:]
    assert leftovers(tmp_path / "downloads") == []


async def changed_while_sent(link: LinkFactory, tmp_path: Path, change: Callable[[Path], bool]) -> bool:
    """Send a 3 MiB ``log.bin`` and call ``change(source)`` once 1 MiB arrived: both sides must fail integrity, and
    nothing may appear under the file's name. Returns what ``change`` returned."""
    source = random_file(tmp_path / "out" / "log.bin", 3 * MB)
    a, b = await link()
    sender, receiver = Side(a, **SMALL), Side(b, **SMALL)
    downloads = tmp_path / "downloads"
    outgoing = await sender.transfers.send_files([source])
    incoming = await (await receiver.next_offer()).accept(downloads)
    changed = asyncio.get_running_loop().create_future()

    def on_progress(progress) -> None:
        if progress.bytes_done >= MB and not changed.done():
            changed.set_result(change(source))

    receiver.transfers.events.on(ev.TRANSFER_PROGRESS, on_progress)
    for transfer in (outgoing, incoming):
        with pytest.raises(IntegrityError, match="log.bin changed while it was being sent"):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    assert not (downloads / "log.bin").exists()
    assert leftovers(downloads) == []
    return await changed


async def test_a_file_written_to_while_it_is_sent_fails_integrity_on_both_sides(link: LinkFactory,
                                                                                tmp_path: Path) -> None:
    def write_ahead(source: Path) -> bool:
        before = source.stat().st_mtime_ns
        with source.open("r+b") as f:  # same size, new bytes in the part not sent yet
            f.seek(2 * MB)
            f.write(b"changed")
        return source.stat().st_mtime_ns != before

    assert await changed_while_sent(link, tmp_path, write_ahead)  # the write moved the modification time


async def test_a_part_already_sent_written_to_with_its_modification_time_put_back_fails_integrity(
        link: LinkFactory, tmp_path: Path) -> None:
    """Bytes the sender already read and hashed change, and the modification time is set back as it was (as a tool
    that copies times does): both hashes are of the old bytes, so only the file's status-change time, which no
    program can set back, tells the sender; the transfer fails instead of calling the new file verified."""
    def write_behind_and_put_the_time_back(source: Path) -> bool:
        st = source.stat()
        with source.open("r+b") as f:  # the same size; bytes the receiver already has
            f.write(b"changed")
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
        return source.stat().st_mtime_ns == st.st_mtime_ns

    assert await changed_while_sent(link, tmp_path, write_behind_and_put_the_time_back)


async def interrupt(link: LinkFactory, tmp_path: Path, source: Path) -> tuple[str, int, Path]:
    """Send ``source``, cut the connection once 1 MiB arrived: (transfer id, bytes the receiver kept, downloads)."""
    a, b = await link()
    sender, receiver = Side(a, **SMALL), Side(b, **SMALL)
    downloads = tmp_path / "downloads"
    outgoing = await sender.transfers.send_files([source])
    incoming = await (await receiver.next_offer()).accept(downloads)
    await cut_after(receiver, b, MB)
    for transfer in (outgoing, incoming):
        with pytest.raises(TransferInterruptedError):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    kept = json.loads((downloads / f".peerchat-{outgoing.id}.transfer").read_text())["files"][0]["confirmed"]
    assert MB <= kept < source.stat().st_size
    return outgoing.id, kept, downloads


async def test_a_resumed_transfer_ends_verified_and_byte_identical(link: LinkFactory, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    size = 3 * MB
    source = random_file(tmp_path / "out" / "movie.bin", size)
    tid, kept, downloads = await interrupt(link, tmp_path, source)
    # Each side hashes the part the receiver has from its own disk while the rest moves, in steps; the sender
    # announces each (a huge prefix takes longer than the receiver's idle time-out): small steps here.
    monkeypatch.setattr(disk_module, "_HASH_STEP", 256 * 1024)
    a, b = await link()
    frames = record_sent_frames(a)
    sender, receiver = Side(a, **SMALL), Side(b, downloads, **SMALL)
    again = await sender.transfers.send_files([source], transfer_id=tid)
    resumed = (await receiver.next_offer()).transfer
    assert resumed is not None  # a known transfer id resumes by itself
    await asyncio.wait_for(asyncio.gather(again.wait(), resumed.wait()), WAIT)
    assert (downloads / "movie.bin").read_bytes() == source.read_bytes()
    assert again.resumed_bytes == kept and again.bytes_sent == size - kept  # only the rest crossed the link
    (digest,) = [decode_message(f) for f in frames if f[0] == DIGEST]
    assert digest.sha256 == sha(source)  # of the whole file: the sender hashed the part it did not send
    notes = [decode_message(f).offset for f in frames if f[0] == HASHING]
    assert len(notes) >= 4 and notes == sorted(set(notes)) and notes[-1] <= size
    assert all(later - earlier <= 256 * 1024 for earlier, later in zip([0, *notes], notes))
    kinds = [f[0] for f in frames]
    assert kinds.index(CHUNK) < kinds.index(HASHING)  # the first chunk did not wait for the prefix to be hashed
    assert kinds.index(DIGEST) > max(i for i, kind in enumerate(kinds) if kind == CHUNK)  # the digest comes last
    assert leftovers(downloads) == []


async def test_a_resume_onto_a_partial_file_changed_on_the_receiver_fails_integrity(link: LinkFactory,
                                                                                   tmp_path: Path) -> None:
    """The receiver hashes the part it already has from its own disk while the rest arrives: a change to that part
    (here, bytes overwritten in place) makes the digests differ, and no file appears under the final name."""
    source = random_file(tmp_path / "out" / "movie.bin", 3 * MB)
    tid, kept, downloads = await interrupt(link, tmp_path, source)
    (part,) = [path for path in downloads.iterdir() if path.name.endswith(".part")]
    with part.open("r+b") as f:
        f.seek(kept // 3)
        f.write(b"changed on the receiving disk")
    a, b = await link()
    sender, receiver = Side(a, **SMALL), Side(b, downloads, **SMALL)
    again = await sender.transfers.send_files([source], transfer_id=tid)
    resumed = (await receiver.next_offer()).transfer
    assert resumed is not None and resumed.resumed_bytes == kept
    with pytest.raises(IntegrityError, match="arrived damaged"):
        await asyncio.wait_for(resumed.wait(), WAIT)
    with pytest.raises(IntegrityError, match="movie.bin"):
        await asyncio.wait_for(again.wait(), WAIT)
    await asyncio.wait_for(resumed._task, WAIT)
    assert not (downloads / "movie.bin").exists()
    assert leftovers(downloads) == []


async def test_a_resume_against_a_source_changed_under_the_same_fingerprint_fails_integrity(
        link: LinkFactory, tmp_path: Path) -> None:
    """The part the receiver already has changed on the sender, with its modification time put back (so the
    fingerprint, which covers the size, the time and both ends, is the same): the resume goes ahead, the digests
    differ, and no file appears under the final name."""
    source = random_file(tmp_path / "out" / "movie.bin", 3 * MB)
    tid, kept, downloads = await interrupt(link, tmp_path, source)
    st = source.stat()
    with source.open("r+b") as f:
        f.seek(kept // 2)  # inside what the receiver has, far from both ends
        f.write(b"not what was sent")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    a, b = await link()
    sender, receiver = Side(a, **SMALL), Side(b, downloads, **SMALL)
    again = await sender.transfers.send_files([source], transfer_id=tid)
    resumed = (await receiver.next_offer()).transfer
    assert resumed is not None and resumed.resumed_bytes == kept  # the same fingerprint: it resumed
    for transfer in (again, resumed):
        with pytest.raises(IntegrityError, match="movie.bin"):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(resumed._task, WAIT)
    assert not (downloads / "movie.bin").exists()
    assert leftovers(downloads) == []


async def test_an_offer_from_a_peer_speaking_version_1_is_declined_saying_to_update_it(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        receiver = Side(pair.b, tmp_path / "downloads")
        old = ScriptedPeer(pair.a)  # an older peerchat: its offer carries each file's SHA-256, version 1
        await pair.a.send_bytes(b"\x01" + json.dumps({
            "v": 1, "id": old.id, "chunk_size": 1024, "window": 4, "part": 0, "parts": 1,
            "files": [["a.txt", 5, sha(random_file(tmp_path / "a.txt", 5))]]}).encode())
        decline = await old.expect(Decline)
        assert decline.id == old.id and "update peerchat on this device" in decline.reason
        async with asyncio.timeout(WAIT):
            while not receiver.of(ev.PROTOCOL_ERROR):
                await asyncio.sleep(0.01)
        (error,) = receiver.of(ev.PROTOCOL_ERROR)
        assert isinstance(error.error, ProtocolError)
        assert f"this device speaks version {PROTOCOL_VERSION}" in str(error.error)
        assert "update peerchat on the other device" in str(error.error)
        assert receiver.offers.empty() and not receiver.transfers.transfers  # nothing was accepted or written
        assert not (tmp_path / "downloads").exists() or list((tmp_path / "downloads").iterdir()) == []
    finally:
        await pair.close()


async def test_a_sender_whose_offer_is_declined_for_its_version_fails_at_once_saying_so(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        sender = Side(pair.a)
        newer = ScriptedPeer(pair.b)  # a receiver speaking a newer version declines as this version does
        outgoing = await sender.transfers.send_files([random_file(tmp_path / "a.bin", 10)])
        offer = await newer.expect(OfferPart)
        reason = ForeignOffer(id=offer.id, version=PROTOCOL_VERSION - 1).decline_reason()
        await newer.send(Decline(id=offer.id, reason=reason))
        with pytest.raises(TransferDeclinedError, match="update peerchat on this device"):
            await asyncio.wait_for(outgoing.wait(), WAIT)
    finally:
        await pair.close()


async def test_chunks_sent_again_after_a_rewind_are_not_hashed_again_and_the_digest_is_sent_once(
        tmp_path: Path) -> None:
    """A receiver (scripted) asks to rewind after the digest came: the chunks come again, the digest does not."""
    pair = MemoryConnectionPair()
    try:
        source = random_file(tmp_path / "x.bin", 5000)
        sender = Side(pair.a, chunk_size=1024, window=8)
        peer = ScriptedPeer(pair.b)
        outgoing = await sender.transfers.send_files([source])
        offer = await peer.expect(OfferPart)
        await peer.send(Accept(id=offer.id, offsets=(0,)))
        digest = await peer.expect(Digest)
        assert digest.sha256 == sha(source)
        await peer.send(Rewind(id=offer.id, file=0, offset=2048))
        again, others = [], []
        while len(again) < 3:
            message = await asyncio.wait_for(peer.received.get(), WAIT)
            (again if isinstance(message, Chunk) else others).append(message)
        assert others == []  # no second digest among the chunks sent again
        assert [c.offset for c in again] == [2048, 3072, 4096]
        assert b"".join(c.data for c in again) == source.read_bytes()[2048:]
        await peer.send(Ack(id=offer.id, file=0, offset=5000))
        await peer.send(Verified(id=offer.id, file=0))
        await asyncio.wait_for(outgoing.wait(), WAIT)
        await asyncio.sleep(0)
        leftover = []
        while not peer.received.empty():
            leftover.append(peer.received.get_nowait())
        assert not any(isinstance(m, Digest) for m in leftover)
    finally:
        await pair.close()
