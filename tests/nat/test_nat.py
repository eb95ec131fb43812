"""WebRTC across NATs, proven in a simulated internet (see internet.py): two devices behind two home NATs chat and
move a file with peerchat's own commands, each device a process in its own network namespace.

Every case counts the bytes the home routers forward, so the link is proven by where the data went, not only by
what peerchat says: over WebRTC the relay carries only the signalling and presence, a few KiB, while the file
crosses the NATs directly (STUN), through the TURN server (TURN) or stays in the home (same LAN).

Run them alone with ``uv run pytest -m nat`` (as root, with nftables and coturn installed; .ci/run installs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from internet import TURN_PASSWORD, TURN_USER, Internet, unavailable

pytestmark = [pytest.mark.nat, pytest.mark.timeout(240)]

BIG = 2 * 1024 * 1024  # a file for a WebRTC case: enough to tell where it went
SMALL = 128 * 1024  # a file for a relay case (the relay is slower, and there is nothing to tell apart)
LIMIT = 60.0  # bound on one command; never an assertion about speed


@pytest.fixture(scope="module")
def net() -> Iterator[Internet]:
    """Home 1 (two devices) and home 2 behind endpoint-independent ("cone") NATs, homes 3 and 4 behind symmetric
    ones; the relay and coturn in the internet."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with Internet(["cone", "cone", "symmetric", "symmetric"], hosts_per_home=[2, 1, 1, 1]) as internet:
        yield internet


@dataclass
class Run:
    sender_err: str
    receiver_out: str
    receiver_err: str
    bytes: dict[str, dict[str, int]]  # per router, what it forwarded during the run
    received: Path


def stun(net: Internet) -> list[str]:
    return ["--ice-server", net.stun_url]


def stun_and_turn(net: Internet) -> list[str]:
    return ["--ice-server", net.stun_url, "--ice-server", net.turn_url, "--ice-username", TURN_USER,
            "--ice-credential", TURN_PASSWORD]


