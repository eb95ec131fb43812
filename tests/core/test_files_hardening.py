"""What a hostile or buggy device, or a full disk, must never do to the receiver's download folder.

A received name can never become (or be taken for) the receiver's own bookkeeping: resume records, ``.part`` files,
temporary files. A resume record is honoured only for the ``.part`` file its transfer created. Offers in flight are
bounded, idle ones expire, records exist only once data arrived, stale ones are swept, and no temporary file stays
behind after a failed write. Everything runs over the in-memory connection pair (the transfer layer is the same on
every link; tests/core/test_files_transfer.py runs it over the relay and WebRTC).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import events as ev
from core.errors import TransferDeclinedError, TransferInterruptedError
from core.files import disk as disk_module
from core.files import transfers as files_module
from core.files.protocol import Accept, Cancel, Chunk, Decline, FileEntry, Offer, encode_offer, new_transfer_id
from core.files.transfers import safe_relative_path
from core.options import ManagerOptions

try:
    from .memory_connection import MemoryConnectionPair
    from .test_files_transfer import WAIT, ScriptedPeer, Side, leftovers, random_file, sha
except ImportError:  # tests/ is not a package
    from memory_connection import MemoryConnectionPair
    from test_files_transfer import WAIT, ScriptedPeer, Side, leftovers, random_file, sha


@pytest.fixture
async def pair() -> AsyncIterator[MemoryConnectionPair]:
    made = MemoryConnectionPair()
    yield made
    await made.close()


async def until(condition, what: str = "the state the test needs") -> None:
    """Wait (bounded) until ``condition()`` holds, checking after every turn of the event loop."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- 1. names the receiver uses for itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offered, safe",
    [
        (".peerchat-0123456789abcdef0123456789abcdef.transfer", "_peerchat-0123456789abcdef0123456789abcdef.transfer"),
        (".PeerChat-x.transfer", "_PeerChat-x.transfer"),
        ("sub/.peerchat-x.transfer.tmp", "sub/_peerchat-x.transfer_tmp"),
        (".peerchat-dir/file", "_peerchat-dir/file"),
        ("movie.bin.part", "movie.bin_part"),
        ("MOVIE.PART", "MOVIE_PART"),
        ("notes.tmp", "notes_tmp"),
        (".part", "_part"),
        ("part", "part"),
        (".peerchat", ".peerchat"),
        ("report.partial", "report.partial"),
    ],
)
def test_names_the_receiver_uses_for_itself_are_renamed_on_arrival(offered: str, safe: str) -> None:
    assert "/".join(safe_relative_path(offered)) == safe


def forged_record(transfer_id: str, entry: FileEntry, part: str, confirmed: int, **extra) -> bytes:
    """A resume record as the receiver wrote them before it recorded which .part file it created."""
    return json.dumps({"id": transfer_id, "files": [{
        "path": entry.path, "size": entry.size, "fingerprint": entry.fingerprint, "confirmed": confirmed, "part": part,
        "target": "stolen.txt", "done": False, **extra}]}).encode()


