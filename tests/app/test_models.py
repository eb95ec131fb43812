"""Tests for peerchat.models: the pure view models behind the screens."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.events import ConnectionClosed, Latency, LinkChanged, ProtocolErrorEvent, Recovered, Slow, UpgradeFailed
from core.errors import NoRouteError
from core.peer import DeviceStatus, PeerInfo, Route
from peerchat.models import (
    CloseSession,
    DeviceDirectory,
    LinkStatus,
    SendFiles,
    SendText,
    ShowHelp,
    describe_link,
    describe_upgrade_failure,
    find_device,
    format_ago,
    format_bytes,
    format_duration,
    format_rate,
    parse_chat_input,
)

LAPTOP = PeerInfo("d1", "laptop")
DESKTOP = PeerInfo("d2", "desktop")


def test_formats():
    assert format_bytes(0) == "0 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_rate(None) == "–"
    assert format_rate(2 * 1024**2) == "2.0 MiB/s"
    assert format_duration(None) == "–"
    assert format_duration(45.2) == "45 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(2 * 3600 + 7 * 60) == "2 h 07 min"
    assert format_ago(10) == "just now"
    assert format_ago(300) == "5 min ago"
    assert format_ago(3 * 86400) == "3 d ago"


def test_directory_remembers_devices_that_went_offline():
    directory = DeviceDirectory()
    directory.update((LAPTOP, DESKTOP), now=100.0)
    assert [(r.peer.label, r.online) for r in directory.rows()] == [("desktop", True), ("laptop", True)]
    directory.update((DESKTOP,), now=160.0)
    rows = directory.rows()
    assert [(r.peer.label, r.online, r.last_seen) for r in rows] == [("desktop", True, None), ("laptop", False, 160.0)]
    directory.update((DESKTOP, LAPTOP), now=200.0)
    assert all(r.online and r.last_seen is None for r in directory.rows())


def test_find_device_by_id_or_label():
    peers = [LAPTOP, DESKTOP, PeerInfo("d3", "Phone")]
    assert find_device(peers, "d2") == DESKTOP
    assert find_device(peers, "LAPTOP") == LAPTOP
    with pytest.raises(LookupError, match="no online device is called 'tv'; online now: laptop \\(d1\\)"):
        find_device(peers, "tv")
    with pytest.raises(LookupError, match="several devices are called 'laptop' \\(d1, d9\\)"):
        find_device([*peers, PeerInfo("d9", "laptop")], "laptop")


def test_link_status_follows_events():
    status = LinkStatus()
    assert "RELAY" in status.render()
    assert status.apply(Latency(rtt=0.012, transport="relay")) is None
    assert "12 ms" in status.render()
    assert "ms" not in status.render(latency=False)

    status.apply(Slow(what="acknowledgement of message 3", waited=4.2, timeout=20))
    assert "slow: acknowledgement of message 3 (4 s, gives up after 20 s)" in status.render()
    status.apply(Recovered(what="acknowledgement of message 3"))
    assert "slow" not in status.render()

    notice = status.apply(LinkChanged(transport="webrtc", previous="relay", reason="upgraded"))
    assert notice is not None and notice.severity == "information"
    assert "WEBRTC" in status.render()
    notice = status.apply(LinkChanged(transport="relay", previous="webrtc", reason="data channel closed"))
    assert notice is not None and notice.severity == "warning" and "data channel closed" in notice.text
    assert "fell back to the relay: data channel closed" in status.render()

    notice = status.apply(UpgradeFailed(reason="timed out after 5 s"))
    assert notice is not None and "timed out after 5 s" in notice.text
    assert status.apply(ProtocolErrorEvent(error=ValueError("bad seq"))).severity == "warning"


def test_link_status_says_direct_and_what_a_fallback_retries():
    status = LinkStatus()
    notice = status.apply(LinkChanged(transport="direct", previous="relay", reason="direct link opened (127.0.0.1)"))
    assert notice is not None and notice.severity == "information" and "Direct link open" in notice.text
    assert "● DIRECT" in status.render()
    notice = status.apply(LinkChanged(transport="relay", previous="direct", reason="the other device closed it"))
    assert notice is not None and "retrying the direct link" in notice.text
    assert "● RELAY" in status.render()
    notice = status.apply(LinkChanged(transport="webrtc", previous="direct", reason="the direct link failed"))
    assert notice is not None and notice.severity == "warning" and "● WEBRTC" in status.render()
    off = LinkStatus(webrtc_off=True)
    notice = off.apply(UpgradeFailed(reason="direct: no direct connection within 3 s (refused)"))
    assert notice is not None and "No faster link" in notice.text
    assert "relay: direct: no direct connection" in off.render()


@pytest.mark.parametrize(
    ("reason", "error", "text", "severity"),
    [
        ("peer-requested-closed", None, "the other device closed it", "information"),
        ("local-closed", None, "you closed it", "information"),
        ("connection-error", TimeoutError("no reply for 15 s"), "lost (no reply for 15 s)", "error"),
    ],
)
def test_link_status_closed(reason, error, text, severity):
    status = LinkStatus()
    notice = status.apply(ConnectionClosed(connection=None, reason=reason, error=error))  # type: ignore[arg-type]
    assert notice.severity == severity
    assert "CLOSED" in status.render() and text in status.render()


def test_markup_in_reasons_is_escaped():
    status = LinkStatus()
    status.apply(UpgradeFailed(reason="[b]x"))
    assert r"\[b]x" in status.render()


def test_parse_chat_input():
    assert parse_chat_input("   ") is None
    assert parse_chat_input("hello /send") == SendText("hello /send")
    assert parse_chat_input("//send x") == SendText("/send x")
    assert parse_chat_input('/send a.txt "my file.txt"') == SendFiles((Path("a.txt"), Path("my file.txt")))
    assert parse_chat_input("/close") == CloseSession()
    assert parse_chat_input("/help") == ShowHelp()
    with pytest.raises(ValueError, match="at least one path"):
        parse_chat_input("/send")
    with pytest.raises(ValueError, match="quote paths"):
        parse_chat_input('/send "unterminated')
    with pytest.raises(ValueError, match="unknown command /frobnicate"):
        parse_chat_input("/frobnicate")


def test_upgrade_failures_are_told_once_and_not_at_all_when_webrtc_is_off_here():
    status = LinkStatus()
    assert status.apply(UpgradeFailed(reason="ICE failed")) is not None
    assert status.apply(UpgradeFailed(reason="ICE failed")) is None
    assert status.apply(UpgradeFailed(reason="timed out")) is not None
    off = LinkStatus(webrtc_off=True)
    assert off.apply(UpgradeFailed(reason="WebRTC is turned off on this device")) is None
    assert "relay only: WebRTC is off on this device" in off.render()


def test_directory_shows_offline_devices_core_knows_with_their_last_seen_time():
    directory = DeviceDirectory()
    directory.update_devices([DeviceStatus(DESKTOP, True, 990.0), DeviceStatus(LAPTOP, False, 400.0)], now=1000.0)
    rows = directory.rows()
    assert [(r.peer.label, r.online, r.last_seen) for r in rows] == [("desktop", True, None), ("laptop", False, 400.0)]
    # The desktop leaves: core's time of its last heartbeat, not the time the news arrived, is shown.
    directory.update_devices([DeviceStatus(DESKTOP, False, 995.0), DeviceStatus(LAPTOP, False, 400.0)], now=1010.0)
    assert [(r.peer.label, r.last_seen) for r in directory.rows()] == [("desktop", 995.0), ("laptop", 400.0)]
    assert not directory.is_online(DESKTOP.id)


def test_a_lost_connection_is_described_with_its_reason_in_one_sentence():
    status = LinkStatus()
    error = RuntimeError("Nothing arrived from the other device for 15 s; it is offline or unreachable.")
    notice = status.apply(ConnectionClosed(connection=None, reason="connection-error", error=error))  # type: ignore[arg-type]
    assert status.closed == "the connection was lost (Nothing arrived from the other device for 15 s; it is offline " \
                            "or unreachable)"
    assert notice is not None and notice.severity == "error" and notice.text.endswith("unreachable).")
    assert LinkStatus().apply(ConnectionClosed(None, "connection-error")).text == (  # type: ignore[arg-type, union-attr]
        "Session closed: the connection was lost.")


def test_relay_outage_line_says_how_long_why_and_that_it_retries():
    from peerchat.models import relay_outage_line

    line = relay_outage_line("The database could not be reached to write presence/a/b.", since=100.0, now=112.4)
    assert line == "● relay unreachable for 12 s: The database could not be reached to write presence/a/b — retrying"
    long = relay_outage_line("x" * 500, since=0.0, now=0.0, width=40)
    assert "x" * 39 + "…" in long and "x" * 40 not in long
    assert "no answer" in relay_outage_line("  ", since=5.0, now=1.0)  # clock skew never shows a negative time
    assert "for 0 s" in relay_outage_line("  ", since=5.0, now=1.0)


def test_devices_offline_for_long_are_hidden_unless_kept_or_asked_for():
    from core import DeviceStatus
    from peerchat.models import DeviceDirectory

    directory = DeviceDirectory()
    now = 1_000_000.0
    directory.update_devices([
        DeviceStatus(PeerInfo("a", "old"), False, now - 8 * 86400),
        DeviceStatus(PeerInfo("b", "recent"), False, now - 3600),
        DeviceStatus(PeerInfo("c", "online"), True, None),
        DeviceStatus(PeerInfo("d", "unknown"), False, None),
    ], now)
    week = 7 * 86400
    assert [r.peer.id for r in directory.rows(now=now, hide_after=week)] == ["c", "b", "d"]
    assert directory.hidden(now, week) == 1
    assert [r.peer.id for r in directory.rows(now=now, hide_after=week, keep={"a"})] == ["c", "a", "b", "d"]
    assert [r.peer.id for r in directory.rows()] == ["c", "a", "b", "d"]
    directory.forget("b")
    assert [r.peer.id for r in directory.rows()] == ["c", "a", "d"]


def test_paths_that_cannot_be_sent_are_explained_before_anything_connects(tmp_path):
    import os

    from peerchat.models import missing_paths_error, path_problem

    good = tmp_path / "a.txt"
    good.write_text("x")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert path_problem(good) is None and path_problem(tmp_path) is None
    assert path_problem(tmp_path / "nope") == f"{tmp_path / 'nope'} does not exist"
    assert path_problem(fifo) == f"{fifo} is not a regular file or folder (a device, pipe or socket)"
    assert missing_paths_error([good]) is None
    assert missing_paths_error([tmp_path / "my"], "/send my notes.txt").endswith(
        'Quote a path with spaces: /send "my file.txt".')
    assert missing_paths_error([tmp_path / "nope"], "/send nope").endswith("does not exist. Check the path.")


def test_an_entry_reads_as_one_line_with_its_mark():
    import time as _time

    from peerchat.history import Entry
    from peerchat.models import entry_parts

    now = _time.mktime((2026, 1, 15, 9, 30, 0, 0, 0, -1))
    def line(entry):
        return "".join(text for text, _ in entry_parts(entry, "you", now))

    text = Entry(1, "d", "desktop", "out", "text", "hello", "delivered", now)
    assert line(text) == "09:30  you  hello  ✓✓ delivered"
    assert line(Entry(2, "d", "desktop", "out", "text", "hi", "queued", now - 86400)).startswith("2026-01-14 09:30")
    assert line(Entry(3, "d", "desktop", "in", "text", "yo", "received", now)) == "09:30  desktop  yo"
    assert line(Entry(4, "d", "desktop", "in", "file", "a.jpg", "received", now, "/dl/a.jpg", 2048)) == (
        "09:30  desktop  ✓ received: a.jpg (2.0 KiB), saved to /dl/a.jpg")
    assert line(Entry(5, "d", "desktop", "out", "text", "x", "failed", now)).endswith("✗ failed, Ctrl+R retries")


@pytest.mark.parametrize(("route", "shown"), [(Route("host", "host", "host"), "WEBRTC via host"),
                                              (Route("nat", "srflx", "srflx"), "WEBRTC via NAT"),
                                              (Route("turn", "relay", "srflx"), "WEBRTC via TURN relay"),
                                              (None, "WEBRTC")])
def test_the_status_line_says_how_webrtc_got_through(route, shown):
    status = LinkStatus()
    notice = status.apply(LinkChanged(transport="webrtc", previous="relay", reason="upgraded", route=route))
    assert f"● {shown}[/]" in status.render()
    assert notice is not None and (str(route) in notice.text if route else notice.text == "Direct WebRTC link open.")
    status.apply(LinkChanged(transport="relay", previous="webrtc", reason="link lost"))
    assert status.route is None and "● RELAY" in status.render()
    assert describe_link("webrtc", route) == shown and describe_link("relay", None) == "RELAY"


@pytest.mark.parametrize(("missing", "advice"), [("stun", "add a STUN server with --ice-server stun:"),
                                                 ("turn", "add a TURN server with --ice-server turn:"),
                                                 (None, "the TURN server could not carry it either")])
def test_a_failed_nat_traversal_says_there_is_no_route_and_what_to_add(missing, advice):
    error = NoRouteError("no network path to the other device was found within 5 s: ...", missing=missing)
    status = LinkStatus(peer_label="desktop")
    notice = status.apply(UpgradeFailed(reason=str(error), error=error))
    assert notice is not None and notice.severity == "warning"
    assert notice.text.startswith("No route to desktop except the relay: ")
    assert f"no route to desktop except the relay: {advice}" in status.render()
    assert describe_upgrade_failure(UpgradeFailed("x", error), "desktop").startswith("no route to desktop")
    assert describe_upgrade_failure(UpgradeFailed("timed out"), "desktop") == "no WebRTC: timed out"
