"""Tests for peerchat.config: precedence, validation, the TOML file and stable device ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerchat.config import ConfigError, device_id_for, parse_host_port, resolve_settings


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
