"""``peerchat devices``: the devices this one knows and trusts.

::

    peerchat devices                      ID<TAB>LABEL<TAB>TRUST<TAB>FINGERPRINT<TAB>online|offline
    peerchat devices verify DEVICE [--yes]   show the comparison code; mark DEVICE verified when it matches
    peerchat devices forget DEVICE        forget DEVICE's key (its next session is "new" again)

TRUST is ``verified`` (a person compared the code), ``trusted`` (remembered from an earlier session), ``new`` or
``key-changed`` (it shows another key than the remembered one: sessions with it are refused until it is forgotten).
``forget`` works offline; the others read presence from the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from core import FileKeyStore, KeyStore, MemoryKeyStore, comparison_code, fingerprint

from .backend import Backend
from .config import Settings
from .commands import _say
from .models import escape_line


def key_store(settings: Settings) -> KeyStore:
    folder = settings.key_store_dir
    return FileKeyStore(folder) if folder is not None else MemoryKeyStore()


async def _known_devices(manager: Any, wait: float) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + wait
    while not (devices := await manager.get_known_peers()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return devices


async def list_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with Backend(settings, watch_interval=0, short_lived=True) as manager:
        devices = await _known_devices(manager, args.wait)
        keys = manager.keys
        rows = {}
        for status in devices:
            trust = manager.trust_of(status.info.id, status.key)
            known = keys.get(status.info.id)
            key = status.key or (known.key if known else None)
            rows[status.info.id] = (status.info.label, trust, fingerprint(key) if key else "-",
                                    "online" if status.online else "offline")
        for device_id, known in keys.known().items():
            if device_id not in rows:
                rows[device_id] = (known.label or device_id, "verified" if known.verified else "trusted",
                                   known.fingerprint, "offline")
        _say(err, f"this device: {settings.label} ({settings.device_id}), key {manager.fingerprint}")
    for device_id, (label, trust, fp, online) in sorted(rows.items(), key=lambda r: (r[1][0].lower(), r[0])):
        _say(out, f"{device_id}\t{escape_line(label)}\t{trust}\t{fp}\t{online}")
    return 0


def _find(devices: list[Any], keys: KeyStore, name: str) -> tuple[str, str]:
    """(id, label) of the device called ``name`` (id, or else label) among presence and the key store."""
    from .commands import CommandError, EXIT_NOT_FOUND

    found = {s.info.id: s.info.label for s in devices}
    found.update({i: k.label or i for i, k in keys.known().items() if i not in found})
    if name in found:
        return name, found[name]
    matches = [(i, label) for i, label in found.items() if label.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CommandError(f"several devices are called {name!r} ({', '.join(i for i, _ in matches)}); use the id",
                           EXIT_NOT_FOUND)
    raise CommandError(f"no device called {name!r} is known", EXIT_NOT_FOUND)


async def verify_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .commands import CommandError, EXIT_FAILED

    async with Backend(settings, watch_interval=0, short_lived=True) as manager:
        devices = await _known_devices(manager, 2.0)
        device_id, label = _find(devices, manager.keys, args.device)
        published = next((s.key for s in devices if s.info.id == device_id), None)
        known = manager.keys.get(device_id)
        if known is not None and published is not None and known.key != published:
            raise CommandError(f"the key of {label} changed (remembered {known.fingerprint}, now "
                               f"{fingerprint(published)}); check on {label}, then `peerchat devices forget "
                               f"{device_id}` before verifying it", EXIT_FAILED)
        key = known.key if known is not None else published
        if key is None:
            raise CommandError(f"{label} has not published a key yet; start peerchat on it first", EXIT_FAILED)
        _say(out, f"this device  {settings.label}: {manager.fingerprint}")
        _say(out, f"other device {label}: {fingerprint(key)}")
        _say(out, f"comparison code: {comparison_code(manager.public_key, key)}")
        _say(out, f"On {label}, run `peerchat devices verify {settings.label}` (or verify in the app): it must "
                  "show the same code.")
        if not args.yes:
            err.write("Do both devices show the same code? [y/N] ")
            err.flush()
            answer = await asyncio.to_thread(sys.stdin.readline)
            if answer.strip().lower() not in ("y", "yes"):
                _say(err, f"{label} was not marked verified")
                return EXIT_FAILED
        manager.verify_device(device_id, key, label)
    _say(err, f"{label} is verified")
    return 0


async def forget_main(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    keys = key_store(settings)
    device_id, label = _find([], keys, args.device)
    keys.forget(device_id)
    _say(err, f"forgot the key of {label} ({device_id}); its next session counts as a new device")
    return 0
