"""The carbon service's SQLite store: subscribers and the replay position.

Every statement is parameterised: request data never becomes SQL text, so an ``app_name``
such as ``x'); DROP TABLE subscribers;--`` is stored as the text it is. WAL journaling keeps
reads from blocking the writer and a crash from leaving a half-written row; the schema is
created when missing, and a reference ``registration`` table found in the same file is
imported once, so an existing reference database keeps its subscribers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carbonscaler._sqlite import open_database, transaction

__all__ = ["PushOutcome", "StoreError", "Subscriber", "SubscriberStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_name TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    key_sha256 TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    failures INTEGER NOT NULL DEFAULT 0,
    pushes_ok INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TEXT NOT NULL,
    last_success_at TEXT,
    last_attempt_at TEXT
);
CREATE TABLE IF NOT EXISTS service_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "id, app_name, address, active, failures, pushes_ok, last_error, created_at,"
    " last_success_at, last_attempt_at"
)


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message names the file."""


@dataclass(frozen=True)
class Subscriber:
    """A registered push target."""

    id: int
    app_name: str
    address: str
    active: bool
    """False once ``max_failures`` pushes in a row failed; re-registering revives."""
    failures: int
    """Consecutive failed pushes."""
    pushes_ok: int
    last_error: str | None
    created_at: str
    last_success_at: str | None
    last_attempt_at: str | None


@dataclass(frozen=True)
class PushOutcome:
    """The result of one push to one subscriber."""

    subscriber_id: int
    ok: bool
    error: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SubscriberStore:
    """Subscribers and service state in one SQLite file.

    Args:
        path: Database file; its folder must exist.

    Raises:
        StoreError: If the file cannot be opened as a database.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = open_database(
            self.path, schema=_SCHEMA, version=1, error=StoreError, what="subscriber database"
        )
        try:
            self._import_reference()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: cannot use as a SQLite database ({exc})") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _import_reference(self) -> None:
        """Copy the reference service's ``registration(app_name, address)`` rows, once."""
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'registration'"
        ).fetchone()
        done = self._db.execute(
            "SELECT 1 FROM service_state WHERE key = 'reference_imported'"
        ).fetchone()
        if not found or done:
            return
        rows = self._db.execute("SELECT app_name, address FROM registration").fetchall()
        with transaction(self._db) as db:
            db.executemany(
                "INSERT OR IGNORE INTO subscribers (app_name, address, key_sha256, created_at)"
                " VALUES (?, ?, ?, ?)",
                [(str(a), str(b), _digest(secrets.token_urlsafe(24)), _now()) for a, b in rows],
            )
            db.execute(
                "INSERT INTO service_state (key, value) VALUES ('reference_imported', ?)",
                (_now(),),
            )

    def register(self, app_name: str, address: str) -> tuple[Subscriber, str | None]:
        """Add a subscriber, or update and reactivate the one with this address.

        Returns:
            The subscriber, and its deletion key when it was created now (None otherwise:
            the key is shown once, to whoever registered the address first).
        """
        key = secrets.token_urlsafe(24)
        with self._lock, transaction(self._db):
            existing = self._db.execute(
                "SELECT id FROM subscribers WHERE address = ?", (address,)
            ).fetchone()
            if existing:
                self._db.execute(
                    "UPDATE subscribers SET app_name = ?, active = 1, failures = 0 WHERE id = ?",
                    (app_name, existing[0]),
                )
                sub_id, new_key = int(existing[0]), None
            else:
                cursor = self._db.execute(
                    "INSERT INTO subscribers (app_name, address, key_sha256, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (app_name, address, _digest(key), _now()),
                )
                assert cursor.lastrowid is not None
                sub_id, new_key = cursor.lastrowid, key
        subscriber = self.get(sub_id)
        assert subscriber is not None
        return subscriber, new_key

    def get(self, subscriber_id: int) -> Subscriber | None:
        """The subscriber with this id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)
            ).fetchone()
        return _subscriber(row) if row else None

    def subscribers(self) -> list[Subscriber]:
        """All subscribers, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM subscribers ORDER BY id").fetchall()
        return [_subscriber(r) for r in rows]

    def targets(self) -> list[tuple[int, str]]:
        """(id, address) of the active subscribers: who gets the next push."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, address FROM subscribers WHERE active = 1 ORDER BY id"
            ).fetchall()
        return [(int(i), str(a)) for i, a in rows]

    def counts(self) -> tuple[int, int]:
        """(active, inactive) subscriber counts."""
        with self._lock:
            rows = self._db.execute(
                "SELECT active, COUNT(*) FROM subscribers GROUP BY active"
            ).fetchall()
        by_state = {int(a): int(n) for a, n in rows}
        return by_state.get(1, 0), by_state.get(0, 0)

    def check_key(self, subscriber_id: int, key: str) -> bool:
        """Whether ``key`` is this subscriber's deletion key (constant-time compare)."""
        with self._lock:
            row = self._db.execute(
                "SELECT key_sha256 FROM subscribers WHERE id = ?", (subscriber_id,)
            ).fetchone()
        return bool(row) and hmac.compare_digest(str(row[0]), _digest(key))

    def delete(self, subscriber_id: int) -> bool:
        """Remove a subscriber; False if there was none with this id."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM subscribers WHERE id = ?", (subscriber_id,))
        return cursor.rowcount > 0

    def record(self, outcomes: Iterable[PushOutcome], *, max_failures: int) -> list[int]:
        """Store push outcomes in one transaction; deactivate persistent failures.

        Returns:
            Ids of the subscribers deactivated by these outcomes.
        """
        now = _now()
        results = list(outcomes)
        ok = [(now, now, o.subscriber_id) for o in results if o.ok]
        failed = [o for o in results if not o.ok]
        with self._lock, transaction(self._db):
            self._db.executemany(
                "UPDATE subscribers SET failures = 0, pushes_ok = pushes_ok + 1,"
                " last_error = NULL, last_success_at = ?, last_attempt_at = ? WHERE id = ?",
                ok,
            )
            self._db.executemany(
                "UPDATE subscribers SET failures = failures + 1, last_error = ?,"
                " last_attempt_at = ?,"
                " active = CASE WHEN failures + 1 >= ? THEN 0 ELSE active END WHERE id = ?",
                [(o.error, now, max_failures, o.subscriber_id) for o in failed],
            )
            ids = [o.subscriber_id for o in failed]
            dropped: list[int] = []
            if ids:
                marks = ",".join("?" * len(ids))
                dropped = [
                    int(r[0])
                    for r in self._db.execute(
                        f"SELECT id FROM subscribers WHERE active = 0 AND failures = ?"
                        f" AND id IN ({marks})",
                        (max_failures, *ids),
                    )
                ]
        return dropped

    def get_state(self, key: str) -> str | None:
        """A saved service-state value, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM service_state WHERE key = ?", (key,)
            ).fetchone()
        return str(row[0]) if row else None

    def set_state(self, key: str, value: str) -> None:
        """Save a service-state value."""
        with self._lock:
            self._db.execute(
                "INSERT INTO service_state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _subscriber(row: tuple[object, ...]) -> Subscriber:
    return Subscriber(
        id=int(str(row[0])),
        app_name=str(row[1]),
        address=str(row[2]),
        active=bool(row[3]),
        failures=int(str(row[4])),
        pushes_ok=int(str(row[5])),
        last_error=None if row[6] is None else str(row[6]),
        created_at=str(row[7]),
        last_success_at=None if row[8] is None else str(row[8]),
        last_attempt_at=None if row[9] is None else str(row[9]),
    )
