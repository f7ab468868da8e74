"""The controller's persisted state: one SQLite file per run folder.

After every step the controller writes its whole state (plan, progress, accounting, backend
handle) and any new events in one transaction, so a controller killed at any point and started
again finds the last complete step — never half of one. WAL mode keeps readers (``status``
commands) from blocking the writer. SQL is parameterised throughout.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from carbonscaler._sqlite import open_database, open_read_only, transaction

__all__ = ["STATE_FILE", "ControllerState", "Event", "StateStore"]

STATE_FILE = "controller.db"
"""The controller's state in a run folder (the dashboard finds runs by it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    wall_time REAL NOT NULL,
    job_hours REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (name, id);
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
"""
# Version 2 added the clusters table (a shared cluster's own decisions beside its jobs' runs);
# the schema's CREATE ... IF NOT EXISTS brings a version-1 file up to date.
_VERSION = 2


@dataclass
class Event:
    """Something that happened to a job: plan, rescale, replan, crash, degraded, done."""

    kind: str
    job_hours: float
    detail: dict[str, Any]
    wall_time: float = field(default_factory=time.time)


@dataclass
class ControllerState:
    """Everything a restarted controller needs to continue a job where it was.

    Times are *job hours* since arrival: wall seconds scaled by the spec's time scale.
    The plan is the decision core's, absolute from arrival, in the form of
    :meth:`carbonscaler.decision.Plans.to_dict`.
    """

    wall_start: float
    work_required: float
    deadline_slots: int
    plan: dict[str, Any]
    slot: int = 0
    accounted_hours: float = 0.0
    nominal_work: float = 0.0  # work the profile promises for the server-time run so far
    started: bool = False
    work_done: float = 0.0
    progress_pct: float = 0.0
    servers: int = 0
    emissions_g: float = 0.0
    energy_kwh: float = 0.0
    profile_energy_kwh: float = 0.0  # the same server-time at the profile's P(k)
    emissions_by_slot: dict[str, float] = field(default_factory=dict)
    # gCO2eq/kWh each slot is charged at (the run and its baseline alike), fixed at first use;
    # slots charged at a fallback because the source was down are listed as unobserved.
    carbon_by_slot: dict[str, float] = field(default_factory=dict)
    unobserved_slots: list[int] = field(default_factory=list)
    servers_by_slot: dict[str, float] = field(default_factory=dict)
    hours_by_servers: dict[str, float] = field(default_factory=dict)  # job hours at each count
    replans: int = 0
    rescales: int = 0
    restarts: int = 0
    rescale_seconds: list[float] = field(default_factory=list)  # wall s lost per change
    change_wall: float | None = None  # when the last start/rescale began
    change_work: float = 0.0  # work done at that moment
    change_nominal: float = 0.0  # and the work the profile had promised by then
    degraded: bool = False
    completed: bool = False
    completion_hours: float | None = None
    backend: dict[str, Any] = field(default_factory=dict)
    power_source: str = "estimated:profile"
    profile_throughput: list[float] = field(default_factory=list)
    profile_power_w: list[float] = field(default_factory=list)
    profile_source: str = ""
    workload_env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    level_reason: int = 0  # why the level differs from the plan's (late, overrun), if it does

    @property
    def plan_servers(self) -> list[int]:
        """Planned servers per slot from arrival."""
        return list(self.plan["servers"])

    @property
    def plan_fraction(self) -> list[float]:
        """Per slot, the share run at ``plan_servers`` (the rest at ``plan_after``)."""
        return list(self.plan["fraction"])

    @property
    def plan_after(self) -> list[int]:
        return list(self.plan["after"])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ControllerState:
        return cls(**json.loads(text))


class StateError(RuntimeError):
    """The state database cannot be opened or used; the message names the file."""


class StateStore:
    """SQLite-backed state for one or more runs.

    Args:
        path: database file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_database(
            self.path, schema=_SCHEMA, version=_VERSION, error=StateError, what="state database"
        )

    @classmethod
    def read_only(cls, path: str | Path) -> StateStore:
        """The existing store at ``path``, for reading only (the dashboard watching runs):
        nothing is created or written beside it (:func:`carbonscaler._sqlite.open_read_only`).
        Open it, read, close it; :meth:`save` and :meth:`delete` fail.

        Raises:
            StateError: if the file is missing, unusable, or from a newer carbonscaler.
        """
        store = cls.__new__(cls)
        store.path = Path(path)
        store._db = open_read_only(
            store.path, version=_VERSION, error=StateError, what="state database"
        )
        return store

    def runs(self) -> list[tuple[str, float]]:
        """Every run in the store: its name and when its state was last saved (epoch s)."""
        rows = self._db.execute("SELECT name, updated FROM runs ORDER BY name").fetchall()
        return [(str(name), float(updated)) for name, updated in rows]

    def load(self, name: str) -> tuple[dict[str, Any], ControllerState] | None:
        """The spec (as saved) and state of run ``name``, or None."""
        row = self._db.execute("SELECT spec, state FROM runs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), ControllerState.from_json(row[1])

    def save(
        self, name: str, spec: dict[str, Any], state: ControllerState, events: list[Event]
    ) -> None:
        """Write the state and new events atomically."""
        with transaction(self._db) as db:
            self._write_run(db, name, spec, state, events)

    def save_cluster(
        self,
        name: str,
        state: dict[str, Any],
        runs: Sequence[tuple[str, dict[str, Any], ControllerState, list[Event]]] = (),
    ) -> None:
        """Write a shared cluster's own state (its decisions) and its jobs' ``runs`` — name,
        spec, state, new events, as for :meth:`save` — in one transaction: a decision and
        what the jobs made of it are never saved one without the other."""
        with transaction(self._db) as db:
            for run in runs:
                self._write_run(db, *run)
            db.execute(
                "INSERT INTO clusters (name, state, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET state = excluded.state, "
                "updated = excluded.updated",
                (name, json.dumps(state), time.time()),
            )

    @staticmethod
    def _write_run(
        db: sqlite3.Connection,
        name: str,
        spec: dict[str, Any],
        state: ControllerState,
        events: list[Event],
    ) -> None:
        db.execute(
            "INSERT INTO runs (name, spec, state, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, state = excluded.state, "
            "updated = excluded.updated",
            (name, json.dumps(spec), state.to_json(), time.time()),
        )
        db.executemany(
            "INSERT INTO events (name, wall_time, job_hours, kind, detail) VALUES (?, ?, ?, ?, ?)",
            [(name, e.wall_time, e.job_hours, e.kind, json.dumps(e.detail)) for e in events],
        )

    def load_cluster(self, name: str) -> dict[str, Any] | None:
        """The state :meth:`save_cluster` last wrote for cluster ``name``, or None."""
        row = self._db.execute("SELECT state FROM clusters WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded

    def events(self, name: str) -> list[Event]:
        rows = self._db.execute(
            "SELECT kind, job_hours, detail, wall_time FROM events WHERE name = ? ORDER BY id",
            (name,),
        ).fetchall()
        return [Event(kind, hours, json.loads(detail), wall) for kind, hours, detail, wall in rows]

    def delete(self, name: str) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM runs WHERE name = ?", (name,))
            db.execute("DELETE FROM events WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()
