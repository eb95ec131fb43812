"""peerchat's settings: command-line flags, a TOML file and the environment resolved into one `Settings`.

Precedence, highest first: command-line flags, the environment (``FIREBASE_DATABASE_EMULATOR_HOST``,
``PEERCHAT_ICE_SERVERS``), the TOML
file (``config.toml`` in the platform's user config directory, or ``--config PATH``), then the defaults. The file
takes the same keys as the flags, with ``_`` or ``-``::

    user = "alice"
    label = "laptop"
    database_url = "https://my-project-default-rtdb.firebaseio.com"
    credentials = "~/keys/my-project.json"
    webrtc = true
    addresses = "192.168.1.20"             # only these local addresses for direct and WebRTC (comma-separated)
    direct = true                          # the direct link (TCP + TLS 1.3) when the devices reach each other
    direct_timeout = 3.0                   # seconds one direct-link attempt may take
    ice_servers = ["stun:stun.example.org", "turn:turn.example.org:3478?transport=udp"]   # or "none"
    ice_username = "alice"                 # for the TURN server
    ice_credential = "secret"
    download_dir = "~/Downloads/peerchat"
    history = true                         # keep conversations (false: nothing is written to disk)
    data_dir = "~/.local/share/peerchat"   # where the history lives

Where the relay is (:attr:`Settings.mode`):

- ``"emulator"``: ``--emulator HOST:PORT`` or ``FIREBASE_DATABASE_EMULATOR_HOST`` names a running emulator;
- ``"firebase"``: ``--database-url`` names a real Firebase project (with ``--credentials``, a service-account JSON);
- ``"embedded"``: neither, so peerchat uses the emulator on 127.0.0.1:9000, starting one if none answers there.

ICE servers (how WebRTC gets through NATs): ``--ice-server URL`` (repeatable) with ``stun:HOST[:PORT]``,
``turn:HOST[:PORT][?transport=udp|tcp]`` or ``turns:HOST[:PORT]``; a TURN server needs ``--ice-username`` and
``--ice-credential``. WebRTC uses one STUN and one TURN server at most. Without any setting peerchat uses
:data:`DEFAULT_ICE_SERVERS` (a public STUN server, so that two devices behind ordinary home NATs connect with no
set-up); ``--ice-server none`` (or ``PEERCHAT_ICE_SERVERS=none``) turns it off.

A device's id is generated once per label and stored in ``devices.json`` in the user state directory, so it stays the
same across runs, and two instances with different labels on one machine are two devices of the same user.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import secrets
import socket
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs

APP_NAME = "peerchat"
EMULATOR_ENV = "FIREBASE_DATABASE_EMULATOR_HOST"
ICE_SERVERS_ENV = "PEERCHAT_ICE_SERVERS"
DEFAULT_ICE_SERVERS = ("stun:stun.l.google.com:19302",)
"""The ICE servers used when no setting names any: one public STUN server (it learns this device's public address,
nothing of what it sends)."""
NO_ICE_SERVERS = "none"
DEFAULT_USER = "local"
EMBEDDED_HOST = "127.0.0.1"
EMBEDDED_PORT = 9000
DEFAULT_NAMESPACE = "peerchat"

Mode = Literal["embedded", "emulator", "firebase"]

# Firebase keys may not contain . # $ [ ] / or control characters; ids and users become keys.
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-:@+=~]{1,64}$")
_KEYS = ("user", "label", "device_id", "database_url", "credentials", "emulator", "webrtc", "addresses",
         "webrtc_addresses", "direct", "direct_timeout", "ice_servers", "ice_username", "ice_credential",
         "download_dir", "ask", "require_verified", "history", "data_dir")
_BOOL_KEYS = ("webrtc", "direct", "require_verified", "history")
ASK_CHOICES = ("new", "unverified", "always", "never")
"""When the app asks the person to accept an incoming session: from new devices only (the default), from devices
not verified with the comparison code, always, or never (every device whose key has not changed is accepted)."""
_ICE_URL_RE = re.compile(
    r"^(?P<scheme>stun|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting (and the file) and says what is expected."""


