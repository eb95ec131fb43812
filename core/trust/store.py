"""Key stores: this device's identity key and what it remembers of other devices' keys.

:class:`KeyStore` is the interface the manager uses; :class:`MemoryKeyStore` (the default: a fresh identity per
process, nothing remembered across runs) and :class:`FileKeyStore` (a directory only its owner can read: the app
and the command line use one in their data directory) implement it.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import KeyStoreError
from ..protocol.identity import DeviceKey, KnownDevice, Trust, parse_key_text, trust_of
from ..protocol.records import valid_id


class KeyStore(abc.ABC):
    """This device's identity and the devices it knows. Methods are quick and synchronous (small local state)."""

    @abc.abstractmethod
    def identity(self) -> DeviceKey:
        """This device's key pair, made on first use and the same ever after."""

    @abc.abstractmethod
    def known(self) -> dict[str, KnownDevice]:
        """Every remembered device, by id."""

    @abc.abstractmethod
    def _save(self, devices: dict[str, KnownDevice]) -> None: ...

    def get(self, device_id: str) -> KnownDevice | None:
        return self.known().get(device_id)

    def trust(self, device_id: str, key: str | None) -> Trust:
        """How far the device ``device_id`` presenting ``key`` is trusted."""
        return trust_of(self.get(device_id), key)

    def remember(self, device_id: str, key: str, label: str = "") -> KnownDevice:
        """Trust ``key`` for ``device_id`` from now on (trust on first use). A device already remembered with the
        same key keeps its verification; one remembered with another key is NOT replaced (forget it first).

        Raises:
            ValueError: a malformed id or key, or another key is remembered for this device.
        """
        _check(device_id, key)
        devices = self.known()
        old = devices.get(device_id)
        if old is not None and old.key != key:
            raise ValueError(f"another key is remembered for {device_id!r}: forget it first")
        entry = KnownDevice(device_id, key, old.verified if old else False, label or (old.label if old else ""))
        if entry != old:
            devices[device_id] = entry
            self._save(devices)
        return entry

    def verify(self, device_id: str, key: str, label: str = "") -> KnownDevice:
        """Mark ``key`` verified for ``device_id`` (a person compared the codes); remembers it if it was new.

        Raises:
            ValueError: a malformed id or key, or another key is remembered for this device (forget it first).
        """
        self.remember(device_id, key, label)
        devices = self.known()
        entry = KnownDevice(device_id, key, True, devices[device_id].label)
        devices[device_id] = entry
        self._save(devices)
        return entry

    def forget(self, device_id: str) -> bool:
        """Forget the device's key (its next session starts as "new"); False if none was remembered."""
        devices = self.known()
        if devices.pop(device_id, None) is None:
            return False
        self._save(devices)
        return True


def _check(device_id: str, key: str) -> None:
    if not valid_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    parse_key_text(key)


class MemoryKeyStore(KeyStore):
    """A key store in memory: a new identity for every store, nothing kept after the process ends."""

    def __init__(self, identity: DeviceKey | None = None) -> None:
        self._identity = identity or DeviceKey.generate()
        self._devices: dict[str, KnownDevice] = {}

    def identity(self) -> DeviceKey:
        return self._identity

    def known(self) -> dict[str, KnownDevice]:
        return dict(self._devices)

    def _save(self, devices: dict[str, KnownDevice]) -> None:
        self._devices = dict(devices)


class FileKeyStore(KeyStore):
    """A key store in ``directory`` (created with owner-only permissions): ``identity.key`` (the private key,
    base64, mode 0600) and ``devices.json`` (the remembered devices). Writes replace files atomically; a file
    that cannot be read raises :class:`~core.errors.KeyStoreError` and is never overwritten."""

    IDENTITY = "identity.key"
    DEVICES = "devices.json"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._identity: DeviceKey | None = None
        self._lock = threading.Lock()

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise KeyStoreError(f"Cannot create the key store folder {self.directory}: {exc.strerror or exc}.") from exc

    def _write(self, name: str, text: str) -> None:
        self._ensure_dir()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, self.directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise KeyStoreError(f"Cannot write {self.directory / name}: {exc.strerror or exc}.") from exc

    def _read(self, name: str) -> str | None:
        try:
            return (self.directory / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"Cannot read {self.directory / name}: {exc}.") from exc

    def identity(self) -> DeviceKey:
        with self._lock:
            if self._identity is None:
                path = self.directory / self.IDENTITY
                text = self._read(self.IDENTITY)
                if text is None:
                    key = DeviceKey.generate()
                    self._write(self.IDENTITY, base64.b64encode(key.private_bytes()).decode("ascii") + "\n")
                else:
                    try:
                        key = DeviceKey.from_private_bytes(base64.b64decode(text.strip(), validate=True))
                    except (binascii.Error, ValueError) as exc:
                        raise KeyStoreError(
                            f"{path} is not a device key ({exc}). Restore it from a backup, or move it away to make "
                            "a new identity (your other devices will then see this one's key change)."
                        ) from None
                self._identity = key
            return self._identity

    def known(self) -> dict[str, KnownDevice]:
        text = self._read(self.DEVICES)
        if text is None:
            return {}
        path = self.directory / self.DEVICES
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            devices: dict[str, KnownDevice] = {}
            for device_id, entry in raw.items():
                if not isinstance(entry, dict):
                    raise ValueError(f"entry {device_id!r} is not an object")
                _check(device_id, entry.get("key"))
                devices[device_id] = KnownDevice(
                    device_id, entry["key"], bool(entry.get("verified", False)), str(entry.get("label", ""))
                )
        except ValueError as exc:
            raise KeyStoreError(f"{path} is damaged ({exc}). Fix or remove it; removing it forgets every device.") from None
        return devices

    def _save(self, devices: dict[str, KnownDevice]) -> None:
        data: dict[str, Any] = {
            d.device_id: {"key": d.key, "verified": d.verified, "label": d.label} for d in devices.values()
        }
        self._write(self.DEVICES, json.dumps(data, indent=2, sort_keys=True) + "\n")
