"""One way to open the project's SQLite files: the controller's state, the carbon service's
subscribers and the accounting ledger.

Each is opened in autocommit mode (changes that span statements use :func:`transaction`), in
WAL mode so readers never block the writer, with a busy timeout and foreign keys on. Its schema
is applied and its version (SQLite's ``user_version``) checked in one transaction: a file from
a newer carbonscaler is refused with a message that says so, and an older one is brought up to
date by the store's migrations, in order.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["open_database", "open_read_only", "transaction"]


def open_database(
    path: str | os.PathLike[str],
    *,
    schema: str,
    version: int,
    error: type[Exception],
    what: str,
    durable: bool = False,
    migrations: Mapping[int, str] | None = None,
) -> sqlite3.Connection:
    """Open (creating if missing) the SQLite file at ``path`` with ``schema`` at ``version``.

    Args:
        path: the file; its folder must exist.
        schema: ``CREATE ... IF NOT EXISTS`` statements for the current version.
        version: the schema version this carbonscaler writes (1 for the first).
        error: the store's exception type, raised with the file's name in the message.
        what: what the file is, for messages ("ledger", "state database"...).
        durable: fsync every commit (``synchronous=FULL``), for records that must survive a
            power cut; otherwise ``NORMAL`` (durable across process crashes).
        migrations: statements taking a file from version ``v - 1`` to ``v``, by ``v``.

    Raises:
        error: if the folder is missing, the file is not a usable database, or it was written
            by a newer version.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise error(f"{path}: folder {path.parent} does not exist")
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot open as a SQLite {what} ({exc})") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        with transaction(db):
            found = int(db.execute("PRAGMA user_version").fetchone()[0])
            if found > version:
                raise error(
                    f"{path} has {what} schema {found}, newer than this carbonscaler's "
                    f"({version}); upgrade carbonscaler or use another file"
                )
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)
            # Version 0 is a file from before versions were kept: its tables are version 1's.
            for step in range(max(found, 1) + 1, version + 1):
                for statement in (migrations or {}).get(step, "").split(";"):
                    if statement.strip():
                        db.execute(statement)
            if found != version:
                # PRAGMA takes no parameters; the value is our own integer.
                db.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise error(f"{path}: cannot use as a SQLite {what} ({exc})") from exc
    except BaseException:
        db.close()
        raise
    return db


def open_read_only(
    path: str | os.PathLike[str], *, version: int, error: type[Exception], what: str
) -> sqlite3.Connection:
    """Open an existing SQLite file written by :func:`open_database`, for reading only.

    Nothing is written beside it: while a writer has the file open (its ``-wal`` and ``-shm``
    files exist) the reader shares them; otherwise no writer is connected, every change is in
    the main file, and it is opened as immutable, which creates no ``-wal``/``-shm`` files
    that a read-only connection could never remove. Open, read, close: a reader held open
    across a writer's arrival would not see its changes.

    Args:
        path: the file.
        version: the newest schema version this carbonscaler reads.
        error: the store's exception type, raised with the file's name in the message.
        what: what the file is, for messages.

    Raises:
        error: if the file is missing, not a usable database, or written by a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no {what} here")
    shared = all(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    uri = path.resolve().as_uri() + ("?mode=ro" if shared else "?mode=ro&immutable=1")
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot open as a SQLite {what} ({exc})") from exc
    try:
        db.execute("PRAGMA busy_timeout=5000")
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        db.close()
        raise error(f"{path}: cannot use as a SQLite {what} ({exc})") from exc
    if found > version:
        db.close()
        raise error(
            f"{path} has {what} schema {found}, newer than this carbonscaler's ({version}); "
            "upgrade carbonscaler to read it"
        )
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE``): committed at the end, rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
