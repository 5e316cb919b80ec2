"""Where the pseudonymization keys come from: the configuration, or Orthanc's database."""
from __future__ import annotations

import os
import time
from typing import Callable

from .config import PluginConfig
from .errors import BadRequest
from .pseudonyms import Pseudonymizer, project_key

#: The global property holding a generated master key (plugins use ids from 1024 up).
KEY_PROPERTY = 9731
_KEY_PREFIX = "consistent-anonymization-key-v1:"


#: How long a node that has just written a generated key waits before reading back the key that
#: won. Every node that found no key did so before the first write and writes right after, so
#: after this pause all of them read the same, last written, key.
SETTLE_SECONDS = 1.0


class KeyStore:
    """Gives the pseudonymizer of a project.

    Without a configured key, a master key is generated once and written to Orthanc's database,
    so every Orthanc on that database uses it. The database has no compare-and-set, so nodes that
    find no key at the same moment all write one, wait SETTLE_SECONDS, and use what is stored
    then: the last write, the same for all of them. The key is read from the database at every
    call, never cached.
    """

    def __init__(self, config: PluginConfig, get_property: Callable[[int, str], str],
                 set_property: Callable[[int, str], None], sleep: Callable[[float], None] = time.sleep) -> None:
        self._config = config
        self._get = get_property
        self._set = set_property
        self._sleep = sleep

    def _stored_master_key(self) -> bytes | None:
        value = self._get(KEY_PROPERTY, "") or ""
        return bytes.fromhex(value[len(_KEY_PREFIX):]) if value.startswith(_KEY_PREFIX) else None

    def master_key(self) -> bytes:
        if self._config.key is not None:
            return self._config.key
        key = self._stored_master_key()
        if key is None:
            self._set(KEY_PROPERTY, _KEY_PREFIX + os.urandom(32).hex())
            self._sleep(SETTLE_SECONDS)
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
