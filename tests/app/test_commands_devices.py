"""`peerchat devices`: list with trust and fingerprints, verify with the comparison code, forget."""

from __future__ import annotations

import argparse
import io

from app_helpers import settings_for
from core import FileKeyStore, comparison_code
from peerchat.commands import register
from peerchat.trust_commands import forget_main, list_main, verify_main


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="peerchat")
    register(root.add_subparsers(dest="command"))
    return root


async def test_list_verify_and_forget(make_manager, emulator, namespace, tmp_path):
    desktop = await make_manager("desktop")
    settings = settings_for("laptop", tmp_path, emulator=emulator.host_port, namespace=namespace, webrtc=False,
                            keys_dir=tmp_path / "keys")
    out, err = io.StringIO(), io.StringIO()
    assert await list_main(settings, parser().parse_args(["devices", "--wait", "10"]), out, err) == 0
    assert out.getvalue() == f"desktop-id\tdesktop\tnew\t{desktop.fingerprint}\tonline\n"
    own = FileKeyStore(settings.key_store_dir).identity()
    assert own.fingerprint in err.getvalue()

    out = io.StringIO()
    args = parser().parse_args(["devices", "verify", "desktop", "--yes"])
    assert await verify_main(settings, args, out, io.StringIO()) == 0
    assert f"comparison code: {comparison_code(own.public, desktop.public_key)}" in out.getvalue()
    assert desktop.comparison_code(own.public_text) in out.getvalue()  # the desktop shows the same code
    assert FileKeyStore(settings.key_store_dir).trust("desktop-id", desktop.public_key) == "verified"

    out = io.StringIO()
    assert await list_main(settings, parser().parse_args(["devices"]), out, io.StringIO()) == 0
    assert "\tverified\t" in out.getvalue()

    err = io.StringIO()
    assert await forget_main(settings, parser().parse_args(["devices", "forget", "desktop"]), io.StringIO(), err) == 0
    assert "forgot the key of desktop" in err.getvalue()
    assert FileKeyStore(settings.key_store_dir).get("desktop-id") is None
