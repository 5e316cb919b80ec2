"""Where the pseudonymization keys come from: the configuration, or a key generated once.

A generated key must be created atomically: two calls, or two Orthanc nodes, that find no key at
the same moment must end up with the same one, or their pseudonyms split one study in two.
- With Orthanc's built-in SQLite index, one Orthanc owns the database: the key is a global
  property, created under a lock of this process.
- With a database plugin (PostgreSQL...), Orthanc keeps a plugin's global properties per server
  (its DatabaseServerIdentifier), so nodes would each get their own: the key is a file in the
  storage folder the nodes share, created with an atomic link (first writer wins).
- With a storage plugin as well, there is no shared place: the plugin refuses to generate a
  key, and asks for `Key` or `KeyFile`.
"""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Callable

from .config import PluginConfig
from .errors import BadRequest, PluginError
from .pseudonyms import Pseudonymizer, project_key

#: The global property holding a generated master key (plugins use ids from 1024 up).
KEY_PROPERTY = 9731
#: The file holding a generated master key in a shared storage folder.
KEY_FILE_NAME = ".consistent-anonymization.key"
_KEY_PREFIX = "consistent-anonymization-key-v1:"


def _parse(text: str | None) -> bytes | None:
    return bytes.fromhex(text[len(_KEY_PREFIX):].strip()) if text and text.startswith(_KEY_PREFIX) else None


def _new_key_text() -> str:
    return _KEY_PREFIX + os.urandom(32).hex()


class PropertyKey:
    """A generated key in a global property of a database only this Orthanc uses."""

    def __init__(self, get_property: Callable[[int, str], str], set_property: Callable[[int, str], None]) -> None:
        self._get = get_property
        self._set = set_property
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            key = _parse(self._get(KEY_PROPERTY, ""))
            if key is None:
                self._set(KEY_PROPERTY, _new_key_text())
                key = _parse(self._get(KEY_PROPERTY, ""))
        if key is None:
            raise PluginError("The pseudonymization key could not be stored in Orthanc's database")
        return key


class SharedFileKey:
    """A generated key in a file of a folder shared by every node (created by an atomic link)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEY_FILE_NAME

    def _read(self) -> bytes | None:
        try:
            return _parse(self.path.read_text())
        except FileNotFoundError:
            return None

    def __call__(self) -> bytes:
        key = self._read()
        if key is None:
            draft = self.path.with_name(f"{KEY_FILE_NAME}.{uuid.uuid4().hex}.tmp")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w") as file:
                    file.write(_new_key_text())
                    file.flush()
                    os.fsync(file.fileno())
                try:
                    os.link(draft, self.path)  # fails if another node's key is already there
                except FileExistsError:
                    pass
            finally:
                draft.unlink()
            key = self._read()
        if key is None:
            raise PluginError(f"The pseudonymization key file {KEY_FILE_NAME} is not readable")
        return key


def no_generated_key() -> bytes:
    raise PluginError("Orthanc keeps both its index and its storage in plugins: there is no place the "
                      "nodes share to keep a generated key. Set ConsistentAnonymization.Key or KeyFile.")


class KeyStore:
    """Gives the pseudonymizer of a project."""

    def __init__(self, config: PluginConfig, generated_key: Callable[[], bytes]) -> None:
        self._config = config
        self._generated_key = generated_key

    def master_key(self) -> bytes:
        return self._config.key if self._config.key is not None else self._generated_key()

    def project_name(self, requested: str | None) -> str:
        project = requested if requested is not None else self._config.default_project
        if project not in self._config.project_keys:
            raise BadRequest(f'Unknown project "{project}": declare it under ConsistentAnonymization.Projects')
        return project

    def pseudonymizer(self, requested_project: str | None) -> Pseudonymizer:
        """Keyed pseudonyms for the project, or fresh ones for this call alone if so configured."""
        project = self.project_name(requested_project)
        if self._config.fresh_pseudonyms_per_call:
            return Pseudonymizer(os.urandom(32), self._config.uid_root)
        key = self._config.project_keys[project]
        if key is None:
            key = project_key(self.master_key(), project)
        return Pseudonymizer(key, self._config.uid_root)

    @property
    def fresh_per_call(self) -> bool:
        return self._config.fresh_pseudonyms_per_call
