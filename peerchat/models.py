"""The app's pure view models: the device directory, a session's link status, chat commands and number formats.

Nothing here does I/O or knows Textual: each object takes core's events (or plain values) and returns what to
show, so the widgets stay thin and these rules are tested without a terminal or a network.
"""

from __future__ import annotations

import shlex
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core import (
    ConnectionClosed,
    ConnectionDeclinedError,
    DeviceStatus,
    Latency,
    LinkChanged,
    NoRouteError,
    ProtocolErrorEvent,
    Recovered,
    Slow,
    Transport,
    PeerInfo,
    Route,
    UpgradeFailed,
)

Severity = Literal["information", "warning", "error"]


# --- numbers ---------------------------------------------------------------------------------------------------


def format_bytes(size: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float | None) -> str:
    return "–" if not bytes_per_second else f"{format_bytes(bytes_per_second)}/s"


def format_duration(seconds: float | None) -> str:
    """A short duration for ETAs: ``"45 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``; ``"–"`` when unknown."""
    if seconds is None or seconds < 0 or seconds != seconds:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def relay_outage_line(reason: str, since: float, now: float, *, width: int = 90) -> str:
    """The relay line during an outage: ``"● relay unreachable for 12 s: <reason> — retrying"``, the reason cut to
    ``width`` characters (the notification carries it whole)."""
    reason = " ".join(reason.split()).rstrip(".") or "no answer"
    if len(reason) > width:
        reason = reason[: width - 1].rstrip() + "…"
    return f"● relay unreachable for {format_duration(max(0.0, now - since))}: {reason} — retrying"


def format_ago(seconds: float) -> str:
    """How long ago, for last-seen times: ``"just now"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 d ago"``."""
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def format_rtt(rtt: float | None) -> str:
    return "– ms" if rtt is None else f"{rtt * 1000:.0f} ms"


# --- devices ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    """One line of the device list."""

    peer: PeerInfo
    online: bool
    last_seen: float | None  # a time.time() value for offline devices (None: not known)
    trust: str | None = None  # verified, trusted, new, key-changed (None: not known)


class DeviceDirectory:
    """This user's devices: the online ones, the offline ones core knows of (with their last heartbeat's time),
    and those seen during this run (with when they left, if core cannot tell)."""

    def __init__(self) -> None:
        self._known: dict[str, PeerInfo] = {}
        self._online: set[str] = set()
        self._last_seen: dict[str, float] = {}
        self._trust: dict[str, str] = {}

    def update_trust(self, trust: dict[str, str]) -> None:
        """Take how far each device is trusted (``verified``, ``trusted``, ``new``, ``key-changed``)."""
        self._trust.update(trust)

    def update(self, online: tuple[PeerInfo, ...] | list[PeerInfo], now: float) -> None:
        """Take the current online set; devices that dropped out are remembered as last seen ``now``."""
        current = {peer.id for peer in online}
        for gone in self._online - current:
            self._last_seen[gone] = now
        for peer in online:
            self._known[peer.id] = peer
            self._last_seen.pop(peer.id, None)
        self._online = current

    def update_devices(self, devices: tuple[DeviceStatus, ...] | list[DeviceStatus], now: float) -> None:
        """Take every device core knows, online or not; an offline one shows core's last-seen time."""
        self.update([d.info for d in devices if d.online], now)
        for status in devices:
            if not status.online:
                self._known[status.info.id] = status.info
                if status.last_seen is not None:
                    self._last_seen[status.info.id] = status.last_seen

    def rows(self, *, now: float | None = None, hide_after: float | None = None,
             keep: set[str] | frozenset[str] = frozenset()) -> list[DeviceRow]:
        """Online devices first, then offline ones, each by label. With ``now`` and ``hide_after`` (seconds),
        devices offline for longer than that are left out, unless their id is in ``keep``."""
        rows = [DeviceRow(p, p.id in self._online, self._last_seen.get(p.id), self._trust.get(p.id))
                for p in self._known.values()]
        if now is not None and hide_after is not None:
            rows = [r for r in rows if r.online or r.peer.id in keep or r.last_seen is None
                    or now - r.last_seen <= hide_after]
        return sorted(rows, key=lambda r: (not r.online, r.peer.label.lower(), r.peer.id))

    def hidden(self, now: float, hide_after: float) -> int:
        """How many devices :meth:`rows` leaves out with these values."""
        return len(self._known) - len(self.rows(now=now, hide_after=hide_after))

    def forget(self, peer_id: str) -> None:
        """Leave ``peer_id`` out until it is heard of again."""
        self._known.pop(peer_id, None)
        self._last_seen.pop(peer_id, None)
        self._online.discard(peer_id)

    def find(self, name: str) -> list[PeerInfo]:
        """Devices whose id is ``name``, or else whose label is ``name`` (case-insensitive)."""
        if name in self._known:
            return [self._known[name]]
        return [p for p in self._known.values() if p.label.lower() == name.lower()]

    def is_online(self, peer_id: str) -> bool:
        return peer_id in self._online