async def test_a_file_named_like_a_resume_record_cannot_take_over_a_file_that_was_already_there(
        pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    precious = downloads / "precious.txt"
    precious.write_bytes(b"years of work\n" * 1000)
    before = precious.read_bytes()
    receiver = Side(pair.b, downloads)
    peer = ScriptedPeer(pair.a)
    # Step 1: the attacker sends a "resume record" as an ordinary file, naming precious.txt as its partial file.
    payload = b"A" * len(before)
    attack_id = new_transfer_id()
    victim = FileEntry("innocent.bin", len(payload), digest(payload))
    record = forged_record(attack_id, victim, "precious.txt", 3)
    await peer.offer((FileEntry(f".peerchat-{attack_id}.transfer", len(record), digest(record)),))
    first = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    await peer.send(Chunk(id=peer.id, file=0, offset=0, data=record))
    await peer.send_digest(0, record)
    await asyncio.wait_for(first.wait(), WAIT)
    assert not (downloads / f".peerchat-{attack_id}.transfer").exists()
    # Step 2: it offers the files the record describes, under the record's id.
    peer2 = ScriptedPeer(pair.a)
    peer2.id = attack_id
    await peer2.offer((victim,))
    offer = await receiver.next_offer()
    assert offer.transfer is None  # nothing resumed by itself: the receiver is asked
    second = await offer.accept(downloads)
    assert (await peer2.expect(Accept)).offsets == (0,)
    await peer2.send(Chunk(id=attack_id, file=0, offset=0, data=payload[:1024]))
    await second.cancel()
    await asyncio.wait_for(second._task, WAIT)
    assert precious.read_bytes() == before


@pytest.mark.parametrize("what", ["a file that was there", "a finished download", "a symbolic link",
                                  "an old record without identity"])
async def test_a_resume_record_is_honoured_only_for_the_part_file_its_transfer_created(
        pair: MemoryConnectionPair, tmp_path: Path, what: str) -> None:
    """However a record got there (an older version, a restore from a backup, a bug), it never makes the receiver
    truncate, overwrite or rename a file its transfer did not create."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    payload = os.urandom(5000)
    entry = FileEntry("innocent.bin", len(payload), digest(payload))
    tid = new_transfer_id()
    victim = downloads / "victim.part"
    victim.write_bytes(b"not yours " * 600)
    if what == "a finished download":
        victim = downloads / "finished.bin"
        victim.write_bytes(b"done " * 1000)
    part = victim.name
    extra: dict = {}
    if what == "a symbolic link":
        (downloads / "link.part").symlink_to(victim)
        part = "link.part"
    if what != "an old record without identity":  # the identity of some other file: never this one's
        st = victim.stat()
        extra = {"part_id": [st.st_dev, st.st_ino + 1], "token": "0" * 32}
    (downloads / f".peerchat-{tid}.transfer").write_bytes(forged_record(tid, entry, part, 100, **extra))
    before = victim.read_bytes()
    receiver = Side(pair.b, downloads)
    peer = ScriptedPeer(pair.a)
    peer.id = tid
    await peer.offer((entry,))
    offer = await receiver.next_offer()
    transfer = offer.transfer or await offer.accept(downloads)
    assert (await peer.expect(Accept)).offsets == (0,)
    for offset in range(0, len(payload), 1024):
        await peer.send(Chunk(id=tid, file=0, offset=offset, data=payload[offset:offset + 1024]))
    await peer.send_digest(0, payload)
    await asyncio.wait_for(transfer.wait(), WAIT)
    assert victim.read_bytes() == before
    assert transfer.saved_to[0].read_bytes() == payload
    assert transfer.saved_to[0] != victim


async def test_an_interrupted_transfer_still_resumes_from_the_part_file_it_created(
        pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    payload = os.urandom(8192)
    entry = FileEntry("movie.bin", len(payload), digest(payload))
    receiver = Side(pair.b, downloads)
    peer = ScriptedPeer(pair.a)
    await peer.offer((entry,))
    first = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    for offset in range(0, 4096, 1024):
        await peer.send(Chunk(id=peer.id, file=0, offset=offset, data=payload[offset:offset + 1024]))
    await peer.send(Cancel(id=peer.id, kind="interrupted", message="later"))
    with pytest.raises(TransferInterruptedError):
        await asyncio.wait_for(first.wait(), WAIT)
    await asyncio.wait_for(first._task, WAIT)
    record = json.loads((downloads / f".peerchat-{peer.id}.transfer").read_text())
    assert record["files"][0]["confirmed"] == 4096
    await peer.offer((entry,))
    resumed = (await receiver.next_offer()).transfer
    assert resumed is not None
    assert (await peer.expect(Accept)).offsets == (4096,)
    for offset in range(4096, len(payload), 1024):
        await peer.send(Chunk(id=peer.id, file=0, offset=offset, data=payload[offset:offset + 1024]))
    await peer.send_digest(0, payload)  # of the whole file: the receiver hashed the 4096 bytes it had first
    await asyncio.wait_for(resumed.wait(), WAIT)
    assert (downloads / "movie.bin").read_bytes() == payload
    assert leftovers(downloads) == []


# --- 2. offers in flight, idle offers, records only once data arrived, stale records ------------------------------


def offer_part(tid: str, parts: int, files: tuple[FileEntry, ...]) -> bytes:
    (frame,) = encode_offer(Offer(id=tid, files=files, chunk_size=1024, window=4), max_frame=60_000)
    body = json.loads(frame[1:])
    body["parts"] = parts
    return frame[:1] + json.dumps(body).encode()


async def test_offers_in_flight_are_limited_with_a_clear_refusal(pair: MemoryConnectionPair, tmp_path: Path) -> None:
    options = ManagerOptions(max_pending_offers=3)
    receiver = Side(pair.b, options=options)
    peer = ScriptedPeer(pair.a)
    entry = FileEntry("x.bin", 1, digest(b"x"))
    ids = [new_transfer_id() for _ in range(5)]
    for tid in ids[:2]:  # two offers that announce 1,000 parts and send only the first
        await pair.a.send_bytes(offer_part(tid, 1000, (entry,)))
    peer.id = ids[2]
    await peer.offer((entry,))  # one whole offer, waiting for an answer
    await receiver.next_offer()
    for tid in ids[3:]:
        peer.id = tid
        await peer.offer((entry,))
    declines = [await peer.expect(Decline), await peer.expect(Decline)]
    assert [d.id for d in declines] == ids[3:]
    assert "3 offers" in declines[0].reason and "at most 3" in declines[0].reason
    assert receiver.offers.empty()
    assert len(receiver.transfers._assembler._pending) == 2


async def test_an_offer_whose_parts_stop_arriving_expires(pair: MemoryConnectionPair, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(files_module, "_now", lambda: clock[0])
    options = ManagerOptions(max_pending_offers=1, offer_idle_timeout=30.0)
    receiver = Side(pair.b, options=options)
    peer = ScriptedPeer(pair.a)
    entry = FileEntry("x.bin", 1, digest(b"x"))
    stalled = new_transfer_id()
    await pair.a.send_bytes(offer_part(stalled, 1000, (entry,)))
    await until(lambda: stalled in receiver.transfers._assembler)
    clock[0] += 31.0
    await peer.offer((entry,))
    offer = await receiver.next_offer()
    assert offer.id == peer.id
    assert stalled not in receiver.transfers._assembler._pending
    [error] = receiver.of(ev.PROTOCOL_ERROR)
    assert "30 s" in str(error.error) and "gave up" in str(error.error)


async def test_an_accepted_offer_through_which_nothing_arrives_expires_and_leaves_nothing_on_disk(
        pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    receiver = Side(pair.b, options=ManagerOptions(transfer_idle_timeout=0.2))
    transfers = []
    peers = []
    for n in range(3):
        peer = ScriptedPeer(pair.a)
        await peer.offer((FileEntry(f"f{n}.bin", 10, digest(b"0123456789")),))
        transfers.append(await (await receiver.next_offer()).accept(downloads))
        peers.append(peer)
    for transfer in transfers:
        await peers[0].expect(Accept)
        with pytest.raises(TransferInterruptedError, match="Nothing arrived"):
            await asyncio.wait_for(transfer.wait(), WAIT)
        await asyncio.wait_for(transfer._task, WAIT)
    assert sorted(p.name for p in downloads.iterdir()) == []


async def test_no_record_is_written_before_data_arrives(pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    receiver = Side(pair.b)
    peer = ScriptedPeer(pair.a)
    await peer.offer((FileEntry("f.bin", 10, digest(b"0123456789")),))
    transfer = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    assert list(downloads.iterdir()) == []
    await peer.send(Chunk(id=peer.id, file=0, offset=0, data=b"01234"))
    await until(lambda: transfer.bytes_done == 5)
    await receiver.transfers.close()
    await asyncio.wait_for(transfer._task, WAIT)
    assert leftovers(downloads) == [f".peerchat-{peer.id}.transfer", "f.bin.part"]


async def test_stale_records_and_the_part_files_they_created_are_removed_after_their_age(
        pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    receiver = Side(pair.b, downloads, options=ManagerOptions(resume_max_age=7 * 24 * 3600))
    peer = ScriptedPeer(pair.a)
    await peer.offer((FileEntry("old.bin", 10, digest(b"0123456789")),))
    old = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    await peer.send(Chunk(id=peer.id, file=0, offset=0, data=b"01234"))
    await peer.send(Cancel(id=peer.id, kind="interrupted", message="later"))
    await asyncio.wait_for(old._task, WAIT)
    assert leftovers(downloads) == [f".peerchat-{peer.id}.transfer", "old.bin.part"]
    mine = downloads / "mine.part"  # a user's own file that looks like a partial file: never touched
    mine.write_bytes(b"mine")
    eight_days_ago = time.time() - 8 * 24 * 3600
    for path in downloads.iterdir():
        os.utime(path, (eight_days_ago, eight_days_ago))
    # The same transfer offered again is not resumed by itself any more: its record is too old.
    await peer.offer((FileEntry("old.bin", 10, digest(b"0123456789")),))
    again = await receiver.next_offer()
    assert again.transfer is None
    await again.decline("not now")
    fresh = ScriptedPeer(pair.a)
    await fresh.offer((FileEntry("new.bin", 1, digest(b"x")),))
    await (await receiver.next_offer()).accept(downloads)
    await fresh.expect(Accept)
    assert sorted(p.name for p in downloads.iterdir()) == ["mine.part"]


# --- 3. no temporary record file after a failed write --------------------------------------------------------------


async def test_no_temporary_record_file_stays_behind_after_a_full_disk(pair: MemoryConnectionPair, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up while a transfer is interrupted (its record cannot be written); later the same file is sent
    again under a new transfer id and arrives: nothing of the first attempt's bookkeeping is left."""
    downloads = tmp_path / "downloads"
    real_write = disk_module._write_record_bytes
    full = [True]

    def on_a_full_disk(fd: int, data: bytes) -> None:
        if full[0]:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(disk_module, "_write_record_bytes", on_a_full_disk)
    payload = os.urandom(4096)
    entry = FileEntry("x.bin", len(payload), digest(payload))
    receiver = Side(pair.b)
    peer = ScriptedPeer(pair.a)
    await peer.offer((entry,))
    first = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    for offset in (0, 1024):
        await peer.send(Chunk(id=peer.id, file=0, offset=offset, data=payload[offset:offset + 1024]))
    await until(lambda: first.bytes_done == 2048)
    await peer.send(Cancel(id=peer.id, kind="interrupted", message="later"))
    await asyncio.wait_for(first._task, WAIT)
    assert [p.name for p in downloads.iterdir() if p.name.endswith(".tmp")] == []
    full[0] = False
    again = ScriptedPeer(pair.a)
    await again.offer((entry,))
    second = await (await receiver.next_offer()).accept(downloads)
    await again.expect(Accept)
    for offset in range(0, len(payload), 1024):
        await again.send(Chunk(id=again.id, file=0, offset=offset, data=payload[offset:offset + 1024]))
    await again.send_digest(0, payload)
    await asyncio.wait_for(second.wait(), WAIT)
    assert second.saved_to[0].read_bytes() == payload
    assert leftovers(downloads) == []


def test_a_failed_record_write_removes_its_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk_module, "_write_record_bytes", full)
    record = tmp_path / ".peerchat-x.transfer"
    with pytest.raises(OSError):
        disk_module._write_json(record, {"id": "x", "files": []})
    assert list(tmp_path.iterdir()) == []


