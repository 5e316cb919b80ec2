"""Files the plugin writes whole (a generated key, the compacted audit log): written to a draft,
synced, then put in place atomically, so a reader or a crash never sees half a file; readable by
Orthanc's user only (mode 0600)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable


def _synced_draft(path: Path, parts: Iterable[str]) -> Path:
    """A new file beside `path` holding `parts`, on disk."""
    draft = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.writelines(parts)
        file.flush()
        os.fsync(file.fileno())
    return draft


def replace_atomically(path: Path, parts: Iterable[str]) -> None:
    """Write `path` over what it held: readers see the old file or the new one, whole."""
    os.replace(_synced_draft(path, parts), path)
    sync_folder(path.parent)


def create_exclusively(path: Path, text: str) -> None:
    """Write `path` unless it exists, atomically: of several writers racing (processes, nodes
    sharing the folder), the first one's text stays and the others' are dropped."""
    draft = _synced_draft(path, [text])
    try:
        os.link(draft, path)  # fails if another writer's file is already there
        sync_folder(path.parent)
    except FileExistsError:
        pass  # another writer's file came first: it stays
    finally:
        draft.unlink()


def sync_folder(folder: Path) -> None:
    """Makes a created or replaced file's name durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