@dataclass(frozen=True)
class Settings:
    """Everything the app and the headless commands need to reach the relay and act as one device."""

    user: str = DEFAULT_USER
    label: str = "device"
    device_id: str = ""
    database_url: str | None = None
    credentials: Path | None = None
    emulator: str | None = None
    webrtc: bool = True
    # The local addresses the direct link and WebRTC may use (None: every interface, plus 127.0.0.1 for devices
    # on one machine).
    addresses: tuple[str, ...] | None = None
    # The direct link (TCP + TLS 1.3), and how long one attempt may take (None: core's default).
    direct: bool = True
    direct_timeout: float | None = None
    # STUN and TURN server URLs for WebRTC (empty: none; resolve_settings() puts DEFAULT_ICE_SERVERS here when no
    # setting names any), and the TURN server's user name and password.
    ice_servers: tuple[str, ...] = ()
    ice_username: str | None = None
    ice_credential: str | None = None
    download_dir: Path = field(default_factory=lambda: default_download_dir())
    namespace: str = DEFAULT_NAMESPACE
    # What the app calls the relay in its status line (None: its kind and address, see describe_relay).
    relay_name: str | None = None
    # Keep the conversation history on disk in data_dir (history off, or no data_dir: in memory only).
    history: bool = True
    data_dir: Path | None = None

    @property
    def history_path(self) -> Path | None:
        """The history database of this device, or None when history is kept in memory only."""
        if not self.history or self.data_dir is None:
            return None
        from .history import history_file

        return history_file(self.data_dir, self.device_id)

    # Where this device's identity key and the keys of the devices it trusts are kept (one folder per device id);
    # None: in memory only (a new identity every run; tests).
    keys_dir: Path | None = None
    # Which incoming sessions the app asks about (ASK_CHOICES), and whether only verified devices may connect.
    ask: str = "new"
    require_verified: bool = False

    @property
    def key_store_dir(self) -> Path | None:
        """This device's own key store folder (``keys_dir / device_id``), or None."""
        return None if self.keys_dir is None else self.keys_dir / self.device_id

    @property
    def webrtc_addresses(self) -> tuple[str, ...] | None:
        """The former name of :attr:`addresses` (``--webrtc-addresses`` stays an alias of ``--addresses``)."""
        return self.addresses

    @property
    def mode(self) -> Mode:
        if self.emulator:
            return "emulator"
        if self.database_url:
            return "firebase"
        return "embedded"

    @property
    def emulator_address(self) -> tuple[str, int]:
        """The emulator's (host, port): the configured one, or the embedded default."""
        if self.emulator:
            return parse_host_port(self.emulator, "emulator")
        return EMBEDDED_HOST, EMBEDDED_PORT

    @property
    def relay_url(self) -> str:
        """The database URL handed to firebase-admin (an ``http://host:port?ns=...`` URL for an emulator)."""
        if self.mode == "firebase":
            assert self.database_url is not None
            return self.database_url
        host, port = self.emulator_address
        return f"http://{host}:{port}?ns={self.namespace}"

    def describe_relay(self) -> str:
        """Where the relay is, in words, for the status bar and error messages (``relay_name`` if set)."""
        if self.relay_name:
            return self.relay_name
        if self.mode == "firebase":
            return f"Firebase {self.database_url}"
        host, port = self.emulator_address
        kind = "embedded emulator" if self.mode == "embedded" else "emulator"
        return f"{kind} {host}:{port}"


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME))


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_keys_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "keys"


def default_download_dir() -> Path:
    return Path(platformdirs.user_downloads_dir()) / APP_NAME


def default_label() -> str:
    label = re.sub(r"[^A-Za-z0-9_\-]", "-", socket.gethostname().split(".")[0]).strip("-")
    return label[:64] or "device"


def parse_host_port(value: str, name: str = "emulator") -> tuple[str, int]:
    """Split ``HOST:PORT``; raise :class:`ConfigError` naming ``name`` when it is not that."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host or "/" in value:
        raise ConfigError(f"{name}: expected HOST:PORT (like 127.0.0.1:9000), got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{name}: the port in {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}: the port in {value!r} must be between 1 and 65535")
    return host, port


def parse_addresses(value: str) -> tuple[str, ...]:
    """Split a comma-separated list of IP addresses; raise :class:`ConfigError` naming the bad one."""
    addresses = tuple(part.strip() for part in value.split(",") if part.strip())
    if not addresses:
        raise ConfigError("addresses: expected IP addresses separated by commas, like 127.0.0.1,192.168.1.20")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"addresses: {address!r} is not an IP address") from None
    return addresses


def parse_seconds(value: Any, name: str) -> float:
    """A positive number of seconds (at most an hour); raise :class:`ConfigError` naming the setting."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number of seconds, like 3 or 0.5, not {value!r}") from None
    if not 0 < seconds <= 3600:
        raise ConfigError(f"{name}: {value!r} must be above 0 and at most 3600 seconds")
    return seconds
