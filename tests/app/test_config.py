"""Tests for peerchat.config: precedence, validation, the TOML file and stable device ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerchat.config import (
    DEFAULT_ICE_SERVERS,
    ICE_SERVERS_ENV,
    ConfigError,
    device_id_for,
    parse_host_port,
    resolve_settings,
)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "config.toml", tmp_path / "state"


def resolve(dirs, cli=None, env=None):
    config_file, state_dir = dirs
    return resolve_settings(cli or {}, env=env or {}, config_file=config_file, state_dir=state_dir)


def test_defaults_run_on_the_embedded_emulator(dirs):
    settings = resolve(dirs)
    assert settings.mode == "embedded"
    assert settings.user == "local"
    assert settings.emulator_address == ("127.0.0.1", 9000)
    assert settings.relay_url == "http://127.0.0.1:9000?ns=peerchat"
    assert settings.webrtc is True


def test_device_id_is_stable_per_label_and_differs_between_labels(dirs):
    laptop = resolve(dirs, {"label": "laptop"}).device_id
    desktop = resolve(dirs, {"label": "desktop"}).device_id
    assert laptop != desktop
    assert resolve(dirs, {"label": "laptop"}).device_id == laptop
    assert resolve(dirs, {"label": "desktop"}).device_id == desktop


def test_explicit_device_id_wins_and_is_not_stored(dirs):
    assert resolve(dirs, {"label": "x", "device_id": "fixed-1"}).device_id == "fixed-1"
    assert not (dirs[1] / "devices.json").exists()


def test_corrupt_device_store_is_an_error_and_is_kept(tmp_path):
    store = tmp_path / "devices.json"
    store.write_text("{not json")
    with pytest.raises(ConfigError, match="devices.json"):
        device_id_for("laptop", tmp_path)
    assert store.read_text() == "{not json"


def test_precedence_cli_over_env_over_file(dirs):
    dirs[0].write_text('user = "filer"\nemulator = "10.0.0.1:1"\nwebrtc = false\ndownload-dir = "/tmp/dl"\n')
    from_file = resolve(dirs)
    assert (from_file.user, from_file.emulator, from_file.webrtc) == ("filer", "10.0.0.1:1", False)
    assert from_file.download_dir == Path("/tmp/dl")
    from_env = resolve(dirs, env={"FIREBASE_DATABASE_EMULATOR_HOST": "127.0.0.1:9555"})
    assert from_env.emulator == "127.0.0.1:9555"
    assert from_env.mode == "emulator"
    from_cli = resolve(dirs, {"emulator": "127.0.0.1:9777", "user": "alice"}, {"FIREBASE_DATABASE_EMULATOR_HOST": "x:1"})
    assert (from_cli.emulator, from_cli.user) == ("127.0.0.1:9777", "alice")


def test_firebase_mode_needs_an_https_url_and_an_existing_credentials_file(dirs, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    settings = resolve(dirs, {"database_url": "https://p.firebaseio.com", "credentials": str(key)})
    assert settings.mode == "firebase"
    assert settings.relay_url == "https://p.firebaseio.com"
    with pytest.raises(ConfigError, match="credentials"):
        resolve(dirs, {"database_url": "https://p.firebaseio.com", "credentials": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="database-url"):
        resolve(dirs, {"database_url": "p.firebaseio.com"})


@pytest.mark.parametrize(
    ("cli", "match"),
    [
        ({"user": "a/b"}, "user"),
        ({"user": ""}, "user"),
        ({"device_id": "has space"}, "device-id"),
        ({"label": ""}, "label"),
        ({"label": "x" * 65}, "label"),
        ({"emulator": "localhost"}, "HOST:PORT"),
        ({"emulator": "localhost:abc"}, "not a number"),
        ({"emulator": "localhost:70000"}, "between 1 and 65535"),
        ({"webrtc_addresses": "127.0.0.1,eth0"}, "'eth0' is not an IP address"),
        ({"webrtc_addresses": " , "}, "separated by commas"),
    ],
)
def test_bad_values_get_a_clear_error(dirs, cli, match):
    with pytest.raises(ConfigError, match=match):
        resolve(dirs, {"label": "l", **cli})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("user = [", "not valid TOML"),
        ('colour = "red"', "unknown key 'colour'"),
        ('webrtc = "yes"', "webrtc must be a bool"),
        ("user = 3", "user must be a str"),
    ],
)
def test_bad_config_file_is_named_in_the_error(dirs, text, match):
    dirs[0].write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve(dirs)


def test_parse_host_port():
    assert parse_host_port("127.0.0.1:9000") == ("127.0.0.1", 9000)
    with pytest.raises(ConfigError):
        parse_host_port("http://x:1")


def test_flags_on_the_main_parser_and_a_subcommand_do_not_overwrite_each_other(tmp_path, monkeypatch):
    import argparse

    from peerchat.config import add_settings_arguments, settings_from_args

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    sub = parser.add_subparsers(dest="command").add_parser("peers")
    add_settings_arguments(sub)
    config = tmp_path / "c.toml"
    config.write_text('label = "from-file"\n')
    args = parser.parse_args(["--user", "alice", "--config", str(config), "peers", "--no-webrtc"])
    settings = settings_from_args(args, env={})
    assert (settings.user, settings.label, settings.webrtc) == ("alice", "from-file", False)


def test_a_named_config_file_must_exist(tmp_path):
    import argparse

    from peerchat.config import add_settings_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    with pytest.raises(ConfigError, match="--config: .*missing.toml is not a file"):
        settings_from_args(parser.parse_args(["--config", str(tmp_path / "missing.toml")]), env={})


def test_the_relay_is_described_by_its_address_or_by_the_name_it_was_given():
    from peerchat.config import Settings

    assert Settings(emulator="127.0.0.1:9100").describe_relay() == "emulator 127.0.0.1:9100"
    assert Settings().describe_relay() == "embedded emulator 127.0.0.1:9000"
    assert Settings(emulator="127.0.0.1:9100", relay_name="home relay").describe_relay() == "home relay"


def test_webrtc_addresses_from_a_flag_or_the_file(dirs):
    assert resolve(dirs).webrtc_addresses is None
    assert resolve(dirs, {"webrtc_addresses": "127.0.0.1, ::1"}).webrtc_addresses == ("127.0.0.1", "::1")
    dirs[0].write_text('webrtc_addresses = "192.168.1.20"')
    assert resolve(dirs).webrtc_addresses == ("192.168.1.20",)


def test_addresses_and_the_direct_link_from_flags_or_the_file(dirs, tmp_path):
    import argparse

    from peerchat.backend import Backend
    from peerchat.config import add_settings_arguments, settings_from_args

    settings = resolve(dirs)
    assert (settings.addresses, settings.direct, settings.direct_timeout) == (None, True, None)
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    for flag in ("--addresses", "--webrtc-addresses"):  # the old name stays an alias
        args = parser.parse_args([flag, "127.0.0.1", "--no-direct", "--direct-timeout", "1.5",
                                  "--config", str(tmp_path / "none.toml"), "--device-id", "d1"])
        (tmp_path / "none.toml").write_text("")
        settings = settings_from_args(args, env={})
        assert (settings.addresses, settings.direct, settings.direct_timeout) == (("127.0.0.1",), False, 1.5)
        options = Backend(settings).options
        assert (options.addresses, options.direct, options.direct_timeout) == (("127.0.0.1",), False, 1.5)
    dirs[0].write_text('addresses = "10.0.0.2"\ndirect = false\ndirect_timeout = 2')
    settings = resolve(dirs)
    assert (settings.addresses, settings.direct, settings.direct_timeout) == (("10.0.0.2",), False, 2.0)
    for text, message in (('direct = "no"', "direct must be a bool"), ("direct_timeout = true", "must be a number"),
                          ("direct_timeout = 0", "above 0")):
        dirs[0].write_text(text)
        with pytest.raises(ConfigError, match=message):
            resolve(dirs)
# --- ICE servers --------------------------------------------------------------------------------------------------

def test_the_default_is_one_public_stun_server_and_none_turns_it_off(dirs):
    assert resolve(dirs).ice_servers == DEFAULT_ICE_SERVERS
    assert DEFAULT_ICE_SERVERS[0].startswith("stun:")
    assert resolve(dirs, {"ice_servers": ["none"]}).ice_servers == ()
    assert resolve(dirs, env={ICE_SERVERS_ENV: "none"}).ice_servers == ()
    dirs[0].write_text('ice_servers = "none"')
    assert resolve(dirs).ice_servers == ()


def test_ice_servers_from_flags_the_environment_or_the_file(dirs):
    turn = {"ice_servers": ["stun:192.0.2.1", "turn:turn.example.org:3479?transport=tcp"],
            "ice_username": "alice", "ice_credential": "secret"}
    settings = resolve(dirs, turn)
    assert settings.ice_servers == ("stun:192.0.2.1", "turn:turn.example.org:3479?transport=tcp")
    assert (settings.ice_username, settings.ice_credential) == ("alice", "secret")
    dirs[0].write_text('ice_servers = ["turns:t.example.org"]\nice_username = "u"\nice_credential = "p"\n')
    assert resolve(dirs).ice_servers == ("turns:t.example.org",)
    # The flag wins over the environment, which wins over the file.
    assert resolve(dirs, env={ICE_SERVERS_ENV: "stun:e.example.org"}).ice_servers == ("stun:e.example.org",)
    assert resolve(dirs, {"ice_servers": ["stun:f.example.org"]},
                   {ICE_SERVERS_ENV: "none"}).ice_servers == ("stun:f.example.org",)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["stun.example.org"], "not a STUN or TURN URL"),
        (["http://stun.example.org"], "not a STUN or TURN URL"),
        (["stun:stun.example.org:99999"], "between 1 and 65535"),
        (["stun:s.example.org?transport=udp"], "takes no"),
        (["turns:t.example.org?transport=udp"], "TCP"),
        (["stun:a.example.org", "stun:b.example.org"], "one STUN server"),
        (["none", "stun:a.example.org"], "cannot be combined"),
        (["turn:t.example.org"], "needs --ice-username and --ice-credential"),
    ],
)
def test_bad_ice_servers_are_refused_with_what_to_write(dirs, values, match):
    with pytest.raises(ConfigError, match=match):
        resolve(dirs, {"ice_servers": values})


def test_the_ice_flags_parse_repeated_and_reach_the_managers_options(dirs, tmp_path):
    import argparse

    from core import IceServer
    from peerchat.backend import Backend
    from peerchat.config import add_settings_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--ice-server", "stun:192.0.2.1:3478", "--ice-server", "turn:192.0.2.2",
                              "--ice-username", "u", "--ice-credential", "p", "--device-id", "d1"])
    settings = settings_from_args(args, env={})
    assert Backend(settings).options.ice_servers == (IceServer("stun:192.0.2.1:3478"),
                                                     IceServer("turn:192.0.2.2", "u", "p"))


def test_no_test_run_can_reach_the_default_public_stun_server(tmp_path):
    # The suite's conftest turns the default off for this process and every process a test starts. If it stopped
    # doing so, any test that runs the app or a command with WebRTC on would send STUN requests to the internet.
    import os
    import subprocess
    import sys

    from peerchat.backend import Backend
    from peerchat.config import Settings

    assert os.environ.get(ICE_SERVERS_ENV) == "none"
    missing = tmp_path / "no-config.toml"
    assert resolve_settings({}, config_file=missing, state_dir=tmp_path).ice_servers == ()
    assert Backend(Settings()).options.ice_servers == ()  # a Settings made directly names no server either
    child = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from peerchat.config import resolve_settings; "
         f"print(resolve_settings({{}}, config_file=Path({str(missing)!r}), state_dir=Path({str(tmp_path)!r}))"
         ".ice_servers)"],
        capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.strip() == "()"


def test_trust_settings_from_flags_and_file(dirs, tmp_path):
    settings = resolve(dirs)
    assert settings.ask == "new" and settings.require_verified is False
    assert settings.key_store_dir == settings.keys_dir / settings.device_id
    flags = resolve(dirs, {"ask": "always", "require_verified": True})
    assert flags.ask == "always" and flags.require_verified is True
    config = tmp_path / "trust.toml"
    config.write_text('ask = "unverified"\nrequire-verified = true\n')
    from_file = resolve_settings({}, env={}, config_file=config, state_dir=dirs[1])
    assert from_file.ask == "unverified" and from_file.require_verified is True
    with pytest.raises(ConfigError, match="ask"):
        resolve(dirs, {"ask": "sometimes"})


@pytest.mark.parametrize(("setting", "trust", "asked"), [
    ("new", "new", True), ("new", "trusted", False), ("new", "verified", False),
    ("unverified", "trusted", True), ("unverified", "verified", False),
    ("always", "verified", True), ("never", "new", False),
])
def test_which_sessions_the_app_asks_about(setting, trust, asked):
    from peerchat.app import should_ask

    assert should_ask(setting, trust) is asked


def test_devices_starting_at_once_on_one_state_directory_each_keep_their_id(tmp_path):
    """An app and headless commands may start together on one state directory: none fails to save its id, and no
    id is lost to another's write."""
    import threading

    labels = [f"device{i}" for i in range(16)]
    start = threading.Barrier(len(labels))
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(label: str) -> None:
        start.wait(timeout=10)
        try:
            for round_ in range(20):
                got[f"{label}-{round_}"] = device_id_for(f"{label}-{round_}", tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(label,)) for label in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert json.loads((tmp_path / "devices.json").read_text()) == got
    assert not list(tmp_path.glob("*.tmp"))
