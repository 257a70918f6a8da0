"""An online backup of the SQLite database (the SQLite Online Backup API, through Python's
``sqlite3.Connection.backup``): a consistent copy taken while the server runs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# How long the backup waits for a writer's lock before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 10_000


class BackupRefused(Exception):
    """The backup was not taken; the message says why (an existing target, no database ...)."""


def backup_database(source: str, target: str, *, force: bool = False) -> int:
    """Copy the database at ``source`` to ``target`` and return the copy's size in bytes.

    The copy is made in one step of the backup API, inside one read transaction: under WAL the
    server's writers go on meanwhile, and the copy is the database as of one instant (every
    committed transaction before it, none after). It is written beside ``target`` and renamed
    into place only once complete and checked, so ``target`` is never a half-written file. An
    existing ``target`` is refused unless ``force``."""
    source_path, target_path = Path(source), Path(target)
    if not source_path.is_file():
        raise BackupRefused(f"there is no SQLite database at {source}")
    if target_path.exists() and target_path.resolve() == source_path.resolve():
        raise BackupRefused("the backup cannot overwrite the database itself")
    if target_path.is_dir():
        raise BackupRefused(f"{target} is a directory: name the file to write")
    if target_path.exists() and not force:
        raise BackupRefused(f"{target} exists: name a new file, or pass --force to overwrite it")
    if not target_path.parent.is_dir():
        raise BackupRefused(f"there is no directory {target_path.parent}")
    partial = target_path.with_name(f".{target_path.name}.partial-{os.getpid()}")
    try:
        _copy(source_path, partial)
        os.replace(partial, target_path)
    except sqlite3.Error as exc:
        raise BackupRefused(f"the backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target_path.stat().st_size


def _copy(source: Path, partial: Path) -> None:
    partial.unlink(missing_ok=True)
    # The copy holds what the database holds (hashes, sealed upstream tokens): owner only.
    partial.touch(mode=0o600)
    origin = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)
    copy = sqlite3.connect(partial)
    try:
        # pages=-1 (the default): every page in one step, hence one consistent snapshot.
        origin.backup(copy)
        # A backup that is a rollback-journal database needs no -wal file beside it to be whole.
        copy.execute("PRAGMA journal_mode = DELETE")
        (result,) = copy.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its check: {result}")
    finally:
        copy.close()
        origin.close()
