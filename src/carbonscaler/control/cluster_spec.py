"""The cluster file: many jobs sharing a capacity, validated by pydantic (issue #12).

A YAML file such as::

    capacity: 12                 # servers per slot, or a list with one value per slot
    slot_minutes: 60             # optional, the same for every job
    jobs:
      - name: resnet
        profile: profiles/resnet.csv   # or linear / amdahl:0.05 / ... ; paths relative to this file
        minReplicas: 1
        maxReplicas: 6
        length_hours: 10         # hours at minReplicas (or work: N)
        arrival_hours: 0         # after the plan's start
        deadline_hours: 20       # after arrival (or deadline: slots, or slack: × length)
        weight: 1                # optional: priority when the set cannot fit

Each job takes the carbon-aware settings of a single job
(:class:`carbonscaler.settings.JobSettings`: the same names, camelCase or snake_case, the same
rules — exactly one of ``length_hours``/``work``, exactly one of ``deadline_hours``/``deadline``/
``slack``, ``progress`` for work already done) plus ``name``, ``arrival_hours`` and ``weight``.
What only a running job uses (``policy``, ``replanThreshold``, ``safetyMargin``,
``rescaleOverheadSeconds``, a per-job ``slot_seconds``) is refused, so nothing is silently
ignored; ``profile: auto`` (measure it) needs a running job too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from carbonscaler.control.spec import SpecError, read_yaml_mapping
from carbonscaler.settings import JobSettings

if TYPE_CHECKING:
    from carbonscaler.planner.cluster import ClusterJob
    from carbonscaler.planner.regions import RegionalJob

__all__ = [
    "JOBS_CSV_COLUMNS",
    "ClusterJobSpec",
    "ClusterRegionSpec",
    "ClusterSpec",
    "generate_cluster_spec",
    "load_cluster_spec",
    "load_jobs_csv",
]

JOBS_CSV_COLUMNS = (
    "name",
    "arrival_hours",
    "length_hours",
    "profile",
    "minReplicas",
    "maxReplicas",
    "slack",
)
"""Columns of a jobs CSV (``name`` and ``weight`` optional; ``min``/``max`` accepted for the
server bounds, ``deadline_hours`` instead of ``slack``)."""
_CSV_ALIASES = {"min": "minReplicas", "max": "maxReplicas", "m": "minReplicas", "M": "maxReplicas"}

# JobSettings fields that belong to a running job, not to a plan.
_RUN_ONLY = {
    "policy": "policy",
    "replan_threshold": "replanThreshold",
    "safety_margin": "safetyMargin",
    "rescale_overhead_s": "rescaleOverheadSeconds",
}


class ClusterJobSpec(JobSettings):
    """One job of a cluster file: a job's settings plus its name, arrival and weight."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Unique job name.")
    arrival_hours: float = Field(
        0.0, ge=0, description="When the job arrives, in hours after the plan's start."
    )
    job: str | None = Field(
        None,
        description="A job file as for `carbonscaler run` (workload, checkpoints): the job's "
        "settings come from it, and `cluster run` runs its workload. Beside it an entry takes "
        "only arrival_hours and weight.",
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="Priority when the set cannot fit: the jobs kept finishing are those of "
        "the largest total weight.",
    )
    regions: list[str] | None = Field(
        None,
        min_length=1,
        description="With clusters: the names of the clusters the job may run in (default: all).",
    )
    migrate: bool = Field(
        False,
        description="With clusters: the job may change cluster at slot boundaries (default: "
        "it runs in one).",
    )

    @model_validator(mode="after")
    def _plannable(self) -> Self:
        given = [alias for field, alias in _RUN_ONLY.items() if field in self.model_fields_set]
        if given:
            one = len(given) == 1
            raise ValueError(
                f"{', '.join(given)} {'configures' if one else 'configure'} a running job, "
                f"not a cluster plan; remove {'it' if one else 'them'}"
            )
        if self.profile == "auto":
            raise ValueError(
                "profile 'auto' measures a running job, but a cluster plans its jobs before "
                "they run; give a CSV path (measure one with `carbonscaler profile JOB.yaml "
                "--out FILE.csv`) or a shape such as 'linear' or 'amdahl:0.05'"
            )
        if self.progress >= 100:
            raise ValueError("progress is 100 %: the job is done; remove it from the set")
        return self

    def deadline_after_arrival_hours(self) -> float:
        """The deadline in hours after arrival, however it was given."""
        if self.deadline is not None:
            return self.deadline * self.slot_hours
        if self.deadline_hours is not None:
            return self.deadline_hours
        assert self.slack is not None and self.length_hours is not None  # by validation
        return self.slack * self.length_hours


