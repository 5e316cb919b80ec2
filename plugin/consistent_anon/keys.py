"""Where the pseudonymization keys come from: the configuration, or Orthanc's database."""
from __future__ import annotations

import os
from typing import Callable

from .config import PluginConfig
from .errors import BadRequest
from .pseudonyms import Pseudonymizer, project_key

#: The global property holding a generated master key (plugins use ids from 1024 up).
KEY_PROPERTY = 9731
_KEY_PREFIX = "consistent-anonymization-key-v1:"


class KeyStore:
    """Gives the pseudonymizer of a project.

    Without a configured key, a master key is generated once and written to Orthanc's database,
    so every Orthanc on that database uses it. It is read back at every call, so nodes that raced
    to create it at first start converge on the one that was written last.
    """

    def __init__(self, config: PluginConfig, get_property: Callable[[int, str], str],
                 set_property: Callable[[int, str], None]) -> None:
        self._config = config
        self._get = get_property
        self._set = set_property

    def _stored_master_key(self) -> bytes | None:
        value = self._get(KEY_PROPERTY, "") or ""
        return bytes.fromhex(value[len(_KEY_PREFIX):]) if value.startswith(_KEY_PREFIX) else None

    def ensure_master_key(self) -> None:
        """Create the database key if this site has none (at plugin start)."""
        if self._config.key is None and self._stored_master_key() is None:
            self._set(KEY_PROPERTY, _KEY_PREFIX + os.urandom(32).hex())

    def master_key(self) -> bytes:
        if self._config.key is not None:
            return self._config.key
        key = self._stored_master_key()
        if key is None:
            self.ensure_master_key()
            key = self._stored_master_key()
        if key is None:
            raise RuntimeError("the pseudonymization key could not be stored in Orthanc's database")
        return key

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
