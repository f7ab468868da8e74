"""The one way the project opens its SQLite files (carbonscaler._sqlite), and the three stores
that use it: the controller's state, the carbon service's subscribers, the accounting ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from carbonscaler._sqlite import open_database, transaction
from carbonscaler.accounting.ledger import Ledger, LedgerError
from carbonscaler.control.state import StateError, StateStore
from carbonscaler.services._store import StoreError, SubscriberStore

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER)"


class Refused(RuntimeError):
    pass


def test_a_new_file_is_wal_versioned_with_foreign_keys(tmp_path: Path) -> None:
    db = open_database(tmp_path / "a.db", schema=SCHEMA, version=3, error=Refused, what="test")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()


def test_migrations_run_in_order_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    open_database(path, schema=SCHEMA, version=1, error=Refused, what="test").close()
    migrations = {2: "ALTER TABLE t ADD COLUMN y TEXT", 3: "CREATE TABLE u (z INTEGER)"}
    db = open_database(
        path, schema=SCHEMA, version=3, error=Refused, what="test", migrations=migrations
    )
    assert [c[1] for c in db.execute("PRAGMA table_info(t)")] == ["x", "y"]
    assert db.execute("SELECT count(*) FROM u").fetchone()[0] == 0
    db.close()
    # Opening again at the same version runs nothing (ALTER would fail on a second run).
    open_database(
        path, schema=SCHEMA, version=3, error=Refused, what="test", migrations=migrations
    ).close()


def test_a_newer_file_a_missing_folder_and_garbage_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    open_database(path, schema=SCHEMA, version=5, error=Refused, what="test").close()
    with pytest.raises(Refused, match="newer than this carbonscaler"):
        open_database(path, schema=SCHEMA, version=4, error=Refused, what="test")
    with pytest.raises(Refused, match="does not exist"):
        open_database(tmp_path / "no" / "x.db", schema=SCHEMA, version=1, error=Refused, what="t")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(Refused, match="cannot use as a SQLite test"):
        open_database(junk, schema=SCHEMA, version=1, error=Refused, what="test")


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db", schema=SCHEMA, version=1, error=Refused, what="test")
    with pytest.raises(ZeroDivisionError), transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        _ = 1 / 0
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]
    db.close()


@pytest.mark.parametrize(
    ("store", "error"),
    [(StateStore, StateError), (SubscriberStore, StoreError), (Ledger, LedgerError)],
)
def test_every_store_refuses_a_newer_file_in_its_own_words(
    tmp_path: Path, store: type, error: type[Exception]
) -> None:
    path = tmp_path / "store.db"
    store(path).close() if hasattr(store, "close") else store(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] >= 1
    raw.execute("PRAGMA user_version = 999")
    raw.commit()
    raw.close()
    with pytest.raises(error, match="newer"):
        store(path)