def send_across(net: Internet, tmp_path: Path, sender: str, receiver: str, ice: list[str], size: int) -> Run:
    """``peerchat receive`` in ``receiver``'s namespace, ``peerchat send`` (a text and a file of ``size`` bytes) in
    ``sender``'s; both must succeed. Returns their output and the bytes each router forwarded meanwhile."""
    env = dict(os.environ)
    env.pop("FIREBASE_DATABASE_EMULATOR_HOST", None)
    env["XDG_CONFIG_HOME"], env["XDG_STATE_HOME"] = str(tmp_path / "config"), str(tmp_path / "state")
    common = ["--emulator", net.relay, "--user", f"nat{uuid.uuid4().hex[:8]}", *ice]
    payload = tmp_path / "photo.bin"
    payload.write_bytes(os.urandom(size))
    downloads = tmp_path / "downloads"
    before = net.counters()

    def peerchat(namespace: str, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen([*net.exec_prefix(namespace), sys.executable, "-m", "peerchat", *args], env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    receiving = peerchat(receiver, ["receive", "--count", "2", "--timeout", str(LIMIT), "--label", "desktop",
                                    "--download-dir", str(downloads), *common])
    try:
        sending = peerchat(sender, ["send", "desktop", str(payload), "--text", "hello across the NATs",
                                    "--wait", "30", "--label", "laptop", *common])
        try:
            _, sender_err = sending.communicate(timeout=LIMIT)
        finally:
            if sending.poll() is None:
                sending.kill()
                sending.communicate()
        if sending.returncode != 0:  # the receiver's side of the story, for the failure message
            receiving.kill()
        receiver_out, receiver_err = receiving.communicate(timeout=LIMIT)
    finally:
        if receiving.poll() is None:
            receiving.kill()
            receiving.communicate()
    assert sending.returncode == 0, f"{sender_err}\n--- the receiver said:\n{receiver_err}"
    assert receiving.returncode == 0, receiver_err
    after = net.counters()
    forwarded = {router: {name: after[router][name] - before[router][name] for name in after[router]}
                 for router in after}
    received = downloads / payload.name
    assert received.read_bytes() == payload.read_bytes()
    assert "text\tlaptop\thello across the NATs" in receiver_out
    return Run(sender_err, receiver_out, receiver_err, forwarded, received)


def test_behind_two_cone_nats_the_devices_connect_via_stun(net: Internet, tmp_path: Path) -> None:
    home1, home2 = net.homes[0], net.homes[1]
    run = send_across(net, tmp_path, home1.hosts[0], home2.hosts[0], stun(net), BIG)
    assert "connected over WEBRTC via NAT" in run.sender_err
    assert "over WEBRTC via NAT" in run.receiver_err
    # The file went straight from one home's router to the other's; the relay carried signalling only.
    for router in (home1.router, home2.router):
        assert run.bytes[router]["direct_udp"] > BIG, run.bytes
        assert run.bytes[router]["relay"] < BIG // 8, run.bytes


def test_behind_two_symmetric_nats_the_devices_connect_via_turn(net: Internet, tmp_path: Path) -> None:
    home3, home4 = net.homes[2], net.homes[3]
    run = send_across(net, tmp_path, home3.hosts[0], home4.hosts[0], stun_and_turn(net), BIG)
    assert "connected over WEBRTC via TURN relay" in run.sender_err
    assert "over WEBRTC via TURN relay" in run.receiver_err
    for router in (home3.router, home4.router):
        assert run.bytes[router]["servers_udp"] > BIG, run.bytes  # through the TURN server
        assert run.bytes[router]["direct_udp"] < BIG // 8, run.bytes  # only the checks that failed
        assert run.bytes[router]["relay"] < BIG // 8, run.bytes


def test_a_symmetric_nat_with_stun_only_stays_on_the_relay_and_asks_for_a_turn_server(
    net: Internet, tmp_path: Path
) -> None:
    home1, home3 = net.homes[0], net.homes[2]
    run = send_across(net, tmp_path, home1.hosts[0], home3.hosts[0], stun(net), SMALL)
    assert ("connected over RELAY (no route to desktop except the relay: add a TURN server with --ice-server turn:"
            in run.sender_err), run.sender_err
    assert run.bytes[home1.router]["relay"] > SMALL, run.bytes
    assert run.bytes[home1.router]["direct_udp"] < SMALL // 4, run.bytes


def test_without_ice_servers_the_devices_stay_on_the_relay_and_say_why(net: Internet, tmp_path: Path) -> None:
    home1, home2 = net.homes[0], net.homes[1]
    run = send_across(net, tmp_path, home1.hosts[0], home2.hosts[0], ["--ice-server", "none"], SMALL)
    assert ("connected over RELAY (no route to desktop except the relay: add a STUN server with --ice-server stun:"
            in run.sender_err), run.sender_err
    for router in (home1.router, home2.router):
        assert run.bytes[router]["relay"] > SMALL, run.bytes
        assert run.bytes[router]["servers_udp"] == 0, run.bytes  # no STUN or TURN server was asked
        assert run.bytes[router]["direct_udp"] < SMALL // 8, run.bytes  # checks towards private addresses only


def test_two_devices_on_the_same_lan_open_a_direct_link(net: Internet, tmp_path: Path) -> None:
    home1 = net.homes[0]
    run = send_across(net, tmp_path, home1.hosts[0], home1.hosts[1], stun(net), BIG)
    assert "connected over DIRECT" in run.sender_err, run.sender_err
    assert "over DIRECT" in run.receiver_err, run.receiver_err
    counted = run.bytes[home1.router]
    # TCP inside the home, through its LAN switch: neither the relay nor any server carried the file.
    assert counted["relay"] < BIG // 8 and counted["servers_udp"] + counted["direct_udp"] < BIG // 8, run.bytes


def test_two_devices_on_the_same_lan_use_their_host_addresses(net: Internet, tmp_path: Path) -> None:
    home1 = net.homes[0]
    run = send_across(net, tmp_path, home1.hosts[0], home1.hosts[1], ["--no-direct", *stun(net)], BIG)
    assert "connected over WEBRTC via host" in run.sender_err
    counted = run.bytes[home1.router]
    assert counted["lan_udp"] > BIG, run.bytes  # inside the home, through its LAN switch
    assert counted["direct_udp"] + counted["servers_udp"] < BIG // 8, run.bytes