class ClusterRegionSpec(BaseModel):
    """One of several clusters (regions) of a cluster file: its carbon and its capacity.

    The carbon is a trace file (``trace``, relative to the cluster file; ``zone`` then picks
    a zone of a file that names several) or a zone of the offline dataset (``zone``, with an
    optional ``year``; default: the plan's start year).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Unique cluster name."
    )
    trace: str | None = Field(
        None, min_length=1, description="Carbon-intensity file, relative to the cluster file."
    )
    zone: str | None = Field(
        None,
        min_length=1,
        description="Without trace: a zone of the offline dataset. With: the zone of a file "
        "that names several.",
    )
    year: int | None = Field(
        None, ge=1900, le=2200, description="Offline-dataset year for zone (default: --start's)."
    )
    capacity: int | list[int] = Field(
        description="Servers per slot: one number, or one per slot from the plan's start."
    )

    @field_validator("capacity")
    @classmethod
    def _whole_servers(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if any(v < 0 for v in values):
            raise ValueError("servers per slot cannot be negative")
        if isinstance(value, list) and not value:
            raise ValueError("a per-slot capacity needs at least one value")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.trace is None and self.zone is None:
            raise ValueError(
                f"cluster {self.name!r}: give its carbon, trace: PATH (a carbon-intensity "
                "file) or zone: Z (the offline dataset; see `carbonscaler traces list`)"
            )
        if self.trace is not None and self.year is not None:
            raise ValueError(
                f"cluster {self.name!r}: year: selects an offline-dataset year; it does not "
                "apply to a trace file"
            )
        return self


class ClusterSpec(BaseModel):
    """A cluster file: the capacity (or several clusters), the slot length and the jobs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)

    capacity: int | list[int] | None = Field(
        None,
        description="Servers per slot: one number, or one per slot from the plan's start "
        "(--capacity overrides it).",
    )
    slot_minutes: int = Field(60, ge=1, le=1440, description="Slot length of every job.")
    jobs: list[ClusterJobSpec] = Field(min_length=1)
    clusters: list[ClusterRegionSpec] | None = Field(
        None,
        min_length=1,
        description="Several clusters (regions), each with its own carbon and capacity, "
        "instead of one capacity; a job's regions: says where it may run.",
    )

    @field_validator("capacity")
    @classmethod
    def _whole_servers(cls, value: int | list[int] | None) -> int | list[int] | None:
        values = value if isinstance(value, list) else [] if value is None else [value]
        if any(v < 0 for v in values):
            raise ValueError("servers per slot cannot be negative")
        if isinstance(value, list) and not value:
            raise ValueError("a per-slot capacity needs at least one value")
        return value

    @model_validator(mode="before")
    @classmethod
    def _shared_slots(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        minutes = data.get("slot_minutes", data.get("slotMinutes", 60))
        jobs = data.get("jobs")
        if isinstance(jobs, list):
            for job in jobs:
                if isinstance(job, dict) and ({"slot_seconds", "slotSeconds"} & set(job)):
                    raise ValueError(
                        f"job {job.get('name', '?')!r}: every job of a cluster plan uses the "
                        "same slots; give slot_minutes at the top level instead of slot_seconds"
                    )
            if isinstance(minutes, int) and not isinstance(minutes, bool):
                data = dict(data)
                data["jobs"] = [
                    {**job, "slot_seconds": minutes * 60} if isinstance(job, dict) else job
                    for job in jobs
                ]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [job.name for job in self.jobs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"job names must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _regions(self) -> Self:
        if self.clusters is None:
            placed = [job.name for job in self.jobs if job.regions is not None or job.migrate]
            if placed:
                raise ValueError(
                    f"job{'s' if len(placed) > 1 else ''} {', '.join(placed)}: regions: and "
                    "migrate: choose among clusters; add clusters: [{name, trace | zone, "
                    "capacity}] at the top level"
                )
            return self
        if self.capacity is not None:
            raise ValueError(
                "with clusters: give each cluster its capacity (clusters[].capacity), not a "
                "top-level capacity"
            )
        names = [cluster.name for cluster in self.clusters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"cluster names must be unique; repeated: {', '.join(repeated)}")
        for job in self.jobs:
            unknown = [r for r in job.regions or () if r not in names]
            if unknown:
                raise ValueError(
                    f"job {job.name!r}: unknown cluster{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(repr(u) for u in unknown)} in regions; the clusters are "
                    f"{', '.join(names)}"
                )
        return self

    @property
    def slot_hours(self) -> float:
        return self.slot_minutes / 60.0

    def resolve_paths(self, base: Path) -> ClusterSpec:
        """Profile paths (anything but a parametric shape) and the clusters' trace paths made
        relative to ``base``."""
        jobs = []
        for job in self.jobs:
            profile = job.profile
            looks_like_path = profile.endswith(".csv") or "/" in profile or os.sep in profile
            if looks_like_path and not os.path.isabs(profile):
                profile = str((base / profile).resolve())
            jobs.append(job.model_copy(update={"profile": profile}))
        update: dict[str, Any] = {"jobs": jobs}
        if self.clusters is not None:
            update["clusters"] = [
                cluster
                if cluster.trace is None or os.path.isabs(cluster.trace)
                else cluster.model_copy(update={"trace": str((base / cluster.trace).resolve())})
                for cluster in self.clusters
            ]
        return self.model_copy(update=update)

    def job_files(self) -> dict[str, Path]:
        """The job file of each job given by one (``job:``), by name."""
        return {job.name: Path(job.job) for job in self.jobs if job.job is not None}

    def cluster_jobs(self) -> list[ClusterJob]:
        """The planner's jobs: profiles read, work sized, windows in slots from the start.

        A job arriving inside a slot may start at the next slot; its deadline (arrival plus
        the deadline after arrival) is rounded down to a slot boundary. ``progress`` takes its
        share off the work.

        Raises:
            ProfileError: if a profile cannot be read or does not cover ``maxReplicas``.
            FileNotFoundError: if a profile file does not exist.
            PlanningError: if a job's window is empty.
        """
        from carbonscaler.planner.cluster import ClusterJob
        from carbonscaler.planner.model import Job, PlanningError
        from carbonscaler.profile import parse_profile_spec

        dt = self.slot_hours
        out = []
        for spec in self.jobs:
            profile = parse_profile_spec(spec.profile, default_servers=spec.max_replicas)
            if spec.length_hours is not None:
                job = Job.from_length(
                    profile, spec.length_hours, spec.min_replicas, spec.max_replicas, dt
                )
            else:
                assert spec.work is not None  # by validation
                job = Job(profile, spec.work, spec.min_replicas, spec.max_replicas, dt)
            if spec.progress > 0:
                job = job.with_work(job.work * (1 - spec.progress / 100))
            arrival = math.ceil(spec.arrival_hours / dt - 1e-9)
            end_hours = spec.arrival_hours + spec.deadline_after_arrival_hours()
            deadline = math.floor(end_hours / dt + 1e-9)
            if deadline <= arrival:
                raise PlanningError(
                    f"job {spec.name!r}: no whole {self.slot_minutes}-minute slot between its "
                    f"arrival ({spec.arrival_hours:g} h) and deadline ({end_hours:g} h)"
                )
            out.append(ClusterJob(spec.name, job, arrival, deadline, spec.weight))
        return out

    def regional_jobs(self) -> list[RegionalJob]:
        """The planner's jobs (:meth:`cluster_jobs`) with the clusters each may run in (none
        listed: all) and whether it may migrate, for
        :func:`~carbonscaler.planner.regions.plan_regions`.

        Raises:
            ProfileError, FileNotFoundError, PlanningError: as :meth:`cluster_jobs`.
        """
        from carbonscaler.planner.regions import RegionalJob

        return [
            RegionalJob(job, tuple(spec.regions or ()), spec.migrate)
            for job, spec in zip(self.cluster_jobs(), self.jobs, strict=True)
        ]


def load_cluster_spec(path: str | os.PathLike[str]) -> ClusterSpec:
    """Read and validate a cluster file; profile paths are taken relative to the file.

    Raises:
        SpecError: naming the file, the field and what is wrong.
        FileNotFoundError: if the file does not exist.
    """
    file = Path(path)
    data = read_yaml_mapping(file, "cluster file", "capacity:, jobs: [...]")
    return _validated(data, file)


def _validated(data: dict[str, Any], file: Path) -> ClusterSpec:
    """``data`` as a cluster spec, profile paths taken relative to ``file``.

    Raises:
        SpecError: naming the file, each field (and job) and what is wrong.
    """
    data = _with_job_files(data, file)
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err, data) for err in exc.errors())
        raise SpecError(f"{file}: {problems}") from None
    return spec.resolve_paths(file.resolve().parent)


