"""Where the pseudonymization keys come from, and how a changed key is noticed.

A generated key lives in a file of mode 0600, never in Orthanc's index (a copy of the index would
be enough to recompute every pseudonym): the storage folder, which every node of a shared
database uses too (Orthanc keeps a database plugin's global properties per server, by its
DatabaseServerIdentifier, so nodes cannot share one there); with a storage plugin and the
built-in SQLite index, the index folder; with both in plugins there is no shared folder, and a
`Key` or `KeyFile` is required. The file is created atomically (a draft linked into place, first
writer wins), so calls or nodes racing to create it all end up with the same key. A key an older
version kept in a SQLite global property moves to the file, and the property is emptied.

Each project records a keyed check value of its key (never the key) at its first use. A running
key that does not match it (a changed Key or KeyFile, a lost key file, a node with another key)
would silently split every patient in two: anonymization is refused until the key is restored or
the project is listed in `AcceptNewKey`. The check values live where the nodes share them: the
storage folder with a database plugin, else Orthanc's database (a global property).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Callable, Protocol

from .config import PluginConfig
from .project_settings import ProjectSettings
from ..errors import BadRequest, PluginError
from ..files import create_exclusively, replace_atomically
from ..lru import LruCache
from .pseudonyms import Pseudonymizer, project_key

#: The global property in which versions before the key file kept a generated key (SQLite index).
KEY_PROPERTY = 9731
#: The global property holding the projects' key check values (plugins use ids from 1024 up).
CHECKS_PROPERTY = 9733
#: The file holding a generated master key.
KEY_FILE_NAME = ".consistent-anonymization.key"
#: The files holding the projects' key check values in a shared folder (one per project).
CHECK_FILE_PREFIX = ".consistent-anonymization-check."
_KEY_PREFIX = "consistent-anonymization-key-v1:"
#: Pseudonymizers kept, one per project and key (a few hundred bytes each).
PSEUDONYMIZERS_KEPT = 64


class KeyMismatch(PluginError):
    """The running key is not the one a project's pseudonyms were made with: nothing is done."""


def _parse(text: str | None) -> bytes | None:
    return bytes.fromhex(text[len(_KEY_PREFIX):].strip()) if text and text.startswith(_KEY_PREFIX) else None


def _key_text(key: bytes) -> str:
    return _KEY_PREFIX + key.hex()


class SharedFileKey:
    """A generated key in a file of a folder (created by an atomic link). Every call derives its
    pseudonyms from it: the file is read once, then read again only when its status (inode,
    size, times) changes: a key replaced, edited or removed is seen at the next call as before."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / KEY_FILE_NAME
        self._read_as: tuple[tuple[int, ...], bytes | None] | None = None  # (status, key) last read

    def _read(self) -> bytes | None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:  # no key generated yet
            return None
        status = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
        known = self._read_as
        if known is not None and known[0] == status:
            return known[1]
        try:
            key = _parse(self.path.read_text())
        except FileNotFoundError:  # removed since
            return None
        self._read_as = (status, key)  # a change after the status was taken changes it again
        return key

    def adopt(self, key: bytes) -> bytes:
        """Keep `key` in the file unless one is there already; answers the key the file holds."""
        if self._read() is None:
            create_exclusively(self.path, _key_text(key))
        found = self._read()
        if found is None:
            raise PluginError(f"The pseudonymization key file {KEY_FILE_NAME} is not readable")
        return found

    def __call__(self) -> bytes:
        key = self._read()
        return key if key is not None else self.adopt(os.urandom(32))


def migrate_property_key(get_property: Callable[[int, str], str], set_property: Callable[[int, str], None],
                         key_file: SharedFileKey) -> None:
    """Move a key an older version generated into a SQLite global property to the key file, then
    empty the property: the site keeps its pseudonyms, and the index holds no key any more."""
    old = _parse(get_property(KEY_PROPERTY, ""))
    if old is None:
        return
    if key_file.adopt(old) != old:
        raise PluginError(f"Two generated pseudonymization keys were found, one in Orthanc's database and "
                          f"another in {key_file.path}: keep the one your pseudonyms were made with "
                          f"(the database's, unless the file's was used since) and remove the other")
    set_property(KEY_PROPERTY, "")


def no_generated_key() -> bytes:
    raise PluginError("Orthanc keeps both its index and its storage in plugins: there is no place the "
                      "nodes share to keep a generated key. Set ConsistentAnonymization.Key or KeyFile.")


class KeyChecks(Protocol):
    """Where each project's key check value is recorded."""

    def record(self, project: str, check: str, replace: bool = False) -> str:
        """Record `check` for the project if none is (or over it, with `replace`); answers the
        value now recorded."""


