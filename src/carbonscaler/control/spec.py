"""The job spec: what a user hands over to run a job carbon-aware, validated by pydantic.

A YAML file such as::

    name: nbody-demo
    workload:
      module: carbonscaler.examples.nbody   # or command: "{python} my_job.py"
      env: {BODIES: "2000"}
      size_env: ITERATIONS        # optional: the controller sizes the job to length_hours
    profile: auto                 # or a CSV path, or e.g. "amdahl:0.05"
    minReplicas: 1
    maxReplicas: 2
    length_hours: 24              # or: work
    slack: 1.5                    # or: deadline_hours, or deadline (slots, as the reference)
    slot_seconds: 3600
    carbon: {dataset_zone: DE, start: "2020-03-02T00:00Z"}
    policy: carbonscaler
    time_scale_s: 3               # wall seconds per slot (0 = real time)
    checkpoint_dir: runs/nbody-demo

The carbon-aware settings are :class:`carbonscaler.settings.JobSettings`, the same model as a
Kubernetes resource's ``carbonScalerSpec``: camelCase (``minReplicas``, ``lengthHours``) or
snake_case (``min_replicas``, ``length_hours``), at the top level or nested under
``carbonScalerSpec`` as in the reference. Earlier spellings keep working: ``slot_minutes``, and
``workload.restart_overhead_s`` for ``rescale_overhead_s``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from carbonscaler.forecast import ForecastModel, ForecastModelName
from carbonscaler.settings import JobSettings

__all__ = ["CarbonSource", "JobSpec", "SpecError", "Workload", "load_job_spec"]

POLICY_NAMES = ("carbonscaler", "exact", "suspend-resume", "agnostic", "fixed")


def _minutes_to_seconds(minutes: Any) -> Any:
    try:
        return int(minutes) * 60 if float(minutes) == int(minutes) else minutes
    except (TypeError, ValueError):
        return minutes  # left for validation to name


class SpecError(ValueError):
    """A job spec that cannot be used; the message names the field and the fix."""


class Workload(BaseModel):
    """How to launch the job: a ``command`` template, or a Python ``module`` (with ``args``)
    run as ``python -m``.

    ``command`` may use ``{python}``, ``{workers}``, ``{checkpoint_dir}`` and
    ``{progress_file}``; the same values are also passed as ``WORKERS``, ``CHECKPOINT_DIR``
    and ``PROGRESS_FILE`` in the environment.
    """

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(None, min_length=1)
    module: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
        description="a Python module run as "
        "`python -m module` (an entry point instead of a command)",
    )
    args: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    launcher: Literal["plain", "mpi", "auto"] = "plain"
    size_env: str | None = None
    stop_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_entry(self) -> Workload:
        if (self.command is None) == (self.module is None):
            raise ValueError("workload: give exactly one of command or module")
        return self

    @property
    def command_template(self) -> str:
        """The command line template the backend launches."""
        if self.command is not None:
            return self.command
        return f"{{python}} -m {self.module} {self.args}".strip()


class CarbonSource(BaseModel):
    """Where carbon intensity comes from: exactly one of a trace file, an offline dataset
    zone, the carbon service, or a live provider."""

    model_config = ConfigDict(extra="forbid")

    trace: str | None = None
    signal: str = "direct"
    fill_gaps: int | None = Field(
        None,
        ge=0,
        description="longest run of missing values in the trace file to interpolate (default "
        "3; every fill is noted); a longer gap is an error naming it",
    )
    tz: str | None = Field(
        None,
        description="time zone of the trace file's timestamps that carry none, e.g. "
        "Europe/Berlin (default: UTC, with a note saying so)",
    )
    dataset_zone: str | None = None
    year: int | None = None
    start: str | None = None
    service_url: str | None = None
    provider: Literal["electricitymaps", "watttime", "ukgrid"] | None = None
    zone: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CarbonSource:
        chosen = [
            name
            for name, value in (
                ("trace", self.trace),
                ("dataset_zone", self.dataset_zone),
                ("service_url", self.service_url),
                ("provider", self.provider),
            )
            if value
        ]
        if len(chosen) != 1:
            raise ValueError(
                "carbon: give exactly one of trace, dataset_zone, service_url or provider "
                f"(got {chosen or 'none'})"
            )
        if (self.trace or self.dataset_zone) and not self.start:
            raise ValueError(
                "carbon: a trace replay needs start (ISO 8601, e.g. 2022-06-01T00:00Z)"
            )
        if self.provider and not self.zone:
            raise ValueError("carbon: a live provider needs zone")
        return self

    @property
    def is_replay(self) -> bool:
        return bool(self.trace or self.dataset_zone)


class JobSpec(JobSettings):
    """A job to run carbon-aware: its settings (:class:`~carbonscaler.settings.JobSettings`,
    shared with the Kubernetes resources) and how to run it here. See the module docstring."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    workload: Workload
    carbon: CarbonSource
    forecaster: ForecastModelName = Field(
        ForecastModel.PERFECT,
        description="forecast model: perfect, uniform, gaussian, persistence, seasonal or "
        "provider (aliases: real = perfect, pred = provider)",
    )
    forecast_error: float = Field(
        0.0, ge=0, lt=1, description="relative error of uniform/gaussian, a fraction (0.1 = ±10 %)"
    )
    forecast_quantile: float = Field(
        0.5,
        description="for the learned forecaster: the quantile to plan on (0.5, the median; "
        "0.9 assumes a dirtier future)",
    )
    checkpoint_dir: str
    time_scale_s: float = Field(0.0, ge=0)
    profile_seconds: float = Field(6.0, gt=0)
    powercap_root: str | None = Field(
        None,
        description="powercap sysfs tree for measured (RAPL) power; default "
        "/sys/class/powercap; where unreadable, power is the profile's estimate",
    )
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _reference_nesting(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        # The reference CRD keeps its fields under carbonScalerSpec; accept that layout.
        nested = merged.pop("carbonScalerSpec", None)
        if isinstance(nested, dict):
            for key, value in nested.items():
                merged.setdefault(key, value)
        # Earlier spellings: slot_minutes, and the overhead under workload.
        minutes = merged.pop("slot_minutes", merged.pop("slotMinutes", None))
        if minutes is not None:
            merged.setdefault("slot_seconds", _minutes_to_seconds(minutes))
        workload = merged.get("workload")
        if isinstance(workload, dict) and "restart_overhead_s" in workload:
            workload = dict(workload)
            merged.setdefault("rescale_overhead_s", workload.pop("restart_overhead_s"))
            merged["workload"] = workload
        return merged

    @model_validator(mode="after")
    def _runnable_here(self) -> JobSpec:
        if self.workload.size_env and self.length_hours is None:
            raise ValueError("workload.size_env needs length_hours to size the job")
        if self.carbon.is_replay and self.slot_seconds % 60:
            raise ValueError(
                f"a trace replay needs whole-minute slots; slot_seconds is {self.slot_seconds}"
            )
        return self

    @property
    def slot_minutes(self) -> int:
        return self.slot_seconds // 60

    @property
    def restart_overhead_s(self) -> float:
        """Wall seconds of work a rescale loses until measured, at this run's time scale."""
        return self.overhead_s(self.seconds_per_slot)

    @property
    def seconds_per_slot(self) -> float:
        """Wall seconds per slot: the time scale, or the slot's real length."""
        return self.time_scale_s or float(self.slot_seconds)

    def resolve_paths(self, base: Path) -> JobSpec:
        """Relative paths (checkpoint dir, trace, profile CSV, cwd) made relative to ``base``."""

        def absolute(value: str | None) -> str | None:
            if value is None or os.path.isabs(value):
                return value
            return str((base / value).resolve())

        updates: dict[str, Any] = {"checkpoint_dir": absolute(self.checkpoint_dir)}
        if self.profile.endswith(".csv"):
            updates["profile"] = absolute(self.profile)
        carbon = self.carbon.model_copy(update={"trace": absolute(self.carbon.trace)})
        workload = self.workload.model_copy(update={"cwd": absolute(self.workload.cwd or ".")})
        return self.model_copy(update={**updates, "carbon": carbon, "workload": workload})


def read_yaml_mapping(file: Path, kind: str, keys: str) -> dict[str, Any]:
    """The YAML mapping in ``file`` (a job spec, a cluster file...).

    Raises:
        FileNotFoundError: if the file does not exist.
        SpecError: if it is not valid YAML or not a mapping (``keys`` hints at its shape).
    """
    if not file.is_file():
        raise FileNotFoundError(f"{kind} not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{file}: a {kind} is a YAML mapping ({keys})")
    return data


def load_job_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job spec; relative paths are taken from the working directory
    (where the command runs, as for the workload's own paths).

    Raises:
        SpecError: naming the file, the field and what is wrong.
        FileNotFoundError: if the file does not exist.
    """
    file = Path(path)
    data = read_yaml_mapping(file, "job spec", "name:, workload:, ...")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SpecError(f"{file}: {problems}") from None
    return spec.resolve_paths(Path.cwd())
