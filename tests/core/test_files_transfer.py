"""File transfers end to end over real files: sizes, folders, decline, cancel, resume, hostile peers, full disks.

Every test takes the ``link`` fixture: a factory of connected (sender, receiver) PeerConnection pairs: in memory
(``MemoryConnectionPair``), and the real manager's connections through the emulator, relay only and upgraded to
WebRTC (aiortc on 127.0.0.1). The test bodies only use the PeerConnection ABC, ``disconnect()`` included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core import events as ev
from core.files import disk as disk_module
from core.files import transfers as files_module
from core.errors import (
    DiskError,
    InsufficientSpaceError,
    IntegrityError,
    TransferCancelledError,
    TransferDeclinedError,
    TransferInterruptedError,
)
from core.files.transfers import FileTransfers, max_chunk_payload
from core.options import ManagerOptions
from core.peer import PeerConnection, PeerInfo
from core.files.protocol import (
    Accept,
    Cancel,
    Chunk,
    Digest,
    FileEntry,
    Offer,
    Verified,
    decode_message,
    encode_message,
    encode_offer,
    new_transfer_id,
)

try:
    from .memory_connection import MemoryConnectionPair
except ImportError:  # tests/ is not a package
    from memory_connection import MemoryConnectionPair

MB = 1024 * 1024
# The large-file cases (the issue asks for 50 MB over the relay and over WebRTC).
LARGE_SIZES = [pytest.param(5 * MB, id="5MB"), pytest.param(50 * MB, marks=pytest.mark.slow, id="50MB")]
WAIT = float(os.environ.get("TRANSFER_TEST_WAIT", "60"))

LinkFactory = Callable[[], Awaitable[tuple[PeerConnection, PeerConnection]]]


RULES = Path(__file__).resolve().parents[2] / "firebase" / "database.rules.json"
RELAY_OPTIONS = ManagerOptions(heartbeat_interval=0.5, connect_timeout=10.0, ack_timeout=20.0, retransmit_interval=1.0,
                               ping_interval=0.5, peer_timeout=15.0, close_timeout=2.0, webrtc=False, direct=False)
WEBRTC_OPTIONS = dataclasses.replace(RELAY_OPTIONS, webrtc=True, connect_timeout=20.0, upgrade_timeout=15.0,
                                     reupgrade_interval=60.0)
# Loopback candidates only; keep-alives often enough that a torn-down transport is noticed within seconds.
WEBRTC_LINK = {"host_addresses": ("127.0.0.1",), "keepalive_interval": 0.3, "idle_timeout": 3.0}


async def manager_pairs(request: pytest.FixtureRequest, webrtc: bool) -> AsyncIterator[LinkFactory]:
    """Connections between two devices of one user through the emulator (FirebasePeerConnectionManager), each call
    a new session: relay only, or upgraded to WebRTC by the default upgrader (``webrtc_upgrader``)."""
    from core.manager import FirebasePeerConnectionManager
    from core.webrtc.upgrade import webrtc_upgrader

    factory = request.getfixturevalue("firebase_app_factory")
    factory.load_rules(RULES)
    options = WEBRTC_OPTIONS if webrtc else RELAY_OPTIONS
    managers = [FirebasePeerConnectionManager(
        "alice", PeerInfo(device, device), app=factory.make({"uid": "alice"}), options=options,
        upgrader=webrtc_upgrader(options, **WEBRTC_LINK) if webrtc else None) for device in ("laptop", "phone")]
    for manager in managers:
        await manager.start()
    incoming: asyncio.Queue[PeerConnection] = asyncio.Queue()
    managers[1].events.on(ev.INCOMING_CONNECTION, lambda e: incoming.put_nowait(e.connection))

    async def make() -> tuple[PeerConnection, PeerConnection]:
        async with asyncio.timeout(WAIT):
            while True:
                if any(p.id == "phone" for p in await managers[0].get_online_peers()):
                    break
                await asyncio.sleep(0.05)
            a = await managers[0].connect_to_peer("phone")
            b = await incoming.get()
        expected = "webrtc" if webrtc else "relay"
        assert a.transport == b.transport == expected, (a.upgrade_failure, b.upgrade_failure)
        return a, b

    try:
        yield make
    finally:
        for manager in managers:
            await manager.stop()


@pytest.fixture(params=["memory", "relay", "webrtc"])
async def link(request: pytest.FixtureRequest) -> AsyncIterator[LinkFactory]:
    async for make in link_pairs(request):
        yield make


async def link_pairs(request: pytest.FixtureRequest) -> AsyncIterator[LinkFactory]:
    """The body of a ``link`` fixture: connected pairs over memory, or two managers on the relay (with WebRTC for
    ``"webrtc"``), as ``request.param`` says; everything made is closed afterwards."""
    if request.param != "memory":
        async for make in manager_pairs(request, webrtc=request.param == "webrtc"):
            yield make
        return
    pairs: list[MemoryConnectionPair] = []

    async def make() -> tuple[PeerConnection, PeerConnection]:
        pair = MemoryConnectionPair()
        pairs.append(pair)
        return pair.a, pair.b

    yield make
    for pair in pairs:
        await pair.close()


class Side:
    """One device: a FileTransfers on its end of the link, and every event it emitted."""

    def __init__(self, connection: PeerConnection, download_dir: Path | None = None, **kwargs) -> None:
        self.transfers = FileTransfers(connection, download_dir=download_dir, progress_interval=0, **kwargs)
        self.events: list[tuple[str, object]] = []
        self.offers: asyncio.Queue[ev.IncomingTransfer] = asyncio.Queue()
        for name in (ev.TRANSFER_PROGRESS, ev.TRANSFER_FILE_DONE, ev.TRANSFER_FINISHED, ev.TRANSFER_FAILED,
                     ev.PROTOCOL_ERROR):
            self.transfers.events.on(name, lambda payload, name=name: self.events.append((name, payload)))
        self.transfers.events.on(ev.INCOMING_TRANSFER, self.offers.put_nowait)

    def of(self, name: str) -> list:
        return [payload for event, payload in self.events if event == name]

    async def next_offer(self):
        return (await asyncio.wait_for(self.offers.get(), WAIT)).offer


async def sides(link: LinkFactory, tmp_path: Path, **kwargs) -> tuple[Side, Side, Path]:
    a, b = await link()
    downloads = tmp_path / "downloads"
    return Side(a, **kwargs), Side(b, **kwargs), downloads


def random_file(path: Path, size: int, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".part", ".transfer", ".tmp")))


async def send_and_accept(sender: Side, receiver: Side, paths: list[Path], downloads: Path, wait: float = WAIT):
    outgoing = await sender.transfers.send_files(paths)
    offer = await receiver.next_offer()
    incoming = await offer.accept(downloads)
    await asyncio.wait_for(asyncio.gather(outgoing.wait(), incoming.wait()), wait)
    return outgoing, incoming


def chunk_sizes(connection: PeerConnection) -> list[int]:
    chunk = max_chunk_payload(connection, ManagerOptions())
    return [0, 1, chunk, 3 * chunk, 3 * chunk + 1]


@pytest.mark.parametrize("which", range(5), ids=["empty", "one-byte", "one-chunk", "three-chunks", "three-plus-1"])
async def test_sizes_arrive_intact_with_progress_on_both_sides(link: LinkFactory, tmp_path: Path, which: int) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    size = chunk_sizes(sender.transfers.connection)[which]
    source = random_file(tmp_path / "out" / "data.bin", size)
    outgoing, incoming = await send_and_accept(sender, receiver, [source], downloads)
    assert sha(downloads / "data.bin") == sha(source)
    assert incoming.saved_to == [downloads.resolve() / "data.bin"]
    assert leftovers(downloads) == []
    for side, transfer in ((sender, outgoing), (receiver, incoming)):
        (finished,) = side.of(ev.TRANSFER_FINISHED)
        assert finished.transfer is transfer and finished.bytes_total == size
        last = side.of(ev.TRANSFER_PROGRESS)[-1]
        assert (last.bytes_done, last.bytes_total, last.files_done, last.eta) == (size, size, 1, 0.0)
        assert [d.path for d in side.of(ev.TRANSFER_FILE_DONE)] == ["data.bin"]


@pytest.mark.parametrize("size", LARGE_SIZES)
async def test_a_large_random_file_arrives_intact(link: LinkFactory, tmp_path: Path, size: int) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    source = random_file(tmp_path / "out" / "big.bin", size)
    outgoing, _ = await send_and_accept(sender, receiver, [source], downloads, wait=max(WAIT, 110))
    assert sha(downloads / "big.bin") == sha(source)
    progress = [p.bytes_done for p in receiver.of(ev.TRANSFER_PROGRESS)]
    assert progress == sorted(progress) and len(progress) > 10
    assert outgoing.bytes_sent == size


async def test_folders_with_nested_subfolders_and_several_files(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    album = tmp_path / "out" / "album"
    made = [random_file(album / rel, size, seed) for seed, (rel, size) in enumerate(
        [("a.jpg", 1000), ("2024/b.jpg", 70_000), ("2024/summer/c.jpg", 0), ("2024/summer/deep/d.jpg", 5)])]
    note = random_file(tmp_path / "out" / "note.txt", 10)
    (downloads / "album").mkdir(parents=True)
    (downloads / "album" / "a.jpg").write_bytes(b"already here")
    outgoing, incoming = await send_and_accept(sender, receiver, [album, note], downloads)
    assert [f.path for f in outgoing.files] == [
        "album/a.jpg", "album/2024/b.jpg", "album/2024/summer/c.jpg", "album/2024/summer/deep/d.jpg", "note.txt"]
    for source in made[1:]:
        assert sha(downloads / source.relative_to(tmp_path / "out")) == sha(source)
    assert (downloads / "album" / "a.jpg").read_bytes() == b"already here"  # never overwritten
    assert sha(downloads / "album" / "a (1).jpg") == sha(made[0])
    assert sha(downloads / "note.txt") == sha(note)
    assert len(receiver.of(ev.TRANSFER_FILE_DONE)) == 5 and leftovers(downloads) == []


def tree_of(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a folder as "folder", a file as its SHA-256."""
    return {p.relative_to(root).as_posix(): "folder" if p.is_dir() else sha(p) for p in root.rglob("*")}