# What a job file gives a cluster's entry: the job's settings, not how it runs alone.
_FROM_JOB_FILE = {
    "name",
    "profile",
    "min_replicas",
    "max_replicas",
    "length_hours",
    "work",
    "deadline",
    "deadline_hours",
    "slack",
    "progress",
}
_BESIDE_JOB_FILE = {"job", "arrival_hours", "arrivalHours", "weight", "regions", "migrate"}


def _with_job_files(data: dict[str, Any], file: Path) -> dict[str, Any]:
    """Entries given by a job file (``job: PATH``, relative to ``file``) filled in from it.

    Raises:
        SpecError: naming the entry or the job file and what is wrong.
        FileNotFoundError: if a job file does not exist.
    """
    from carbonscaler.control.spec import load_job_spec

    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not any(isinstance(j, dict) and "job" in j for j in jobs):
        return data
    minutes = data.get("slot_minutes", data.get("slotMinutes", 60))
    entries: list[Any] = []
    for index, entry in enumerate(jobs):
        if not isinstance(entry, dict) or "job" not in entry:
            entries.append(entry)
            continue
        extra = sorted(set(entry) - _BESIDE_JOB_FILE)
        if extra:
            raise SpecError(
                f"{file}: jobs.{index}: an entry given by its job file takes only "
                f"arrival_hours, weight, regions and migrate beside job:; {', '.join(extra)} "
                f"{'comes' if len(extra) == 1 else 'come'} from the job file"
            )
        path = Path(str(entry["job"]))
        path = path if path.is_absolute() else file.resolve().parent / path
        if not path.is_file():
            raise FileNotFoundError(f"{file}: jobs.{index}: job file not found: {path}")
        spec = load_job_spec(path)
        if isinstance(minutes, int) and spec.slot_seconds != minutes * 60:
            raise SpecError(
                f"{path}: slot_seconds is {spec.slot_seconds} but the cluster's slots are "
                f"{minutes} minutes ({file}: slot_minutes); give every job the cluster's slots"
            )
        settings = spec.model_dump(include=_FROM_JOB_FILE, exclude_none=True)
        entries.append({**settings, **entry, "job": str(path)})
    return {**data, "jobs": entries}


