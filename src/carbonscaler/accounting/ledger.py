"""The accounting ledger: jobs, their samples and running totals, in one SQLite file.

Guarantees:

- **Nothing half-written.** A sample and the totals it adds to are written in one
  transaction; a crash leaves either both or neither. WAL journaling with
  ``synchronous=FULL`` makes every committed transaction survive a process kill and a power
  cut; the tracker commits once per sampling round, so a crash loses at most the round in
  progress — the time it covers is picked up by the next round after a restart, because
  each job's next sample starts where its last committed one ended.
- **No double counting.** Samples are keyed by ``(job_id, seq)`` and must start where the
  job's previous sample ended; a sample whose key exists, or that does not continue the
  job, is refused without touching the totals. Replaying a round after a crash is
  therefore harmless.
- **Every statement is parameterised**; request data never becomes SQL text.
- **Versioned schema**: SQLite's ``user_version``; a file from a newer version is refused
  (:mod:`carbonscaler._sqlite`, shared with the other stores).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from carbonscaler._sqlite import open_database, transaction

__all__ = ["SCHEMA_VERSION", "JobRecord", "Ledger", "LedgerError", "SampleRecord"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    created_s REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    servers INTEGER NOT NULL,
    progress_pct REAL,
    progress_s REAL,
    progress_error TEXT,
    samples INTEGER NOT NULL DEFAULT 0,
    last_end_s REAL NOT NULL,
    energy_j REAL NOT NULL DEFAULT 0,
    measured_j REAL NOT NULL DEFAULT 0,
    emissions_g REAL NOT NULL DEFAULT 0,
    measured_g REAL NOT NULL DEFAULT 0,
    last_watts REAL,
    last_intensity_g_per_kwh REAL
);
CREATE TABLE IF NOT EXISTS samples (
    job_id TEXT NOT NULL REFERENCES jobs (job_id),
    seq INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    watts REAL NOT NULL,
    energy_j REAL NOT NULL,
    measured_j REAL NOT NULL,
    emissions_g REAL NOT NULL,
    intensity_g_per_kwh REAL NOT NULL,
    carbon_stale INTEGER NOT NULL,
    servers INTEGER NOT NULL,
    progress_pct REAL,
    power_source TEXT NOT NULL,
    carbon_source TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS carbon_points (
    t_s REAL PRIMARY KEY,
    g_per_kwh REAL NOT NULL,
    source TEXT NOT NULL,
    stale INTEGER NOT NULL
);
"""


class LedgerError(RuntimeError):
    """The ledger cannot be opened or used; the message names the file or the job."""


@dataclass(frozen=True)
class JobRecord:
    """A tracked job and its running totals."""

    job_id: str
    spec: dict[str, Any]
    """The registration: nodes, pods, profile, progress source, ..."""
    created_s: float
    active: bool
    servers: int
    progress_pct: float | None
    progress_s: float | None
    progress_error: str | None
    samples: int
    last_end_s: float
    """End of the last committed sample (the registration time before the first)."""
    energy_j: float
    measured_j: float
    emissions_g: float
    measured_g: float
    last_watts: float | None
    last_intensity_g_per_kwh: float | None


@dataclass(frozen=True)
class SampleRecord:
    """One accounted interval of one job."""

    job_id: str
    seq: int
    """1, 2, 3, ... per job; with ``job_id`` the sample's key."""
    start_s: float
    end_s: float
    watts: float
    energy_j: float
    measured_j: float
    emissions_g: float
    intensity_g_per_kwh: float
    carbon_stale: bool
    servers: int
    progress_pct: float | None
    power_source: str
    carbon_source: str
    note: str = ""

    @property
    def measured_g(self) -> float:
        """Emissions of the measured part (the same intensity applies to both parts)."""
        return self.emissions_g * self.measured_j / self.energy_j if self.energy_j > 0 else 0.0


_JOB_COLUMNS = ", ".join(f.name if f.name != "spec" else "spec_json" for f in fields(JobRecord))
_SAMPLE_COLUMNS = [f.name for f in fields(SampleRecord)]


def _job(row: Sequence[Any]) -> JobRecord:
    values = dict(zip([f.name for f in fields(JobRecord)], row, strict=True))
    values["spec"] = json.loads(values["spec"])
    values["active"] = bool(values["active"])
    return JobRecord(**values)


def _sample(row: Sequence[Any]) -> SampleRecord:
    values = dict(zip(_SAMPLE_COLUMNS, row, strict=True))
    values["carbon_stale"] = bool(values["carbon_stale"])
    return SampleRecord(**values)