def parse_ice_servers(values: str | list[str] | tuple[str, ...], username: str | None = None,
                      credential: str | None = None) -> tuple[str, ...]:
    """Check ICE server URLs (a list, or one string with URLs separated by commas or spaces); ``none`` alone means
    no server at all and gives ``()``.

    Raises:
        ConfigError: a URL is malformed, ``none`` is mixed with URLs, more than one STUN or TURN server is named
            (WebRTC uses one of each), or a TURN server lacks a user name or password.
    """
    if isinstance(values, str):
        values = [values]
    urls = tuple(url for value in values for url in re.split(r"[\s,]+", str(value).strip()) if url)
    if not urls:
        raise ConfigError("ice-server: expected a STUN or TURN URL like stun:stun.example.org:3478, or none")
    if NO_ICE_SERVERS in (url.lower() for url in urls):
        if len(urls) > 1:
            raise ConfigError(f"ice-server: 'none' turns every ICE server off; it cannot be combined with {urls}")
        return ()
    kinds: dict[str, str] = {}
    for url in urls:
        match = _ICE_URL_RE.match(url)
        if match is None:
            raise ConfigError(
                f"ice-server: {url!r} is not a STUN or TURN URL; use stun:HOST[:PORT], "
                "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]")
        scheme, port = match["scheme"], match["port"]
        if port is not None and not 0 < int(port) < 65536:
            raise ConfigError(f"ice-server: the port in {url!r} must be between 1 and 65535")
        if scheme == "stun" and match["transport"]:
            raise ConfigError(f"ice-server: {url!r}: a STUN URL takes no ?transport=")
        if scheme == "turns" and match["transport"] == "udp":
            raise ConfigError(f"ice-server: {url!r}: turns: runs over TCP (TLS) only")
        kind = "STUN" if scheme == "stun" else "TURN"
        if kind in kinds:
            raise ConfigError(f"ice-server: WebRTC uses one {kind} server, and two are named ({kinds[kind]} and "
                              f"{url}); keep one")
        kinds[kind] = url
    if "TURN" in kinds and not (username and credential):
        raise ConfigError(f"ice-server: the TURN server {kinds['TURN']} needs --ice-username and --ice-credential "
                          "(ice_username and ice_credential in the config file)")
    return urls


def read_config_file(path: Path) -> dict[str, Any]:
    """Read the TOML file's keys (``-`` folded to ``_``); a missing file is empty, anything unknown is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _KEYS:
            known = ", ".join(_KEYS)
            raise ConfigError(f"the config file {path} has an unknown key {key!r} (known keys: {known})")
        if name == "ice_servers":
            if not (isinstance(value, str) or isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"the config file {path}: {key} must be a list of URLs (or \"none\"), got {value!r}")
            values[name] = value
            continue
        expected: type | tuple[type, ...] = bool if name in _BOOL_KEYS else str
        if name == "direct_timeout":
            expected = (int, float)
        if not isinstance(value, expected) or (name == "direct_timeout" and isinstance(value, bool)):
            kind = "number" if name == "direct_timeout" else expected.__name__  # type: ignore[union-attr]
            raise ConfigError(f"the config file {path}: {key} must be a {kind}, got {value!r}")
        values[name] = value
    return values


def device_id_for(label: str, state_dir: Path) -> str:
    """The stored device id for ``label``, generated and saved on first use. Several peerchat processes may start
    at once on one state directory (an app and a headless command): the store is read, changed and replaced under
    an exclusive lock, through a temporary file of this process's own, so none of them fails or loses another's id.

    Raises:
        ConfigError: the store exists but is not what peerchat wrote (it is left as it is), or cannot be saved.
    """
    store = state_dir / "devices.json"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with open(state_dir / "devices.lock", "a") as lock:
            _lock(lock)
            ids = _read_ids(store)
            if label in ids:
                return ids[label]
            device_id = f"d{secrets.token_hex(6)}"
            ids[label] = device_id
            fd, tmp = tempfile.mkstemp(prefix="devices.", suffix=".tmp", dir=state_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(ids, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, store)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError as exc:
        raise ConfigError(f"cannot save the device id in {store}: {exc.strerror or exc}") from exc
    return device_id


def _lock(file: Any) -> None:
    """Hold an exclusive lock on ``file`` until it is closed (where the platform has ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the temporary file alone keeps writes whole
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)