def _describe(err: Any, data: dict[str, Any]) -> str:
    """One validation error as ``where: what``, naming a job by its name where it has one."""
    loc = [str(p) for p in err["loc"]]
    if len(loc) >= 2 and loc[0] == "jobs" and loc[1].isdigit():
        jobs = data.get("jobs")
        index = int(loc[1])
        name = None
        if isinstance(jobs, list) and index < len(jobs) and isinstance(jobs[index], dict):
            name = jobs[index].get("name")
        loc[1] = f"{index} ({name})" if name else loc[1]
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(loc) or 'file'}: {message}"


def load_jobs_csv(path: str | os.PathLike[str], *, slot_minutes: int = 60) -> ClusterSpec:
    """A stream of jobs from a CSV, one job per row (see :data:`JOBS_CSV_COLUMNS`), validated
    as a cluster file's jobs; profile paths are taken relative to the file.

    Raises:
        SpecError: naming the file, the row and what is wrong.
        FileNotFoundError: if the file does not exist.
    """
    import csv

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"jobs CSV not found: {file}")
    with file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SpecError(
            f"{file}: no jobs (a header and one row per job: {', '.join(JOBS_CSV_COLUMNS)})"
        )
    jobs: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=2):
        job: dict[str, Any] = {}
        for key, value in row.items():
            if key is None or value is None or not value.strip():
                continue
            job[_CSV_ALIASES.get(key.strip(), key.strip())] = value.strip()
        job.setdefault("name", f"job{number - 1}")
        jobs.append(job)
    return _validated({"slot_minutes": slot_minutes, "jobs": jobs}, file)