class Ledger:
    """Jobs, samples and totals in one SQLite file (see the module docs for guarantees).

    Args:
        path: Database file, created if missing; its folder must exist.

    Raises:
        LedgerError: If the file cannot be used, or was written by a newer version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_database(
            self.path,
            schema=_SCHEMA,
            version=SCHEMA_VERSION,
            error=LedgerError,
            what="ledger",
            durable=True,
        )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- jobs ------------------------------------------------------------------------------

    def add_job(
        self, job_id: str, spec: dict[str, Any], *, servers: int, start_s: float
    ) -> JobRecord:
        """Register a job; its first sample will start at ``start_s``.

        Raises:
            LedgerError: If a job with this id exists.
        """
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO jobs (job_id, spec_json, created_s, servers, last_end_s)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (job_id, json.dumps(spec, sort_keys=True), start_s, servers, start_s),
                )
            except sqlite3.IntegrityError:
                raise LedgerError(f"job {job_id!r} exists; choose another id") from None
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _job(row)

    def jobs(self, *, active_only: bool = False) -> list[JobRecord]:
        """All jobs (or the active ones), in registration order."""
        where = " WHERE active = 1" if active_only else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY created_s, job_id"
            ).fetchall()
        return [_job(r) for r in rows]

    def update_job(
        self,
        job_id: str,
        *,
        servers: int | None = None,
        spec: dict[str, Any] | None = None,
        active: bool | None = None,
    ) -> None:
        """Change a job's server count, registration or active flag.

        Raises:
            LedgerError: If there is no such job.
        """
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET servers = COALESCE(?, servers),"
                " spec_json = COALESCE(?, spec_json), active = COALESCE(?, active)"
                " WHERE job_id = ?",
                (
                    servers,
                    None if spec is None else json.dumps(spec, sort_keys=True),
                    None if active is None else int(active),
                    job_id,
                ),
            )
        if cursor.rowcount == 0:
            raise LedgerError(f"no job {job_id!r}")

    def set_progress(
        self, job_id: str, percent: float | None, at_s: float, error: str | None = None
    ) -> None:
        """Store a job's progress (percent done) or the error reading it.

        A None ``percent`` keeps the previous value and records ``error``.

        Raises:
            LedgerError: If there is no such job.
        """
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET progress_pct = COALESCE(?, progress_pct),"
                " progress_s = CASE WHEN ? IS NULL THEN progress_s ELSE ? END,"
                " progress_error = ? WHERE job_id = ?",
                (percent, percent, at_s, error, job_id),
            )
        if cursor.rowcount == 0:
            raise LedgerError(f"no job {job_id!r}")

    # -- samples ---------------------------------------------------------------------------

    def record(self, samples: Sequence[SampleRecord]) -> int:
        """Add samples and their totals in one transaction; return how many were new.

        A sample is skipped (not an error) when its key exists or it does not start where
        its job's previous sample ended: both mean it was already accounted.

        Raises:
            LedgerError: If a sample names an unknown job.
        """
        added = 0
        with self._lock, transaction(self._db):
            for s in samples:
                row = self._db.execute(
                    "SELECT samples, last_end_s FROM jobs WHERE job_id = ?", (s.job_id,)
                ).fetchone()
                if row is None:
                    raise LedgerError(f"sample for unknown job {s.job_id!r}")
                if s.seq != row[0] + 1 or s.start_s != row[1]:
                    continue
                self._db.execute(
                    f"INSERT INTO samples ({', '.join(_SAMPLE_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(_SAMPLE_COLUMNS))})",
                    tuple(
                        int(v) if isinstance(v, bool) else v
                        for v in (getattr(s, c) for c in _SAMPLE_COLUMNS)
                    ),
                )
                self._db.execute(
                    "UPDATE jobs SET samples = ?, last_end_s = ?,"
                    " energy_j = energy_j + ?, measured_j = measured_j + ?,"
                    " emissions_g = emissions_g + ?, measured_g = measured_g + ?,"
                    " last_watts = ?, last_intensity_g_per_kwh = ?,"
                    # A sample that read progress carries it: one commit for both.
                    " progress_pct = COALESCE(?, progress_pct),"
                    " progress_s = CASE WHEN ? IS NULL THEN progress_s ELSE ? END,"
                    " progress_error = CASE WHEN ? IS NULL THEN progress_error END"
                    " WHERE job_id = ?",
                    (
                        s.seq,
                        s.end_s,
                        s.energy_j,
                        s.measured_j,
                        s.emissions_g,
                        s.measured_g,
                        s.watts,
                        s.intensity_g_per_kwh,
                        s.progress_pct,
                        s.progress_pct,
                        s.end_s,
                        s.progress_pct,
                        s.job_id,
                    ),
                )
                added += 1
        return added

    def samples(self, job_id: str, *, after_seq: int = 0) -> Iterator[SampleRecord]:
        """A job's samples in order, from ``after_seq + 1``, read in pages."""
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {', '.join(_SAMPLE_COLUMNS)} FROM samples"
                    " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT 1000",
                    (job_id, after_seq),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _sample(row)
            after_seq = int(rows[-1][1])

    # -- carbon intensity as pushed by the carbon service ---------------------------------

    def add_carbon_point(self, t_s: float, g_per_kwh: float, source: str, stale: bool) -> None:
        """Remember the intensity in force from ``t_s`` (a push from the carbon service)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO carbon_points (t_s, g_per_kwh, source, stale)"
                " VALUES (?, ?, ?, ?)",
                (t_s, g_per_kwh, source, int(stale)),
            )

    def carbon_points(self, since_s: float) -> list[tuple[float, float, str, bool]]:
        """Points from the last one at or before ``since_s`` onwards, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT t_s, g_per_kwh, source, stale FROM carbon_points WHERE t_s >="
                " COALESCE((SELECT MAX(t_s) FROM carbon_points WHERE t_s <= ?), ?)"
                " ORDER BY t_s",
                (since_s, since_s),
            ).fetchall()
        return [(float(t), float(v), str(s), bool(st)) for t, v, s, st in rows]