class PropertyChecks:
    """Check values in a global property (one JSON object), for a database only this Orthanc uses
    (SQLite), or per server where nothing is shared (index and storage in plugins)."""

    def __init__(self, get_property: Callable[[int, str], str], set_property: Callable[[int, str], None]) -> None:
        self._get = get_property
        self._set = set_property
        self._lock = threading.Lock()

    def record(self, project: str, check: str, replace: bool = False) -> str:
        with self._lock:
            recorded = json.loads(self._get(CHECKS_PROPERTY, "") or "{}")
            if replace or project not in recorded:
                recorded[project] = check
                self._set(CHECKS_PROPERTY, json.dumps(recorded, sort_keys=True))
            return recorded[project]


class FileChecks:
    """Check values in files of the folder the nodes share, one per project (created atomically,
    first writer wins, so two nodes with different keys cannot both record theirs)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _path(self, project: str) -> Path:
        return self._folder / (CHECK_FILE_PREFIX + hashlib.sha256(project.encode("utf-8")).hexdigest()[:32])

    def record(self, project: str, check: str, replace: bool = False) -> str:
        path = self._path(project)
        text = json.dumps({"Project": project, "KeyCheck": check})
        if replace:
            replace_atomically(path, [text])
        elif not path.exists():
            create_exclusively(path, text)
        return json.loads(path.read_text())["KeyCheck"]


class KeyStore:
    """Gives the pseudonymizer of a project, once its key is known to be the one it always had."""

    def __init__(self, config: PluginConfig, generated_key: Callable[[], bytes],
                 checks: Callable[[], KeyChecks], log_warning: Callable[[str], None] = lambda _: None) -> None:
        self._config = config
        self._generated_key = generated_key
        self._checks = checks
        self._log_warning = log_warning
        self._verified: set[tuple[str, str]] = set()
        self._pseudonymizers: LruCache[tuple[str, bytes], Pseudonymizer] = LruCache(PSEUDONYMIZERS_KEPT)

    def master_key(self) -> bytes:
        return self._config.key if self._config.key is not None else self._generated_key()

    def project_name(self, requested: str | None) -> str:
        project = requested if requested is not None else self._config.default_project
        if project not in self._config.project_keys:
            raise BadRequest(f'Unknown project "{project}": declare it under ConsistentAnonymization.Projects')
        return project

    def settings(self, requested_project: str | None) -> ProjectSettings:
        """The project's settings beyond its key: dates, subjects, trial attributes, identity."""
        return self._config.project_settings[self.project_name(requested_project)]

    def pseudonymizer(self, requested_project: str | None) -> Pseudonymizer:
        """Keyed pseudonyms for the project, or fresh ones for this call alone if so configured."""
        project = self.project_name(requested_project)
        if self._config.fresh_pseudonyms_per_call:
            return Pseudonymizer(os.urandom(32), self._config.uid_root)
        configured = self._config.project_keys[project]
        master = self.master_key() if configured is None else configured
        pseudonyms = self._pseudonymizers.get((project, master))
        if pseudonyms is None:  # once per project and key: the same key always makes the same one
            pseudonyms = Pseudonymizer(project_key(master, project) if configured is None else configured,
                                       self._config.uid_root)
            self._pseudonymizers.put((project, master), pseudonyms)
        self._check_key(project, pseudonyms.key_check())
        return pseudonyms

    def _check_key(self, project: str, check: str) -> None:
        """Refuse a key other than the one the project recorded at its first use (once per process
        and key: the store is read again only when the key changes)."""
        if (project, check) in self._verified:
            return
        if self._checks().record(project, check) != check:
            if project not in self._config.accept_new_key:
                raise KeyMismatch(
                    f'Project "{project}": the pseudonymization key in use is not the one this project\'s '
                    f"pseudonyms were made with (Key or KeyFile changed, the generated key file lost, or "
                    f"another node with another key), so its results would not link with the earlier ones: "
                    f"nothing was done. Restore that key, or list the project in "
                    f"ConsistentAnonymization.AcceptNewKey to start its pseudonyms afresh under this key")
            self._checks().record(project, check, replace=True)
            self._log_warning(f'Consistent anonymization: project "{project}" now records the new key '
                              f"(AcceptNewKey): its earlier results no longer link with new ones")
        self._verified.add((project, check))

    @property
    def fresh_per_call(self) -> bool:
        return self._config.fresh_pseudonyms_per_call