def generate_cluster_spec(
    count: int,
    *,
    rate_per_h: float,
    length_hours: tuple[float, float],
    slack: float,
    profiles: Sequence[str],
    min_servers: int,
    max_servers: int,
    seed: int = 0,
    slot_minutes: int = 60,
) -> ClusterSpec:
    """A reproducible stream of jobs: the first at hour 0, then Poisson arrivals (exponential
    gaps at ``rate_per_h``), lengths uniform in ``length_hours`` (whole slots), profiles drawn
    uniformly from ``profiles``, every job with the same bounds and slack.

    Raises:
        SpecError: if a figure is out of range (or a job fails the cluster file's checks).
    """
    import numpy as np

    if count < 1:
        raise SpecError(f"generate at least one job, not {count}")
    if not (math.isfinite(rate_per_h) and rate_per_h > 0):
        raise SpecError(f"the arrival rate must be a positive number per hour, not {rate_per_h}")
    shortest, longest = length_hours
    if not 0 < shortest <= longest:
        raise SpecError(f"job lengths need 0 < shortest <= longest, got {shortest}..{longest}")
    if not profiles:
        raise SpecError("give at least one profile to draw jobs from")
    rng = np.random.default_rng(seed)
    slot_h = slot_minutes / 60.0
    gaps = rng.exponential(1.0 / rate_per_h, count - 1)
    arrivals = np.concatenate([[0.0], np.cumsum(gaps)])
    lengths = rng.uniform(shortest, longest, count)
    lengths = np.maximum(np.round(lengths / slot_h), 1) * slot_h
    picks = rng.integers(0, len(profiles), count)
    jobs = [
        {
            "name": f"job{i + 1:0{len(str(count))}d}",
            "arrival_hours": round(float(arrivals[i]), 6),
            "length_hours": float(lengths[i]),
            "profile": profiles[int(picks[i])],
            "minReplicas": min_servers,
            "maxReplicas": max_servers,
            "slack": slack,
        }
        for i in range(count)
    ]
    try:
        return ClusterSpec.model_validate({"slot_minutes": slot_minutes, "jobs": jobs})
    except ValidationError as exc:
        problems = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors())
        raise SpecError(f"generated jobs: {problems}") from None