async def test_a_declined_refusal_reads_well_on_the_sending_side(pair: MemoryConnectionPair, tmp_path: Path) -> None:
    options = ManagerOptions(max_pending_offers=1)
    sender = Side(pair.a)
    receiver = Side(pair.b, options=options)
    first = await sender.transfers.send_files([random_file(tmp_path / "a.bin", 10)])
    await receiver.next_offer()
    second = await sender.transfers.send_files([random_file(tmp_path / "b.bin", 10)])
    with pytest.raises(TransferDeclinedError, match="too many offers"):
        await asyncio.wait_for(second.wait(), WAIT)
    assert first.state.value == "offered"


def test_the_offer_assembler_drops_offers_whose_parts_stopped_coming() -> None:
    from core.files.protocol import OfferAssembler, OfferPart

    entry = FileEntry("x.bin", 1, digest(b"x"))
    assembler = OfferAssembler()
    old, fresh = new_transfer_id(), new_transfer_id()
    assert assembler.feed(OfferPart(old, (entry,), 1024, 4, 0, 2), now=10.0) is None
    assert assembler.feed(OfferPart(fresh, (entry,), 1024, 4, 0, 2), now=20.0) is None
    assert len(assembler) == 2 and old in assembler
    assert assembler.expire(before=15.0) == [old]
    assert len(assembler) == 1 and old not in assembler
    assert assembler.feed(OfferPart(fresh, (entry,), 1024, 4, 1, 2), now=21.0) is not None
    assert len(assembler) == 0 and assembler.expire(before=100.0) == []


