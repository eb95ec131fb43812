"""A simulated internet in Linux network namespaces: an "internet" with the relay, a STUN and a TURN server, and
homes, each behind its own NAT router. For the NAT tests (tests/nat) and the WAN benchmark (benchmarks/wan.py).

Everything here is made by :class:`Internet` and removed by :meth:`Internet.close` (``with Internet(...) as net``);
no packet leaves the namespaces it creates. Addresses are only meaningful inside them::

    internet   203.0.113.1      the relay (a Realtime Database emulator, port 9000) and coturn (STUN and TURN, 3478)
       |  bridge
    router N   203.0.113.1N     WAN side; NAT (masquerade) to the LAN; a home router's firewall
       |  bridge
    host       192.168.N.2, .3  the devices of home N (default route: the router, 192.168.N.1)

A home's NAT is ``"cone"`` (Linux masquerade keeps a device's port for every destination: endpoint-independent
mapping, so STUN finds the address other devices reach) or ``"symmetric"`` (``masquerade random``: a new port per
destination, so the address STUN saw is useless to anyone else, and only a TURN server helps).

A home router drops unsolicited inbound UDP on its WAN side, as a real one's firewall does. Without that, the first
hole-punching packet from the other device reaches the router's own stack, creates a conntrack entry for that
address pair, and the masquerade then has to give the device's own outgoing packet to that address another port:
the mapping turns address-dependent and hole punching fails where a real home router lets it through.

Each router counts the bytes it forwards across its WAN side (nftables named counters, read with
:meth:`Internet.counters`):
``relay`` (TCP to or from the relay's port), ``servers_udp`` (UDP to or from 203.0.113.1: STUN and TURN),
``direct_udp`` (UDP to or from any other internet address: a direct path to another home); each home's LAN bridge
counts ``lan_udp`` (UDP between two devices of that home). Optional impairment on the routers' WAN side:
``tc netem`` delay and loss where the kernel has netem, else (loss only) an nftables rule that drops a share of
packets at random.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
SERVER_ADDRESS = "203.0.113.1"
RELAY_PORT = 9000
ICE_PORT = 3478
TURN_USER, TURN_PASSWORD = "peerchat", "nat-test-secret"
STEP = 15.0  # bound on one set-up step (a command, a server starting); never an assertion about speed

NatKind = Literal["cone", "symmetric"]


def unavailable() -> str | None:
    """Why the simulated internet cannot be built on this machine, or None when it can."""
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("turnserver", "coturn")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; .ci/run does it where it may)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"pcnprobe{os.getpid() % 100000}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=STEP)
    if result.returncode != 0:
        return f"network namespaces are not allowed here: {result.stderr.strip()}"
    try:
        nat = subprocess.run(["ip", "netns", "exec", probe, "nft", "-f", "-"], capture_output=True, text=True,
                             timeout=STEP, input="table ip probe {\n chain post {\n  type nat hook postrouting "
                                                 "priority 100;\n  masquerade random\n }\n}\n")
        if nat.returncode != 0:
            return f"the kernel refuses nftables NAT in a namespace: {nat.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=STEP)
    return None


def netem_unavailable() -> str | None:
    """Why ``tc netem`` cannot be used here (the kernel lacks the qdisc), or None."""
    if shutil.which("tc") is None:
        return "tc is not installed (iproute2)"
    probe = f"pcnnetem{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=STEP)
    try:
        result = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                                 "delay", "1ms"], capture_output=True, text=True, timeout=STEP)
        return None if result.returncode == 0 else f"this kernel has no netem qdisc ({result.stderr.strip()})"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=STEP)


@dataclass
class Home:
    """One home: its router's namespace and its devices' namespaces (and addresses)."""

    number: int
    nat: NatKind
    router: str
    hosts: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    @property
    def wan_address(self) -> str:
        return f"203.0.113.{10 * self.number}"


class Internet:
    """Build the namespaces, routers and servers; see the module docstring.

    Args:
        homes: the NAT kind of each home, in order (home 1, home 2, ...).
        hosts_per_home: devices per home, one number for every home or one per home (a second device shares the
            first one's LAN).
        delay_ms, loss_percent: impairment on every router's WAN side (each way), 0 for none.
        servers: start the relay (emulator) and coturn in the internet namespace.
    """

    def __init__(self, homes: Sequence[NatKind], *, hosts_per_home: int | Sequence[int] = 1, delay_ms: float = 0,
                 loss_percent: float = 0, servers: bool = True) -> None:
        tag = f"{os.getpid() % 100000}"
        self.prefix = f"pcn{tag}"
        self.internet = f"{self.prefix}-inet"
        self.homes = [Home(n, kind, f"{self.prefix}-r{n}") for n, kind in enumerate(homes, start=1)]
        self.hosts_per_home = [hosts_per_home] * len(homes) if isinstance(hosts_per_home, int) \
            else list(hosts_per_home)
        self.delay_ms, self.loss_percent = delay_ms, loss_percent
        self.impairment = "none"
        self._servers = servers
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self.logs: dict[str, Path] = {}

    # -- life cycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Internet:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def build(self) -> None:
        self._namespace(self.internet)
        self._ip(self.internet, "link", "add", "br0", "type", "bridge")
        self._ip(self.internet, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "br0")
        self._ip(self.internet, "link", "set", "br0", "up")
        # The rest of the internet: a default route to a gateway that never answers (a veth whose other end drops
        # everything, with a fixed neighbour entry), where packets vanish. Without it, a server sending to an
        # address that is nowhere (a device's private address) gets "network unreachable", which no server on the
        # real internet gets, and coturn closes the TURN allocation over it.
        self._ip(self.internet, "link", "add", "world0", "type", "veth", "peer", "name", "world1")
        self._ip(self.internet, "addr", "add", "198.51.100.1/24", "dev", "world0")
        for device in ("world0", "world1"):
            self._ip(self.internet, "link", "set", device, "up")
        self._ip(self.internet, "neigh", "add", "198.51.100.254", "lladdr", "02:00:00:00:00:fe", "dev", "world0",
                 "nud", "permanent")
        self._ip(self.internet, "route", "add", "default", "via", "198.51.100.254")
        for home in self.homes:
            self._build_home(home)
        if self.delay_ms or self.loss_percent:
            self._impair()
        if self._servers:
            self._start_servers()

    def close(self) -> None:
        """Stop every process started here and delete every namespace (safe to call twice)."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._processes.clear()
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=STEP)
        self._namespaces.clear()
        for leftover in Path("/tmp").glob(f"{self.prefix}-*"):  # logs, coturn's user database and pid file
            leftover.unlink(missing_ok=True)

    # -- building --------------------------------------------------------------------------------------------

    def _namespace(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=STEP)  # a leftover of a crash
        self._run("ip", "netns", "add", name)
        self._namespaces.append(name)
        self._ip(name, "link", "set", "lo", "up")

    def _build_home(self, home: Home) -> None:
        n, router = home.number, home.router
        self._namespace(router)
        # WAN: a veth from the router into the internet's bridge.
        self._ip(router, "link", "add", "wan", "type", "veth", "peer", "name", f"r{n}", "netns", self.internet)
        self._ip(self.internet, "link", "set", f"r{n}", "master", "br0")
        self._ip(self.internet, "link", "set", f"r{n}", "up")
        self._ip(router, "addr", "add", f"{home.wan_address}/24", "dev", "wan")
        self._ip(router, "link", "set", "wan", "up")
        self._ip(router, "route", "add", "default", "via", SERVER_ADDRESS)  # the "provider"; it forwards nothing
        # LAN: a bridge in the router, one veth per device.
        self._ip(router, "link", "add", "lan", "type", "bridge")
        self._ip(router, "addr", "add", f"192.168.{n}.1/24", "dev", "lan")
        self._ip(router, "link", "set", "lan", "up")
        for index in range(self.hosts_per_home[n - 1]):
            host = f"{self.prefix}-h{n}{'abcd'[index]}"
            address = f"192.168.{n}.{index + 2}"
            self._namespace(host)
            self._ip(host, "link", "add", "eth0", "type", "veth", "peer", "name", f"d{index}", "netns", router)
            self._ip(router, "link", "set", f"d{index}", "master", "lan")
            self._ip(router, "link", "set", f"d{index}", "up")
            self._ip(host, "addr", "add", f"{address}/24", "dev", "eth0")
            self._ip(host, "link", "set", "eth0", "up")
            self._ip(host, "route", "add", "default", "via", f"192.168.{n}.1")
            home.hosts.append(host)
            home.addresses.append(address)
        self._exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        random = " random" if home.nat == "symmetric" else ""
        self._nft(router, f"""
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority 100;
        oifname "wan" masquerade{random}
    }}
}}
table inet firewall {{
    chain input {{
        type filter hook input priority 0;
        iifname "wan" ct state new meta l4proto udp drop
    }}
    chain forward {{
        type filter hook forward priority 0;
        iifname "wan" ct state new drop
    }}
}}
table ip count {{
    counter relay {{}}
    counter servers_udp {{}}
    counter direct_udp {{}}
    chain forward {{
        type filter hook forward priority -10;
        oifname "wan" ip daddr {SERVER_ADDRESS} tcp dport {RELAY_PORT} counter name "relay"
        iifname "wan" ip saddr {SERVER_ADDRESS} tcp sport {RELAY_PORT} counter name "relay"
        oifname "wan" meta l4proto udp ip daddr {SERVER_ADDRESS} counter name "servers_udp"
        iifname "wan" meta l4proto udp ip saddr {SERVER_ADDRESS} counter name "servers_udp"
        oifname "wan" meta l4proto udp ip daddr != {SERVER_ADDRESS} counter name "direct_udp"
        iifname "wan" meta l4proto udp ip saddr != {SERVER_ADDRESS} counter name "direct_udp"
    }}
}}
table bridge lan {{
    counter lan_udp {{}}
    chain forward {{
        type filter hook forward priority 0;
        meta l4proto udp counter name "lan_udp"
    }}
}}
""")

    def _impair(self) -> None:
        reason = netem_unavailable()
        for home in self.homes:
            if reason is None:
                args = ["tc", "qdisc", "add", "dev", "wan", "root", "netem"]
                if self.delay_ms:
                    args += ["delay", f"{self.delay_ms:g}ms"]
                if self.loss_percent:
                    args += ["loss", f"{self.loss_percent:g}%"]
                self._exec(home.router, *args)
                # The internet's side of the same link, so that the delay is there each way.
                self._exec(self.internet, *[*args[:4], f"r{home.number}", *args[5:]])
            elif self.loss_percent:
                # No netem: drop a share of the packets crossing the router at random, each way (no delay).
                per_mille = max(1, round(self.loss_percent * 10))
                self._nft(home.router, f"""
table inet loss {{
    chain forward {{
        type filter hook forward priority -20;
        numgen random mod 1000 < {per_mille} drop
    }}
}}
""")
        if reason is None:
            self.impairment = f"netem: {self.delay_ms:g} ms each way, {self.loss_percent:g}% loss"
        elif self.loss_percent:
            self.impairment = f"{self.loss_percent:g}% loss by nftables, no added delay ({reason})"
        else:
            self.impairment = f"none ({reason})"

    def _start_servers(self) -> None:
        self.spawn("relay", self.internet, [sys.executable, "-m", "peerchat", "emulator", "--host", SERVER_ADDRESS,
                                            "--port", str(RELAY_PORT)], ready="listening on")
        self.spawn("coturn", self.internet, [
            "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--log-file=stdout", "--simple-log",
            f"--listening-ip={SERVER_ADDRESS}", f"--relay-ip={SERVER_ADDRESS}", f"--listening-port={ICE_PORT}",
            "--min-port=49152", "--max-port=49999", "--lt-cred-mech", f"--user={TURN_USER}:{TURN_PASSWORD}",
            "--realm=peerchat.test", "--no-multicast-peers", "--verbose", f"--pidfile=/tmp/{self.prefix}-turnserver.pid",
            f"--userdb=/tmp/{self.prefix}-turndb",
        ], ready="Total General servers")

    def spawn(self, name: str, namespace: str, command: list[str], *, ready: str) -> subprocess.Popen[str]:
        """Start ``command`` in ``namespace`` (output to a log file) and wait, bounded, until the log shows
        ``ready``."""
        log = Path(f"/tmp/{self.prefix}-{name}.log")
        self.logs[name] = log
        with log.open("w") as out:
            process = subprocess.Popen(["ip", "netns", "exec", namespace, *command], cwd=ROOT, text=True,
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._processes.append(process)
        deadline = time.monotonic() + STEP
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}) before it was ready:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within {STEP:g} s:\n{log.read_text()}")
            time.sleep(0.05)
        return process

    # -- using it --------------------------------------------------------------------------------------------

    @property
    def relay(self) -> str:
        return f"{SERVER_ADDRESS}:{RELAY_PORT}"

    @property
    def stun_url(self) -> str:
        return f"stun:{SERVER_ADDRESS}:{ICE_PORT}"

    @property
    def turn_url(self) -> str:
        return f"turn:{SERVER_ADDRESS}:{ICE_PORT}"

    def counters(self) -> dict[str, dict[str, int]]:
        """Bytes counted so far on each router: ``{router: {"relay": n, "servers_udp": n, "direct_udp": n,
        "lan_udp": n}}``."""
        result = {}
        for home in self.homes:
            out = self._exec(home.router, "nft", "-j", "list", "counters")
            items = json.loads(out)["nftables"]
            result[home.router] = {item["counter"]["name"]: item["counter"]["bytes"]
                                   for item in items if "counter" in item}
        return result

    def exec_prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    # -- commands --------------------------------------------------------------------------------------------

    def _run(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=STEP, input=stdin)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _ip(self, namespace: str, *args: str) -> str:
        return self._run("ip", "-n", namespace, *args)

    def _exec(self, namespace: str, *args: str) -> str:
        return self._run("ip", "netns", "exec", namespace, *args)

    def _nft(self, namespace: str, ruleset: str) -> None:
        self._run("ip", "netns", "exec", namespace, "nft", "-f", "-", stdin=ruleset)
