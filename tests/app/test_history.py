"""The conversation history on its own: a real SQLite file in a temporary folder."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from peerchat.history import History, HistoryError, history_file


@pytest.fixture
def path(tmp_path):
    return history_file(tmp_path / "data", "laptop-id")


def test_entries_survive_reopening_and_come_back_oldest_first(path):
    history = History(path, clock=lambda: 1000.0)
    first = history.add("desk", "desktop", "out", "text", "hello", "sent")
    history.add("desk", "desktop", "in", "text", "hi", "received")
    history.add("tv", "tv", "out", "text", "other conversation", "sent")
    history.set_status(first.id, "delivered")
    history.close()

    again = History(path)
    page = again.page("desk")
    assert [(e.direction, e.body, e.status, e.label, e.at) for e in page] == [
        ("out", "hello", "delivered", "desktop", 1000.0), ("in", "hi", "received", "desktop", 1000.0)]
    assert [e.body for e in again.page("tv")] == ["other conversation"]
    assert again.page("nobody") == []
    assert again.persistent


def test_pages_go_back_in_time(path):
    history = History(path)
    for n in range(120):
        history.add("desk", "desktop", "out", "text", f"m{n}", "sent")
    newest = history.page("desk", limit=50)
    assert [e.body for e in newest] == [f"m{n}" for n in range(70, 120)]
    older = history.page("desk", before=newest[0].id, limit=50)
    assert [e.body for e in older] == [f"m{n}" for n in range(20, 70)]
    oldest = history.page("desk", before=older[0].id, limit=50)
    assert [e.body for e in oldest] == [f"m{n}" for n in range(20)]
    assert history.page("desk", before=oldest[0].id) == []


def test_the_queue_keeps_its_order_and_only_queued_texts(path):
    history = History(path)
    a = history.add("desk", "desktop", "out", "text", "a", "queued")
    history.add("desk", "desktop", "out", "text", "b", "delivered")
    history.add("tv", "tv", "out", "text", "c", "queued")
    d = history.add("desk", "desktop", "out", "text", "d", "queued")
    assert [e.body for e in history.queued("desk")] == ["a", "d"]
    assert [e.body for e in history.queued()] == ["a", "c", "d"]
    history.set_status(a.id, "sent")
    history.set_status(d.id, "failed")
    assert history.queued("desk") == []


def test_files_keep_where_they_were_saved(path):
    history = History(path)
    entry = history.add("desk", "desktop", "in", "file", "photo.jpg", "queued", size=2048)
    history.set_status(entry.id, "received", path="/home/me/Downloads/photo.jpg")
    (saved,) = history.page("desk")
    assert (saved.kind, saved.body, saved.size, saved.path, saved.status) == (
        "file", "photo.jpg", 2048, "/home/me/Downloads/photo.jpg", "received")


def test_search_finds_text_in_every_conversation_newest_first(path):
    history = History(path)
    history.add("desk", "desktop", "out", "text", "the door code is 4711", "sent")
    history.add("tv", "tv", "in", "text", "Door open?", "received")
    history.add("tv", "tv", "in", "text", "nothing here", "received")
    history.add("tv", "tv", "in", "text", "100% _literal_", "received")
    assert [(e.peer_id, e.body) for e in history.search("door")] == [
        ("tv", "Door open?"), ("desk", "the door code is 4711")]
    assert [e.body for e in history.search("%")] == ["100% _literal_"]
    assert [e.body for e in history.search("_lit")] == ["100% _literal_"]
    assert history.search("zebra") == []


def test_conversations_list_each_device_once_latest_first(path):
    history = History(path)
    history.add("desk", "desktop", "out", "text", "a", "sent", at=10.0)
    history.add("tv", "tv", "out", "text", "b", "sent", at=20.0)
    history.add("desk", "desktop-2", "in", "text", "c", "received", at=30.0)
    assert history.conversations() == [("desk", "desktop-2", 30.0), ("tv", "tv", 20.0)]


def test_clear_forgets_everything(path):
    history = History(path)
    history.add("desk", "desktop", "out", "text", "a", "queued")
    history.add("tv", "tv", "out", "text", "b", "sent")
    assert history.clear() == 2
    history.close()
    again = History(path)
    assert again.page("desk") == [] and again.queued() == [] and again.conversations() == []


def test_history_off_keeps_nothing_on_disk(tmp_path):
    history = History(None)
    history.add("desk", "desktop", "out", "text", "a", "queued")
    assert [e.body for e in history.queued()] == ["a"]
    assert not history.persistent
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_history_is_a_clear_error(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="Move it away"):
        History(path)


def test_a_newer_schema_is_refused_and_left_alone(path):
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(HistoryError, match="newer than this peerchat"):
        History(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 99


def test_bad_status_is_refused(path):
    history = History(path)
    with pytest.raises(ValueError, match="unknown status"):
        history.add("desk", "desktop", "out", "text", "a", "lost")  # type: ignore[arg-type]


def test_writes_from_several_threads_all_arrive(path):
    history = History(path)

    def write(n: int) -> None:
        for i in range(50):
            history.add("desk", "desktop", "out", "text", f"{n}-{i}", "sent")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(history.page("desk", limit=1000)) == 200


async def test_the_async_face_keeps_the_order_of_calls(path):
    from peerchat.history import AsyncHistory

    history = AsyncHistory(History(path))
    entry = await history.add("desk", "desktop", "out", "text", "a", "queued")
    await history.set_status(entry.id, "delivered")
    assert [(e.body, e.status) for e in await history.page("desk")] == [("a", "delivered")]
    assert await history.queued() == []
    await history.close()
    await history.close()  # twice is fine
    with pytest.raises(HistoryError, match="closed"):
        await history.page("desk")