@pytest.mark.parametrize("link", ["memory", "relay"], indirect=True)
async def test_a_tree_with_nested_empty_folders_arrives_as_sent(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    root = tmp_path / "out" / "project"
    for rel in ("empty", "src/pkg/empty-too", "docs/a/b/c", "src/pkg"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for seed, (rel, size) in enumerate([("README", 300), ("src/pkg/mod.py", 70_000), ("src/zero", 0)]):
        random_file(root / rel, size, seed)
    outgoing, incoming = await send_and_accept(sender, receiver, [root], downloads)
    assert tree_of(downloads / "project") == tree_of(root)
    assert "project/docs/a/b/c" in incoming.folders and outgoing.folders == incoming.folders
    assert (downloads.resolve() / "project" / "docs" / "a" / "b" / "c") in incoming.folders_created
    assert outgoing.bytes_total == incoming.bytes_total == 70_300
    last = receiver.of(ev.TRANSFER_PROGRESS)[-1]
    assert (last.bytes_done, last.files_done, last.files_total) == (70_300, 3, 3)
    assert outgoing.skipped == () and leftovers(downloads) == []


async def test_an_empty_folder_alone_arrives(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        sender, receiver, downloads = Side(pair.a), Side(pair.b), tmp_path / "downloads"
        (tmp_path / "out" / "nothing" / "inside").mkdir(parents=True)
        outgoing, incoming = await send_and_accept(sender, receiver, [tmp_path / "out" / "nothing"], downloads)
        assert tree_of(downloads) == {"nothing": "folder", "nothing/inside": "folder"}
        assert outgoing.files == () and incoming.state is files_module.TransferState.FINISHED
        assert len(sender.of(ev.TRANSFER_FINISHED)) == len(receiver.of(ev.TRANSFER_FINISHED)) == 1
    finally:
        await pair.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
async def test_symlinks_and_named_pipes_in_a_sent_folder_are_skipped_with_a_note(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        sender, receiver, downloads = Side(pair.a), Side(pair.b), tmp_path / "downloads"
        root = tmp_path / "out" / "mixed"
        random_file(root / "keep.bin", 1000)
        (tmp_path / "secret").write_text("not to be sent")
        (root / "link").symlink_to(tmp_path / "secret")
        os.mkfifo(root / "pipe")
        outgoing, incoming = await send_and_accept(sender, receiver, [root], downloads)
        assert tree_of(downloads) == {"mixed": "folder", "mixed/keep.bin": sha(root / "keep.bin")}
        assert len(outgoing.skipped) == 2
        assert any("link" in n and "symbolic link" in n for n in outgoing.skipped)
        assert any("pipe" in n and "named pipe" in n for n in outgoing.skipped)
    finally:
        await pair.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
async def test_a_file_replaced_by_a_named_pipe_after_the_walk_fails_the_send_instead_of_hanging(
        tmp_path: Path, monkeypatch) -> None:
    pair = MemoryConnectionPair()
    try:
        sender = Side(pair.a)
        source = random_file(tmp_path / "out" / "dir" / "data.bin", 10)
        real_walk = files_module.walk_tree

        def walk_then_swap(paths):
            tree = real_walk(paths)
            source.unlink()
            os.mkfifo(source)
            return tree

        monkeypatch.setattr(files_module, "walk_tree", walk_then_swap)
        with pytest.raises(DiskError, match="named pipe"):
            await asyncio.wait_for(sender.transfers.send_files([source.parent]), WAIT)
    finally:
        await pair.close()


async def test_hostile_folder_names_stay_inside_the_download_folder(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        receiver, downloads = Side(pair.b), tmp_path / "downloads"
        peer = ScriptedPeer(pair.a)
        payload = b"x"
        await peer.offer((FileEntry("f", 1, hashlib.sha256(payload).hexdigest()),),
                         ("../../up", "/abs/olute", "a\\..\\..\\CON", "..", "ok/\x07bell"))
        incoming = await (await receiver.next_offer()).accept(downloads)
        await peer.expect(Accept)
        await peer.send(Chunk(id=peer.id, file=0, offset=0, data=payload))
        await peer.send_digest(0, payload)
        await asyncio.wait_for(incoming.wait(), WAIT)
        assert sorted(k for k, v in tree_of(downloads).items() if v == "folder") == [
            "a", "a/_CON", "abs", "abs/olute", "ok", "ok/bell", "unnamed", "up"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]
    finally:
        await pair.close()


async def test_a_folder_whose_name_is_taken_by_a_file_is_refused_clearly(tmp_path: Path) -> None:
    pair = MemoryConnectionPair()
    try:
        sender, receiver, downloads = Side(pair.a), Side(pair.b), tmp_path / "downloads"
        (tmp_path / "out" / "box" / "inner" / "deeper").mkdir(parents=True)
        random_file(tmp_path / "out" / "box" / "f.bin", 10)
        (downloads / "box").mkdir(parents=True)
        (downloads / "box" / "inner").write_bytes(b"mine")
        outgoing = await sender.transfers.send_files([tmp_path / "out" / "box"])
        offer = await receiver.next_offer()
        with pytest.raises(DiskError, match="already there"):
            await offer.accept(downloads)
        with pytest.raises(DiskError):
            await asyncio.wait_for(outgoing.wait(), WAIT)
        assert (downloads / "box" / "inner").read_bytes() == b"mine"
        assert sorted(p.name for p in (downloads / "box").iterdir()) == ["inner"]
    finally:
        await pair.close()


async def test_several_transfers_at_once_alongside_chat(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    chat: asyncio.Queue[str] = asyncio.Queue()
    receiver.transfers.connection.events.on(ev.DATA, lambda d: chat.put_nowait(d.data))
    sources = [random_file(tmp_path / "out" / f"f{i}.bin", 300_000 + i, seed=i) for i in range(3)]
    outgoing = [await sender.transfers.send_files([s]) for s in sources]
    incoming = [await (await receiver.next_offer()).accept(downloads) for _ in sources]
    for i in range(5):
        await sender.transfers.connection.send(f"hello {i}")
    await asyncio.wait_for(asyncio.gather(*(t.wait() for t in outgoing + incoming)), WAIT)
    assert [await asyncio.wait_for(chat.get(), WAIT) for _ in range(5)] == [f"hello {i}" for i in range(5)]
    for source in sources:
        assert sha(downloads / source.name) == sha(source)


async def test_accepting_twice_at_once_accepts_once(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    source = random_file(tmp_path / "out" / "x.bin", 100_000)
    outgoing = await sender.transfers.send_files([source])
    offer = await receiver.next_offer()
    first, second = await asyncio.gather(offer.accept(downloads), offer.accept(downloads))
    assert first is second is offer.transfer
    await asyncio.wait_for(asyncio.gather(outgoing.wait(), first.wait()), WAIT)
    assert sorted(p.name for p in downloads.iterdir()) == ["x.bin"]


async def test_decline(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    outgoing = await sender.transfers.send_files([random_file(tmp_path / "out" / "x.bin", 100)])
    offer = await receiver.next_offer()
    assert [(f.path, f.size) for f in offer.files] == [("x.bin", 100)]
    await offer.decline("not on this device")
    with pytest.raises(TransferDeclinedError, match="not on this device"):
        await asyncio.wait_for(outgoing.wait(), WAIT)
    assert not downloads.exists()


@pytest.mark.parametrize("who", ["sender", "receiver"])
async def test_cancel_by_either_side_mid_transfer(link: LinkFactory, tmp_path: Path, who: str) -> None:
    sender, receiver, downloads = await sides(link, tmp_path, chunk_size=4096, window=4)
    outgoing = await sender.transfers.send_files([random_file(tmp_path / "out" / "x.bin", 2 * MB)])
    incoming = await (await receiver.next_offer()).accept(downloads)
    cancelling = outgoing if who == "sender" else incoming
    side = sender if who == "sender" else receiver

    def on_progress(progress: TransferProgress) -> None:
        if progress.bytes_done > 0:
            asyncio.ensure_future(cancelling.cancel())

    side.transfers.events.on(ev.TRANSFER_PROGRESS, on_progress)
    for transfer in (outgoing, incoming):
        with pytest.raises(TransferCancelledError, match=f"{who} cancelled"):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    assert list(downloads.iterdir()) == []  # the partial data is gone
    assert len(receiver.of(ev.TRANSFER_FAILED)) == 1 and len(sender.of(ev.TRANSFER_FAILED)) == 1


async def cut_after(side: Side, connection: PeerConnection, bytes_done: int) -> None:
    def on_progress(progress: TransferProgress) -> None:
        if progress.bytes_done >= bytes_done and not connection.is_closed:
            asyncio.ensure_future(connection.disconnect())

    side.transfers.events.on(ev.TRANSFER_PROGRESS, on_progress)


@pytest.mark.parametrize("same_id", [True, False], ids=["same-transfer-id", "same-hash-new-id"])
async def test_an_interrupted_transfer_resumes_on_a_new_connection(link: LinkFactory, tmp_path: Path,
                                                                   same_id: bool) -> None:
    size = 3 * MB
    source = random_file(tmp_path / "out" / "movie.bin", size)
    sender, receiver, downloads = await sides(link, tmp_path, chunk_size=16 * 1024, window=4)
    outgoing = await sender.transfers.send_files([source])
    incoming = await (await receiver.next_offer()).accept(downloads)
    await cut_after(receiver, receiver.transfers.connection, MB)
    for transfer in (outgoing, incoming):
        with pytest.raises(TransferInterruptedError):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    assert leftovers(downloads) == [f".peerchat-{outgoing.id}.transfer", "movie.bin.part"]
    kept = json.loads((downloads / f".peerchat-{outgoing.id}.transfer").read_text())["files"][0]["confirmed"]
    assert MB <= kept < size

    # A new connection (a new session): the receiver's FileTransfers knows the download folder.
    a, b = await link()
    sender2 = Side(a, chunk_size=16 * 1024, window=4)
    receiver2 = Side(b, downloads if same_id else None, chunk_size=16 * 1024, window=4)
    again = await sender2.transfers.send_files([source], transfer_id=outgoing.id if same_id else None)
    offer = await receiver2.next_offer()
    resumed = offer.transfer if same_id else await offer.accept(downloads)
    assert resumed is not None
    await asyncio.wait_for(asyncio.gather(again.wait(), resumed.wait()), WAIT)
    assert sha(downloads / "movie.bin") == sha(source)
    assert leftovers(downloads) == []
    assert again.resumed_bytes == resumed.resumed_bytes == kept
    assert again.bytes_sent == size - kept  # nothing that had arrived was sent again


async def test_closing_the_transfers_mid_way_tells_the_peer_and_keeps_the_partial_file(link: LinkFactory,
                                                                                    tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path, chunk_size=16 * 1024, window=4)
    outgoing = await sender.transfers.send_files([random_file(tmp_path / "out" / "x.bin", 2 * MB)])
    incoming = await (await receiver.next_offer()).accept(downloads)
    closing = asyncio.get_running_loop().create_future()
    receiver.transfers.events.on(ev.TRANSFER_PROGRESS, lambda p: p.bytes_done >= 100_000 and not closing.done()
                                 and closing.set_result(asyncio.ensure_future(sender.transfers.close())))
    await asyncio.wait_for(await closing, WAIT)
    for transfer in (outgoing, incoming):
        with pytest.raises(TransferInterruptedError):
            await asyncio.wait_for(transfer.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    assert leftovers(downloads) == [f".peerchat-{outgoing.id}.transfer", "x.bin.part"]
    assert not sender.transfers.connection.is_closed  # chat can go on


async def test_hostile_names_stay_inside_the_download_folder(link: LinkFactory, tmp_path: Path) -> None:
    a, b = await link()
    receiver = Side(b)
    downloads = tmp_path / "downloads"
    peer = ScriptedPeer(a)
    names = ["../../escape.txt", "/etc/passwd", "CON", "dir\\..\\..\\nul.txt", "bell\x07.txt"]
    payload = b"hostile"
    files = tuple(FileEntry(n, len(payload), hashlib.sha256(payload).hexdigest()) for n in names)
    await peer.offer(files)
    incoming = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    for index in range(len(names)):
        await peer.send(Chunk(id=peer.id, file=index, offset=0, data=payload))
        await peer.send_digest(index, payload)
    await asyncio.wait_for(incoming.wait(), WAIT)
    saved = sorted(str(p.relative_to(downloads.resolve())) for p in incoming.saved_to)
    assert saved == ["_CON", "bell.txt", "dir/_nul.txt", "escape.txt", "etc/passwd"]
    assert all((downloads / s).read_bytes() == payload for s in saved)
    assert not (tmp_path / "escape.txt").exists()


async def test_a_hash_mismatch_deletes_the_partial_file_and_tells_the_sender(link: LinkFactory,
                                                                              tmp_path: Path) -> None:
    a, b = await link()
    receiver = Side(b)
    downloads = tmp_path / "downloads"
    peer = ScriptedPeer(a)
    await peer.offer((FileEntry("x.bin", 5, hashlib.sha256(b"hello").hexdigest()),))
    incoming = await (await receiver.next_offer()).accept(downloads)
    await peer.expect(Accept)
    await peer.send(Chunk(id=peer.id, file=0, offset=0, data=b"HELLO"))
    await peer.send_digest(0, b"hello")  # the sender's file is not what arrived
    with pytest.raises(IntegrityError, match="x.bin"):
        await asyncio.wait_for(incoming.wait(), WAIT)
    assert (await peer.expect(Cancel)).kind == "integrity"
    await asyncio.wait_for(incoming._task, WAIT)
    assert list(downloads.iterdir()) == []


async def test_malformed_frames_are_reported_and_transfers_go_on(link: LinkFactory, tmp_path: Path) -> None:
    a, b = await link()
    receiver = Side(b)
    for garbage in (b"", b"\x99junk", b"\x01{not json", b"\x10short",
                    encode_message(Verified(id=new_transfer_id(), file=0))):
        await a.send_bytes(garbage)
    sender = Side(a)
    source = random_file(tmp_path / "out" / "ok.bin", 1000)
    await send_and_accept(sender, receiver, [source], tmp_path / "downloads")
    assert len(receiver.of(ev.PROTOCOL_ERROR)) == 5
    assert sha(tmp_path / "downloads" / "ok.bin") == sha(source)


async def test_an_offer_larger_than_the_free_space_is_refused(link: LinkFactory, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_module, "free_space", lambda path: 1000)
    sender, receiver, downloads = await sides(link, tmp_path)
    outgoing = await sender.transfers.send_files([random_file(tmp_path / "out" / "x.bin", 5000)])
    offer = await receiver.next_offer()
    with pytest.raises(InsufficientSpaceError, match="need 4.9 KiB but .* has only 1000 bytes free"):
        await offer.accept(downloads)
    with pytest.raises(InsufficientSpaceError, match="not enough free space"):
        await asyncio.wait_for(outgoing.wait(), WAIT)
    assert leftovers(downloads) == []


async def test_a_full_disk_during_the_transfer_ends_it_cleanly_on_both_sides(
        link: LinkFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = disk_module._write_and_hash
    written = 0

    def write_on_a_small_disk(file, data: bytes, *rest) -> None:  # runs in a worker thread, as the real one
        nonlocal written
        if written + len(data) > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += len(data)
        real_write(file, data, *rest)

    monkeypatch.setattr(disk_module, "_write_and_hash", write_on_a_small_disk)
    sender, receiver, downloads = await sides(link, tmp_path)
    outgoing = await sender.transfers.send_files([random_file(tmp_path / "out" / "x.bin", MB)])
    incoming = await (await receiver.next_offer()).accept(downloads)
    with pytest.raises(DiskError, match="disk is full"):
        await asyncio.wait_for(incoming.wait(), WAIT)
    with pytest.raises(DiskError, match="could not read or write"):
        await asyncio.wait_for(outgoing.wait(), WAIT)
    await asyncio.wait_for(incoming._task, WAIT)
    assert not (downloads / "x.bin").exists()


async def test_an_unreadable_source_file_ends_the_transfer_on_both_sides(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)
    source = random_file(tmp_path / "out" / "x.bin", 200_000)
    outgoing = await sender.transfers.send_files([source])
    source.unlink()  # gone after the offer
    await (await receiver.next_offer()).accept(downloads)
    for side in (sender, receiver):
        transfer = side.transfers.transfers[outgoing.id]
        with pytest.raises(DiskError):
            await asyncio.wait_for(transfer.wait(), WAIT)


async def test_sending_a_missing_path_is_a_clear_error(link: LinkFactory, tmp_path: Path) -> None:
    sender, _, _ = await sides(link, tmp_path)
    with pytest.raises(DiskError, match="missing"):
        await sender.transfers.send_files([tmp_path / "missing.txt"])


class ScriptedPeer:
    """A peer that speaks the transfer protocol frame by frame (for hostile or broken senders)."""

    def __init__(self, connection: PeerConnection) -> None:
        self.connection = connection
        self.id = new_transfer_id()
        self.received: asyncio.Queue = asyncio.Queue()
        connection.events.on(ev.BINARY, lambda b: self.received.put_nowait(decode_message(b.data)))

    async def offer(self, files: tuple[FileEntry, ...], folders: tuple[str, ...] = ()) -> None:
        offer = Offer(id=self.id, files=files, chunk_size=1024, window=4, folders=folders)
        for frame in encode_offer(offer, max_frame=60_000):
            await self.connection.send_bytes(frame)

    async def send(self, message) -> None:
        await self.connection.send_bytes(encode_message(message))

    async def send_digest(self, file: int, content: bytes) -> None:
        """The SHA-256 of ``content`` as file ``file``'s digest, as a sender does after its last chunk."""
        await self.send(Digest(id=self.id, file=file, sha256=hashlib.sha256(content).hexdigest()))

    async def expect(self, kind: type):
        while True:
            message = await asyncio.wait_for(self.received.get(), WAIT)
            if isinstance(message, kind):
                return message


async def test_memory_stays_bounded_by_the_window_not_the_file_size(tmp_path: Path) -> None:
    """Both sides in one process: the peak of Python allocations stays far below the file's size."""
    import tracemalloc

    size = 32 * MB
    source = tmp_path / "out" / "big.bin"
    source.parent.mkdir()
    with open(source, "wb") as f:
        for seed in range(size // MB):
            f.write(random.Random(seed).randbytes(MB))
    pair = MemoryConnectionPair()
    sender, receiver = Side(pair.a), Side(pair.b)
    tracemalloc.start()
    try:
        await send_and_accept(sender, receiver, [source], tmp_path / "downloads")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await pair.close()
    assert sha(tmp_path / "downloads" / "big.bin") == sha(source)
    # Window (16 chunks of 64 KiB) on each side, the link's queue (16 frames), the hashing buffer: a few MiB.
    assert peak < 8 * MB, f"peak {peak / MB:.1f} MiB for a {size // MB} MiB file"


async def test_a_failing_event_listener_does_not_break_the_transfer(link: LinkFactory, tmp_path: Path) -> None:
    sender, receiver, downloads = await sides(link, tmp_path)

    def broken(_payload: object) -> None:
        raise RuntimeError("a bug in the app")

    for side in (sender, receiver):
        side.transfers.events.on(ev.TRANSFER_PROGRESS, broken)
        side.transfers.events.on(ev.TRANSFER_FILE_DONE, broken)
    source = random_file(tmp_path / "out" / "x.bin", 200_000)
    await send_and_accept(sender, receiver, [source], downloads)
    assert sha(downloads / "x.bin") == sha(source)


@pytest.mark.parametrize("cut", ["receiver", "sender"])
async def test_a_transfer_over_webrtc_goes_on_over_the_relay_when_the_transport_is_torn_down(
        request: pytest.FixtureRequest, tmp_path: Path, cut: str) -> None:
    size = 6 * MB
    source = random_file(tmp_path / "out" / "film.bin", size)
    async for make in manager_pairs(request, webrtc=True):
        sender, receiver, downloads = await sides(make, tmp_path)
        connections = {"sender": sender.transfers.connection, "receiver": receiver.transfers.connection}
        changes: list[str] = []
        connections["sender"].events.on(ev.LINK_CHANGED, lambda change: changes.append(change.transport))
        # Each progress event on the receiver, with the link that carried the connection at that moment.
        seen: list[tuple[str, int]] = []
        receiver.transfers.events.on(ev.TRANSFER_PROGRESS, lambda p: seen.append(
            (receiver.transfers.connection.transport, p.bytes_done)))
        stopped: list[asyncio.Future] = []

        def tear_down(progress: TransferProgress) -> None:
            # Once a megabyte arrived and while that side is on WebRTC (on a loaded machine it may be back on the
            # relay for a moment; the next progress event looks again).
            if progress.bytes_done >= MB and not stopped and connections[cut]._link is not None:
                # As a network failure would: aiortc's transport stops under the WebRTC link of one side.
                link = connections[cut]._link.link
                stopped.append(asyncio.ensure_future(link.peer_connection.sctp.transport.transport.stop()))

        receiver.transfers.events.on(ev.TRANSFER_PROGRESS, tear_down)
        outgoing, incoming = await send_and_accept(sender, receiver, [source], downloads, wait=110)
        await asyncio.gather(*stopped)
        assert stopped, "the transport was torn down mid-transfer"
        assert changes[:1] == ["relay"]
        assert sha(downloads / "film.bin") == sha(source)
        assert leftovers(downloads) == []
        # Data arrived over WebRTC before the cut, and over the relay after it.
        assert [link for link, _ in seen][:1] == ["webrtc"]
        after_cut = [done for link, done in seen if link == "relay"]
        assert after_cut and after_cut[-1] > min(after_cut) >= MB
        # Each chunk was handed to the connection once: the connection, not the transfer, resent what was in flight.
        assert outgoing.bytes_sent == size
        assert incoming.bytes_done == size


async def test_an_interrupted_transfer_resumes_on_a_new_session_after_the_relay_connection_dropped(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The receiver's connection closes mid-transfer; then both apps start again (new managers) and the transfer,
    offered again with its id, resumes in a new relay session from the last confirmed chunk."""
    size = 3 * MB
    source = random_file(tmp_path / "out" / "movie.bin", size)
    downloads = tmp_path / "downloads"
    async for make in manager_pairs(request, webrtc=False):
        sender, receiver, _ = await sides(make, tmp_path, chunk_size=16 * 1024, window=4)
        outgoing = await sender.transfers.send_files([source])
        incoming = await (await receiver.next_offer()).accept(downloads)
        dropped = asyncio.get_running_loop().create_future()

        def drop(progress: TransferProgress) -> None:
            if progress.bytes_done >= MB and not dropped.done():
                dropped.set_result(asyncio.ensure_future(receiver.transfers.connection.disconnect()))

        receiver.transfers.events.on(ev.TRANSFER_PROGRESS, drop)
        for transfer in (outgoing, incoming):
            with pytest.raises(TransferInterruptedError):
                await asyncio.wait_for(transfer.wait(), WAIT)
        await asyncio.wait_for(await dropped, WAIT)
        await asyncio.wait_for(incoming._task, WAIT)
        kept = json.loads((downloads / f".peerchat-{outgoing.id}.transfer").read_text())["files"][0]["confirmed"]
        assert MB <= kept < size
    async for make in manager_pairs(request, webrtc=False):  # new managers: a new session from scratch
        a, b = await make()
        sender2, receiver2 = Side(a, chunk_size=16 * 1024, window=4), Side(b, downloads, chunk_size=16 * 1024)
        again = await sender2.transfers.send_files([source], transfer_id=outgoing.id)
        resumed = (await receiver2.next_offer()).transfer
        assert resumed is not None  # a known transfer id resumes without asking again
        await asyncio.wait_for(asyncio.gather(again.wait(), resumed.wait()), WAIT)
        assert sha(downloads / "movie.bin") == sha(source)
        assert again.resumed_bytes == kept and again.bytes_sent == size - kept
        assert leftovers(downloads) == []


async def test_several_chunks_in_flight_only_on_connections_known_to_keep_call_order(link: LinkFactory) -> None:
    from core.relay.connection import RelayConnection

    a, _ = await link()
    transfers = FileTransfers(a)
    try:
        expected = files_module.DEFAULT_SEND_CONCURRENCY if isinstance(a, RelayConnection) else 1
        assert transfers.send_concurrency == expected
        with pytest.raises(ValueError, match="send_concurrency"):
            FileTransfers(a, send_concurrency=0)
    finally:
        await transfers.close()


async def test_a_connection_closing_while_the_files_are_prepared_fails_the_send(tmp_path: Path, monkeypatch) -> None:
    """The connection closes after send_files() began but before the offer exists: the send fails at once with
    TransferInterruptedError instead of leaving a transfer that waits forever for a peer that is gone."""
    import threading

    import core.files.transfers

    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    preparing, release = threading.Event(), threading.Event()
    real = core.files.transfers._fingerprint_of

    def slow_fingerprint(path):
        preparing.set()
        release.wait(10)
        return real(path)

    monkeypatch.setattr(core.files.transfers, "_fingerprint_of", slow_fingerprint)
    pair = MemoryConnectionPair()
    transfers = FileTransfers(pair.a, download_dir=tmp_path / "in")
    try:
        send = asyncio.create_task(transfers.send_files([source]))
        await asyncio.wait_for(asyncio.to_thread(preparing.wait, 10), 15)
        await pair.a.disconnect()
        release.set()
        with pytest.raises(TransferInterruptedError):
            await asyncio.wait_for(send, 15)
        assert not transfers.transfers
    finally:
        release.set()
        await transfers.close()
        await pair.close()


async def test_preparing_the_files_reports_progress_and_stops_when_cancelled(tmp_path: Path, monkeypatch) -> None:
    import threading

    pair = MemoryConnectionPair()
    try:
        sender = Side(pair.a)
        (tmp_path / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
        (tmp_path / "b.bin").write_bytes(os.urandom(1024))
        seen: list[tuple[int, int]] = []
        transfer = await sender.transfers.send_files([tmp_path / "a.bin", tmp_path / "b.bin"],
                                                      on_prepare=lambda done, total: seen.append((done, total)))
        total = 3 * 1024 * 1024 + 5 + 1024
        assert seen == [(3 * 1024 * 1024 + 5, total), (total, total)]
        await transfer.cancel()

        # Many files: cancelling while they are prepared stops the preparing thread before the next file.
        folder = tmp_path / "many"
        for i in range(20):
            random_file(folder / f"f{i:02d}.bin", 100, seed=i)
        called: list[Path] = []
        second, cancelled = threading.Event(), threading.Event()
        real = files_module._fingerprint_of

        def recording(path):
            called.append(path)
            if len(called) == 2:
                second.set()
                cancelled.wait(30)  # the second file is still being read when the send is cancelled
            return real(path)

        monkeypatch.setattr(files_module, "_fingerprint_of", recording)
        task = asyncio.ensure_future(sender.transfers.send_files([folder]))
        assert await asyncio.wait_for(asyncio.to_thread(second.wait, 30), 40)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.set()
        await asyncio.sleep(0.2)  # room for a thread that did not stop to go on (it must not)
        assert len(called) == 2
    finally:
        await pair.close()


async def test_a_4_gib_file_is_offered_after_reading_at_most_128_kib_of_it(tmp_path: Path, monkeypatch) -> None:
    """No hashing before the offer: a 4 GiB (sparse) file's offer reaches the receiver after two small reads, and
    its first chunk follows the accept; its SHA-256 comes after its last chunk."""
    read: list[int] = []
    real = disk_module._read_at

    def counting(fd: int, offset: int, size: int) -> bytes:
        data = real(fd, offset, size)
        read.append(len(data))
        return data

    monkeypatch.setattr(disk_module, "_read_at", counting)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(4 * 1024 * 1024 * 1024)
    pair = MemoryConnectionPair()
    try:
        sender, receiver = Side(pair.a), Side(pair.b)
        outgoing = await sender.transfers.send_files([big])
        offer = await receiver.next_offer()
        assert sum(read) <= 2 * 64 * 1024
        incoming = await offer.accept(tmp_path / "downloads")
        async with asyncio.timeout(WAIT):
            while not incoming.bytes_done:
                await asyncio.sleep(0.01)
        assert sum(read) < 64 * 1024 * 1024  # the first chunks went out without reading the file first
        await outgoing.cancel()
    finally:
        await pair.close()