async def test_stale_records_are_swept_when_the_transfers_start_on_a_download_folder(
        pair: MemoryConnectionPair, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    receiver = Side(pair.b, downloads)
    peer = ScriptedPeer(pair.a)
    await peer.offer((FileEntry("old.bin", 10, digest(b"0123456789")),))
    old = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    await peer.send(Chunk(id=peer.id, file=0, offset=0, data=b"01234"))
    await peer.send(Cancel(id=peer.id, kind="interrupted", message="later"))
    await asyncio.wait_for(old._task, WAIT)
    await receiver.transfers.close()
    young = sorted(p.name for p in downloads.iterdir())
    assert young == [f".peerchat-{peer.id}.transfer", "old.bin.part"]
    again = Side(pair.b, downloads)  # a younger record is kept for a resume
    await asyncio.wait_for(again.transfers._sweep, WAIT)
    assert sorted(p.name for p in downloads.iterdir()) == young
    await again.transfers.close()
    eight_days_ago = time.time() - 8 * 24 * 3600
    for path in downloads.iterdir():
        os.utime(path, (eight_days_ago, eight_days_ago))
    later = Side(pair.b, downloads)
    await asyncio.wait_for(later.transfers._sweep, WAIT)
    assert list(downloads.iterdir()) == []
    await later.transfers.close()