def _read_ids(store: Path) -> dict[str, str]:
    if not store.exists():
        return {}
    try:
        loaded = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the device id store {store} is unreadable ({exc}); fix or delete it") from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise ConfigError(f"the device id store {store} is not a JSON object of label -> id; fix or delete it")
    return loaded


def _check_key(name: str, value: str) -> str:
    if not _KEY_RE.match(value):
        raise ConfigError(
            f"{name}: {value!r} is not allowed; use 1 to 64 letters, digits or _ - : @ + = ~ (no spaces, no . # $ / [ ])"
        )
    return value


def resolve_settings(
    cli: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    state_dir: Path | None = None,
) -> Settings:
    """Merge flags (``cli``; None means "not given"), the environment, the TOML file and the defaults.

    Raises:
        ConfigError: a value is invalid, or the file or the device id store is unusable.
    """
    env = os.environ if env is None else env
    file_values = read_config_file(config_file or default_config_file())
    given = {k: v for k, v in cli.items() if v is not None}
    unknown = set(given) - set(_KEYS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")

    def pick(name: str, default: Any = None) -> Any:
        if name in given:
            return given[name]
        if name == "emulator" and env.get(EMULATOR_ENV):
            return env[EMULATOR_ENV]
        if name == "ice_servers" and env.get(ICE_SERVERS_ENV, "").strip():
            return env[ICE_SERVERS_ENV]
        return file_values.get(name, default)

    user = _check_key("user", str(pick("user", DEFAULT_USER)).strip())
    label = pick("label")
    label = default_label() if label is None else str(label).strip()
    if not label or len(label) > 64 or any(ord(c) < 32 for c in label):
        raise ConfigError(f"label: {label!r} must be 1 to 64 printable characters")
    emulator = pick("emulator")
    if emulator:
        host, port = parse_host_port(str(emulator), "emulator")
        emulator = f"{host}:{port}"
    database_url = pick("database_url")
    if database_url and not str(database_url).startswith(("https://", "http://")):
        raise ConfigError(f"database-url: {database_url!r} must start with https:// (your project's database URL)")
    credentials = pick("credentials")
    credentials_path = Path(credentials).expanduser() if credentials else None
    if credentials_path is not None and not emulator and not credentials_path.is_file():
        raise ConfigError(f"credentials: {credentials_path} is not a file (expected a service-account JSON)")
    device_id = pick("device_id")
    if device_id:
        device_id = _check_key("device-id", str(device_id))
    else:
        device_id = device_id_for(label, state_dir or default_state_dir())
    addresses = pick("addresses") or pick("webrtc_addresses")
    direct_timeout = pick("direct_timeout")
    if direct_timeout is not None:
        direct_timeout = parse_seconds(direct_timeout, "direct-timeout")
    ice_username, ice_credential = pick("ice_username"), pick("ice_credential")
    ice_servers = pick("ice_servers")
    ice_servers = DEFAULT_ICE_SERVERS if ice_servers is None else parse_ice_servers(
        ice_servers, ice_username, ice_credential)
    download = pick("download_dir")
    download_dir = Path(download).expanduser() if download else default_download_dir()
    data = pick("data_dir")
    data_dir = Path(data).expanduser() if data else default_data_dir()
    ask = str(pick("ask", "new"))
    if ask not in ASK_CHOICES:
        raise ConfigError(f"ask: {ask!r} must be one of {', '.join(ASK_CHOICES)}")
    return Settings(
        user=user,
        label=label,
        device_id=device_id,
        database_url=database_url or None,
        credentials=credentials_path,
        emulator=emulator or None,
        webrtc=bool(pick("webrtc", True)),
        addresses=parse_addresses(str(addresses)) if addresses else None,
        direct=bool(pick("direct", True)),
        direct_timeout=direct_timeout,
        ice_servers=ice_servers,
        ice_username=ice_username,
        ice_credential=ice_credential,
        download_dir=download_dir,
        history=bool(pick("history", True)),
        data_dir=data_dir,
        keys_dir=default_keys_dir(),
        ask=ask,
        require_verified=bool(pick("require_verified", False)),
    )


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the settings flags (``--user``, ``--label``, ...) to ``parser``.

    Flags that are not given leave no attribute (``SUPPRESS``), so the same flags can sit on the main parser and on
    each subcommand without one overwriting the other; read them with :func:`settings_from_args`.
    """
    group = parser.add_argument_group("settings (also read from the config file)")
    add = group.add_argument
    add("--user", default=argparse.SUPPRESS, help=f"the user whose devices these are (default: {DEFAULT_USER})")
    add("--label", default=argparse.SUPPRESS, help="this device's name, shown to the other devices (default: this host's name, "
        f"{default_label()})")
    add("--device-id", dest="device_id", default=argparse.SUPPRESS,
        help="this device's id (default: generated once per label and kept)")
    add("--database-url", dest="database_url", default=argparse.SUPPRESS,
        help="a real Firebase Realtime Database, https://PROJECT-default-rtdb.firebaseio.com")
    add("--credentials", default=argparse.SUPPRESS, help="the service-account JSON for --database-url")
    add("--emulator", default=argparse.SUPPRESS, metavar="HOST:PORT",
        help=f"use the emulator at HOST:PORT (also FIREBASE_DATABASE_EMULATOR_HOST; default: the one on "
        f"{EMBEDDED_HOST}:{EMBEDDED_PORT}, started in this process if none answers there)")
    add("--no-webrtc", dest="webrtc", action="store_const", const=False, default=argparse.SUPPRESS,
        help="stay on the relay; never open a direct WebRTC link")
    add("--addresses", "--webrtc-addresses", dest="addresses", default=argparse.SUPPRESS, metavar="IP[,IP...]",
        help="the only local addresses the direct link and WebRTC may use (default: every interface, and 127.0.0.1)")
    add("--no-direct", dest="direct", action="store_const", const=False, default=argparse.SUPPRESS,
        help="never open a direct TCP link (WebRTC and the relay only)")
    add("--direct-timeout", dest="direct_timeout", default=argparse.SUPPRESS, metavar="S",
        help="seconds one direct-link attempt may take (default: 3)")
    add("--ice-server", dest="ice_servers", action="append", default=argparse.SUPPRESS, metavar="URL",
        help="a STUN or TURN server for WebRTC across NATs: stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], "
             f"turns:HOST[:PORT]; repeat for one of each; 'none' for no server (default: {DEFAULT_ICE_SERVERS[0]})")
    add("--ice-username", dest="ice_username", default=argparse.SUPPRESS, metavar="NAME",
        help="the TURN server's user name")
    add("--ice-credential", dest="ice_credential", default=argparse.SUPPRESS, metavar="PASSWORD",
        help="the TURN server's password")
    add("--download-dir", dest="download_dir", default=argparse.SUPPRESS, metavar="DIR",
        help=f"where received files are saved (default: {default_download_dir()})")
    add("--no-history", dest="history", action="store_const", const=False, default=argparse.SUPPRESS,
        help="keep no conversation history on disk (default: kept in the data directory)")
    add("--data-dir", dest="data_dir", default=argparse.SUPPRESS, metavar="DIR",
        help=f"where the conversation history is kept (default: {default_data_dir()})")
    add("--ask", choices=ASK_CHOICES, default=argparse.SUPPRESS,
        help="which incoming sessions to ask about: new devices (default), unverified ones, always, never")
    add("--require-verified", dest="require_verified", action="store_const", const=True, default=argparse.SUPPRESS,
        help="open sessions only with devices verified with the comparison code (both ways)")
    add("--config", dest="config_file", default=argparse.SUPPRESS, metavar="FILE",
        help=f"the settings file (default: {default_config_file()})")


def settings_from_args(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve :class:`Settings` from parsed flags (see :func:`add_settings_arguments`).

    Raises:
        ConfigError: as :func:`resolve_settings`.
    """
    values = vars(args)
    cli = {key: values[key] for key in _KEYS if values.get(key) is not None}
    config_file = values.get("config_file")
    path = Path(config_file).expanduser() if config_file else None
    if path is not None and not path.is_file():
        raise ConfigError(f"--config: {path} is not a file")
    return resolve_settings(cli, env=env, config_file=path)