def find_device(peers: list[PeerInfo] | tuple[PeerInfo, ...], name: str) -> PeerInfo:
    """The one device among ``peers`` whose id, or else label, is ``name``.

    Raises:
        LookupError: none matches, or several share that label (the message lists their ids).
    """
    for peer in peers:
        if peer.id == name:
            return peer
    matches = [p for p in peers if p.label.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        online = ", ".join(f"{p.label} ({p.id})" for p in peers) or "none"
        raise LookupError(f"no online device is called {name!r}; online now: {online}")
    ids = ", ".join(p.id for p in matches)
    raise LookupError(f"several devices are called {name!r} ({ids}); use the id instead")


# --- a session's link status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """Something the person should be told once (a notification)."""

    text: str
    severity: Severity = "information"


def describe_link(transport: Transport, route: Route | None) -> str:
    """``"WEBRTC via NAT"``, ``"WEBRTC"`` (route unknown), ``"DIRECT"`` or ``"RELAY"``."""
    if transport == "webrtc" and route is not None:
        return f"WEBRTC {route}"
    return transport.upper()


_NO_ROUTE_ADVICE = {
    "stun": "add a STUN server with --ice-server stun:HOST[:PORT] (and a TURN server for strict NATs)",
    "turn": "add a TURN server with --ice-server turn:HOST[:PORT] --ice-username NAME --ice-credential PASSWORD",
    None: "the TURN server could not carry it either: let UDP through to it, or use it over TCP "
          "(--ice-server 'turn:HOST:PORT?transport=tcp')",
}


def describe_upgrade_failure(failure: UpgradeFailed, label: str) -> str:
    """Why the relay carries a session, in words a person can act on: for a failed NAT traversal,
    ``"no route to desktop except the relay: add a TURN server with --ice-server …"``; else core's reason."""
    error = failure.error
    if isinstance(error, NoRouteError):
        return f"no route to {label} except the relay: {_NO_ROUTE_ADVICE.get(error.missing, _NO_ROUTE_ADVICE[None])}"
    if failure.reason.startswith("direct"):  # neither the direct link nor WebRTC opened (the reasons say why)
        return f"relay: {failure.reason}"
    return f"no WebRTC: {failure.reason}"


@dataclass
class LinkStatus:
    """A session's status line: the link (and for WebRTC how it got through), the latency, and warnings with
    their reasons.

    Feed it core's connection events with :meth:`apply`; it returns what deserves a notification.
    """

    transport: Transport = "relay"
    route: Route | None = None
    peer_label: str = "the other device"
    rtt: float | None = None
    warnings: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    closed: str | None = None
    webrtc_off: bool = False  # this device turned WebRTC off: that is no news
    direct_on: bool = True  # this device tries the direct link (what a fallback retries first)

    def apply(self, event: object) -> Notice | None:
        match event:
            case Latency(rtt=rtt, transport=transport):
                self.rtt, self.transport = rtt, transport
            case Slow(what=what, waited=waited, timeout=timeout):
                self.warnings[what] = f"slow: {what} ({waited:.0f} s, gives up after {timeout:.0f} s)"
            case Recovered(what=what):
                self.warnings.pop(what, None)
            case LinkChanged(transport="direct"):
                self.transport, self.route, self.note = "direct", None, None
                return Notice("Direct link open (TCP, TLS 1.3): the fastest way between your devices.")
            case LinkChanged(transport="webrtc", previous="direct", reason=reason, route=route):
                self.transport, self.route, self.note = "webrtc", route, f"on WebRTC: {reason}"
                return Notice(f"Now on WebRTC ({reason}).", "warning")
            case LinkChanged(transport="webrtc", route=route):
                self.transport, self.route, self.note = "webrtc", route, None
                return Notice(f"Direct WebRTC link open{f' ({route})' if route else ''}.")
            case LinkChanged(transport=transport, reason=reason):
                self.transport, self.route = transport, None
                self.note = f"fell back to the relay: {reason}"
                retrying = "the direct link" if self.direct_on else "WebRTC"
                return Notice(f"Fell back to the relay ({reason}). Messages keep flowing; retrying {retrying}.",
                              "warning")
            case UpgradeFailed(reason=reason) if self.webrtc_off and not reason.startswith("direct"):
                self.note = "relay only: WebRTC is off on this device"
            case UpgradeFailed(reason=reason) as failure:
                note = describe_upgrade_failure(failure, self.peer_label)
                if note == self.note:
                    return None  # the same reason again (a retry that failed the same way): once is enough
                self.note = note
                if isinstance(failure.error, NoRouteError):
                    return Notice(f"{note[0].upper()}{note[1:]}. ({reason})", "warning")
                if reason.startswith("direct"):
                    return Notice(f"No faster link ({reason}); using the relay.", "warning")
                return Notice(f"WebRTC unavailable ({reason}); using the relay.", "warning")
            case ProtocolErrorEvent(error=error):
                return Notice(f"Ignored malformed data from the other device: {error}", "warning")
            case ConnectionClosed(reason=reason, error=error):
                self.warnings.clear()
                self.closed = describe_close(reason, error)
                return Notice(f"Session closed: {self.closed}.", "information" if reason != "connection-error"
                              else "error")
        return None

    def render(self, *, latency: bool = True) -> str:
        """The status line as Rich markup, e.g. ``● WEBRTC  12 ms  ⚠ slow: ...``."""
        if self.closed:
            return f"[b red]● CLOSED[/]  {escape(self.closed)}"
        link = f"[b green]● {describe_link(self.transport, self.route)}[/]" if self.transport != "relay" \
            else "[b yellow]● RELAY[/]"
        parts = [link]
        if latency:
            parts.append(format_rtt(self.rtt))
        parts.extend(f"[b $warning]⚠ {escape(text)}[/]" for text in self.warnings.values())
        if self.note:
            parts.append(f"[dim]{escape(self.note)}[/]")
        return "  ".join(parts)


def describe_close(reason: str, error: BaseException | None) -> str:
    """Why a session closed, for a status line: "the other device closed it", "desktop declined the session", ..."""
    if isinstance(error, ConnectionDeclinedError):
        who = error.label or "the other device"
        return f"{who} declined the session" + (f" ({error.reason})" if error.reason else "")
    if reason == "peer-requested-closed":
        return "the other device closed it"
    if reason == "local-closed":
        return "you closed it"
    detail = str(error).strip().rstrip(".") if error else ""
    return f"the connection was lost ({detail})" if detail else "the connection was lost"


# Characters that reorder or hide text around them (bidirectional overrides and isolates, marks, the BOM).
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` from another device (a label, a file name, a message), safe to put on the screen.

    Control characters (escape sequences start with one) and bidirectional overrides would be interpreted by the
    terminal or reorder what is around them: each becomes a visible escape (``\\x1b``, ``\\u202e``). Newlines
    are kept when ``keep_newlines`` (a message's lines), else shown as ``\\n`` too. Markup is not touched here:
    show the result as a ``Text``/``Content``, or through :func:`markup_escape` where a string is read as markup.
    """
    return "".join(
        _visible(c) if (unicodedata.category(c) == "Cc" and not (keep_newlines and c == "\n")) or c in _INVISIBLE
        else c
        for c in text)


def escape_line(text: str) -> str:
    """``text`` as one field of a tab-separated line: a backslash doubled, a tab, newline or carriage return as
    ``\\t``, ``\\n``, ``\\r``, any other control character as ``\\xHH`` and a bidirectional override as
    ``\\uHHHH``, so that a script can split on tabs and lines and read every field back."""
    return shown(text.replace("\\", "\\\\"))


def terminal_line(text: str) -> str:
    """A line for the terminal or a pipe, with every tab-separated field :func:`shown`: a label, a file name or a
    reason from another device can never move the cursor, retitle the window, make a link or reorder the line."""
    return "\t".join(shown(field) for field in text.split("\t"))


def markup_escape(text: str) -> str:
    """``text`` for a place that reads Textual markup (the status line, the command palette): every ``[`` escaped,
    so nothing in it is ever taken for a tag (Textual's markup reads any other backslash literally)."""
    return text.replace("[", "\\[")


def escape(text: str) -> str:
    """Text from anywhere, for the status line's markup: :func:`shown`, then :func:`markup_escape`."""
    return markup_escape(shown(text))


# --- the chat input --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendText:
    text: str


@dataclass(frozen=True)
class SendFiles:
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class CloseSession:
    pass


@dataclass(frozen=True)
class ShowHelp:
    pass


@dataclass(frozen=True)
class RetryFailed:
    pass


ChatCommand = SendText | SendFiles | CloseSession | ShowHelp | RetryFailed

CHAT_HELP = (
    "Type a message and press Enter. Commands: /send PATH [PATH ...] sends files (quote paths with spaces), "
    "/retry sends the failed messages again, /close ends the session, /help shows this. Start a message with // to send a leading /."
)


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be sent ("x does not exist", "x cannot be read (permission denied)", "x is not a
    regular file or folder ..."), or None when it can: checked before connecting, so that a bad path never makes the
    other device answer an offer."""
    try:
        if not path.exists():
            return f"{path} does not exist"
        if path.is_dir():
            next(iter(path.iterdir()), None)
        elif not path.is_file():
            return f"{path} is not a regular file or folder (a device, pipe or socket)"
        else:
            with path.open("rb"):
                pass
    except PermissionError:
        return f"{path} cannot be read (permission denied)"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    return None


def missing_paths_error(paths: tuple[Path, ...] | list[Path], typed: str = "") -> str | None:
    """The app's notification when one of ``paths`` cannot be sent (see :func:`path_problem`), or None. ``typed``
    is what the person typed: a hint about quoting when it has unquoted spaces."""
    for path in paths:
        problem = path_problem(path)
        if problem is not None:
            hint = ""
            words = typed.partition(" ")[2].strip()  # what followed "/send "
            if problem.endswith("does not exist") and " " in words and '"' not in words and "'" not in words:
                hint = ' Quote a path with spaces: /send "my file.txt".'
            elif problem.endswith("does not exist"):
                hint = " Check the path."
            return f"Not sent: {problem}.{hint}"
    return None


def parse_chat_input(text: str) -> ChatCommand | None:
    """What the chat input asks for; None for blank input.

    Raises:
        ValueError: an unknown command or a /send without paths (the message says what to type).
    """
    if not text.strip():
        return None
    if text.startswith("//"):
        return SendText(text[1:])
    if not text.startswith("/"):
        return SendText(text)
    name, _, rest = text[1:].partition(" ")
    if name == "send":
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise ValueError(f"/send: {exc}; quote paths with spaces like /send \"my file.txt\"") from None
        if not words:
            raise ValueError("/send needs at least one path, like /send ~/notes.txt")
        return SendFiles(tuple(Path(w).expanduser() for w in words))
    if name == "close":
        return CloseSession()
    if name == "help":
        return ShowHelp()
    if name == "retry":
        return RetryFailed()
    raise ValueError(f"unknown command /{name}. {CHAT_HELP}")


# --- the conversation ------------------------------------------------------------------------------------------

DELIVERY_MARKS: dict[str, tuple[str, str]] = {
    # status: (mark, style). Outgoing texts only; what arrived needs no mark.
    "queued": ("◷ queued", "yellow"),
    "sent": ("✓ sent", "dim"),
    "delivered": ("✓✓ delivered", "green"),
    "failed": ("✗ failed, Ctrl+R retries", "bold red"),
}


def entry_parts(entry: Any, me: str, now: float) -> list[tuple[str, str]]:
    """One history entry as ``(text, style)`` parts: ``09:30  you  hello  ✓✓ delivered``.

    The time has the date in front when the entry is not from today (``now``'s day), so an old conversation reads
    as one.
    """
    stamp = time.strftime("%H:%M", time.localtime(entry.at))
    if time.localtime(entry.at)[:3] != time.localtime(now)[:3]:
        stamp = time.strftime("%Y-%m-%d ", time.localtime(entry.at)) + stamp
    # What another device wrote (its label, a text, a file name) is shown literally (see shown()).
    who, style = ("you", "bold green") if entry.direction == "out" else (shown(entry.label), "bold cyan")
    parts = [(stamp, "dim"), ("  ", ""), (who, style), ("  ", "")]
    if entry.kind == "text":
        parts.append((shown(entry.body, keep_newlines=True), ""))
        if entry.direction == "out":
            mark, mark_style = DELIVERY_MARKS.get(entry.status, ("", ""))
            parts.extend([("  ", ""), (mark, mark_style)])
        return parts
    size = f" ({format_bytes(entry.size)})" if entry.size is not None else ""
    name = shown(entry.body)
    if entry.direction == "out":
        verb = {"delivered": "✓ sent and verified", "failed": "✗ not sent"}.get(entry.status, "↑ sending")
        parts.append((f"{verb}: {name}{size}", "red" if entry.status == "failed" else "green"))
    else:
        where = f", saved to {shown(entry.path)}" if entry.path else ""
        verb = "✗ not received" if entry.status == "failed" else "✓ received"
        parts.append((f"{verb}: {name}{size}{where}", "red" if entry.status == "failed" else "green"))
    return parts
