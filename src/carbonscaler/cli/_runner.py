"""Assemble a controller from a job spec: profile, work, carbon feed, backend, state.

The command line's (``carbonscaler run``/``demo``, and the benchmarks): it picks the concrete
pieces — the local backend, a replay/provider/service feed, RAPL — that the engine-agnostic
controller takes as arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carbonscaler import datasets
from carbonscaler.backends.base import Backend
from carbonscaler.backends.local import LocalBackend
from carbonscaler.backends.profiler import profile_workload
from carbonscaler.backends.simulated import SimulatedBackend
from carbonscaler.clock import ControlClock, VirtualClock
from carbonscaler.control.carbon import (
    BackgroundFeed,
    CarbonFeed,
    CarbonUnavailable,
    ProviderFeed,
    ReplayFeed,
)
from carbonscaler.control.controller import Controller
from carbonscaler.control.spec import JobSpec, SpecError, load_job_spec
from carbonscaler.control.state import STATE_FILE, ControllerState, StateStore
from carbonscaler.forecast import Forecaster, ForecastModel, ForecastSpec, make_forecaster
from carbonscaler.power import DEFAULT_POWERCAP_ROOT, MeterError, MeterUnavailable, RaplMeter
from carbonscaler.profile import ScalingProfile, parse_profile_spec
from carbonscaler.providers import live_provider
from carbonscaler.trace import DEFAULT_MAX_GAP, load_trace

if TYPE_CHECKING:
    from carbonscaler.control.cluster_controller import ClusterController
    from carbonscaler.control.cluster_spec import ClusterSpec
    from carbonscaler.decision import Rules

__all__ = [
    "build_cluster",
    "build_controller",
    "build_simulation",
    "forecaster_at",
    "local_backend",
    "make_feed",
    "make_forecaster_for",
    "state_path",
]


def state_path(spec: JobSpec) -> Path:
    """Where the controller keeps its state for this job."""
    return Path(spec.checkpoint_dir) / STATE_FILE


def make_forecaster_for(spec: JobSpec) -> Forecaster | None:
    """The spec's forecaster (None means the provider's own forecast)."""
    if spec.forecaster is ForecastModel.PROVIDER:
        return None
    return forecaster_at(
        ForecastSpec(spec.forecaster, spec.forecast_error, spec.seed, spec.forecast_quantile),
        spec.slot_hours,
    )


def forecaster_at(forecast: ForecastSpec, slot_hours: float) -> Forecaster:
    """The forecaster ``forecast`` names, for slots of ``slot_hours``."""
    model = forecast.model
    options: dict[str, Any] = {}
    if model.is_noisy:
        options = {"error": forecast.error, "seed": forecast.seed}
    elif model.is_periodic:
        options = {"slots_per_day": max(round(24 / slot_hours), 1)}
    elif model is ForecastModel.LEARNED:
        options = {"slots_per_day": max(round(24 / slot_hours), 1), "quantile": forecast.quantile}
    return make_forecaster(model, **options)


def make_feed(spec: JobSpec) -> CarbonFeed:
    """The carbon feed the spec asks for.

    Raises:
        SpecError: on a source this build cannot use (e.g. the provider forecaster on a trace).
    """
    source = spec.carbon
    forecaster = make_forecaster_for(spec)
    if source.is_replay:
        if forecaster is None:
            raise SpecError(
                "forecaster 'provider' needs a live provider; a trace replay has "
                "its own future: use 'perfect' or a noisy/persistence forecaster"
            )
        start = source.start or ""
        if source.trace:
            trace = load_trace(
                source.trace,
                signal=source.signal,
                max_gap=DEFAULT_MAX_GAP if source.fill_gaps is None else source.fill_gaps,
                tz=source.tz,
            )
        else:
            assert source.dataset_zone is not None
            year = source.year or int(start[:4])
            trace = datasets.load(source.dataset_zone, year)
        trace = trace.resample(spec.slot_minutes)
        return ReplayFeed(
            trace.values, trace.index_of(start), forecaster, f"{trace.zone} ({trace.source})"
        )
    if source.provider:
        chain = live_provider(f"{source.provider}:{source.zone}")
        return ProviderFeed(chain, forecaster)
    from carbonscaler.control.service_feed import ServiceFeed

    assert source.service_url is not None
    return ServiceFeed(source.service_url, forecaster_name=spec.forecaster)


def _profile_and_work(
    spec: JobSpec, on_profile: Callable[[int, int], None] | None, meter: RaplMeter | None
) -> tuple[ScalingProfile, float, dict[str, str], str]:
    env = dict(spec.workload.env)
    if spec.profile != "auto":
        profile = parse_profile_spec(spec.profile, default_servers=spec.max_replicas)
        if spec.work is not None:
            work = spec.work
        else:
            assert spec.length_hours is not None
            work = spec.length_hours * float(profile.throughput[spec.min_replicas])
        kind = "file" if spec.profile.endswith(".csv") else "parametric"
        if kind == "file" and spec.workload.size_env:
            # A measured profile (`carbonscaler profile`) counts the workload's steps per real
            # hour; sized so that it lasts length_hours of job time at the spec's time scale.
            job_hour_s = spec.seconds_per_slot / spec.slot_hours
            env[spec.workload.size_env] = str(math.ceil(work * job_hour_s / 3600.0))
        return profile, work, env, f"{kind}:{spec.profile}"
    result = profile_workload(
        spec.workload.command_template,
        Path(spec.checkpoint_dir) / "profiling",
        max_workers=spec.max_replicas,
        seconds_each=spec.profile_seconds,
        seconds_per_slot=spec.seconds_per_slot,
        slot_hours=spec.slot_hours,
        env=env,
        cwd=spec.workload.cwd,
        size_env=spec.workload.size_env,
        meter=meter,
        on_progress=on_profile,
    )
    profile = result.profile
    if spec.min_replicas > profile.max_servers:
        raise SpecError(
            f"minReplicas is {spec.min_replicas} but only 1..{profile.max_servers} workers could "
            f"be profiled here ({result.note})"
        )
    rate_m = float(profile.throughput[spec.min_replicas])
    if spec.workload.size_env:
        assert spec.length_hours is not None
        work = float(math.ceil(spec.length_hours * rate_m))
        env[spec.workload.size_env] = str(int(work))
    elif spec.work is not None:
        work = spec.work
    elif result.total_steps is not None:
        work = result.total_steps
    else:
        raise SpecError("the workload's size is unknown: set workload.size_env or work")
    source = f"auto ({result.note}; power {result.power_source})"
    return profile, work, env, source


def machine_meter(spec: JobSpec) -> RaplMeter | None:
    """The machine's RAPL package meter where readable, else None (power is then estimated).

    The local backend runs one job per machine, so the machine's package power is the job's
    (as the reference counted it).
    """
    try:
        return RaplMeter(spec.powercap_root or DEFAULT_POWERCAP_ROOT)
    except MeterUnavailable:
        return None


def machine_power(
    meter: RaplMeter | None, profile: ScalingProfile
) -> Callable[[int], tuple[float, str]] | None:
    """Measured power for the local runtime from ``meter``, or None without one.

    Each call returns the average power since the previous one, which is exactly the interval
    the controller is accounting; an interval the meter cannot measure (a counter reset) falls
    back to the profile's figure.
    """
    if meter is None:
        return None

    def power(servers: int) -> tuple[float, str]:
        try:
            reading = meter.read()
        except MeterError:
            return float(profile.power_w[servers]), "estimated:profile"
        return reading.watts, reading.source

    return power


def _saved_or_measured(
    spec: JobSpec,
    store: StateStore,
    on_profile: Callable[[int, int], None] | None,
    meter: RaplMeter | None,
) -> tuple[ScalingProfile, float, dict[str, str], str]:
    """The profile, work, environment and profile source of a job: as saved when it has
    begun (a restart runs the same job), else from its spec (profiling it if ``auto``)."""
    loaded = store.load(spec.name)
    if loaded is None:
        return _profile_and_work(spec, on_profile, meter)
    state = loaded[1]
    profile = ScalingProfile(
        np.array(state.profile_throughput), np.array(state.profile_power_w), name="saved"
    )
    return profile, state.work_required, dict(state.workload_env), state.profile_source


def local_backend(spec: JobSpec, env: dict[str, str]) -> LocalBackend:
    """The spec's workload as local processes, kept in its checkpoint folder."""
    return LocalBackend(
        spec.workload.command_template,
        Path(spec.checkpoint_dir) / "workload",
        env=env,
        cwd=spec.workload.cwd,
        launcher=spec.workload.launcher,
        stop_timeout_s=spec.workload.stop_timeout_s,
    )


def build_controller(
    spec: JobSpec,
    *,
    on_step: Callable[[ControllerState], None] | None = None,
    on_profile: Callable[[int, int], None] | None = None,
    tick_s: float | None = None,
) -> Controller:
    """A controller for ``spec``, resuming its saved state when there is one.

    Raises:
        SpecError, ProfileError, TraceError, DatasetError, ProviderError: on unusable input.
    """
    store = StateStore(state_path(spec))
    meter = machine_meter(spec)
    profile, work, env, source = _saved_or_measured(spec, store, on_profile, meter)
    backend = local_backend(spec, env)
    feed = make_feed(spec)
    if not isinstance(feed, ReplayFeed):
        # A live source can hang: it is asked in the background, never in the control loop.
        feed = BackgroundFeed(feed)
    return Controller(
        spec,
        backend,
        feed,
        profile,
        work,
        store,
        power=machine_power(meter, profile),
        on_step=on_step,
        tick_s=tick_s,
        profile_source=source,
        workload_env=env,
    )


def build_simulation(
    spec: JobSpec,
    *,
    start_s: float = 0.0,
    backend_cls: type[SimulatedBackend] = SimulatedBackend,
    store: StateStore | None = None,
    clock: VirtualClock | None = None,
) -> Controller:
    """The real controller for ``spec`` on a virtual clock, against a simulated workload.

    Nothing is written to the job's run folder (the state lives in memory), so a simulation
    never disturbs a real run of the same spec. A live carbon source is simulated on its
    forecast: the forecast taken now is assumed to come true.

    Args:
        spec: the job.
        start_s: the virtual clock's start (seconds).
        backend_cls: the simulated workload (tests pass one that misbehaves).
        store: where the state goes (default: memory).
        clock: the virtual clock (default: one starting at ``start_s``; a
            :class:`~carbonscaler.clock.PacedClock` lets someone watch).

    Raises:
        SpecError: if the spec's profile is ``auto`` (a simulation runs no workload to
            measure), or the carbon source is unusable.
    """
    if spec.profile == "auto":
        raise SpecError(
            "run --simulate needs an explicit profile: a CSV (nodes,throughput,power, e.g. "
            "from `carbonscaler profile`) or a parametric shape such as 'amdahl:0.05'; "
            "'auto' measures the workload, which a simulation does not run"
        )
    profile, work, env, source = _profile_and_work(spec, None, None)
    clock = clock or VirtualClock(start_s)
    feed = make_feed(spec)
    if not spec.carbon.is_replay:
        try:
            expected = feed.forecast(0, spec.deadline_slots)
        except CarbonUnavailable as exc:
            raise SpecError(f"no carbon forecast to simulate on: {exc}") from exc
        feed = ReplayFeed(expected, 0, make_forecaster("perfect"), f"{feed.source} forecast")
    backend = backend_cls(
        profile,
        work,
        clock,
        seconds_per_slot=spec.seconds_per_slot,
        slot_hours=spec.slot_hours,
        restart_overhead_s=spec.restart_overhead_s,
    )
    return Controller(
        spec,
        backend,
        feed,
        profile,
        work,
        store or StateStore(":memory:"),
        clock=clock,
        profile_source=source,
        workload_env=env,
        # The simulated workload loses exactly the stated overhead; nothing to measure.
        measure_overhead=False,
    )


BackendFactory = Callable[[JobSpec, ScalingProfile, float, dict[str, str]], Backend]
"""Makes a job's backend from its spec, profile, work and environment."""


def build_cluster(
    name: str,
    cluster: ClusterSpec,
    *,
    folder: Path,
    feed: CarbonFeed,
    capacity: int | list[int],
    policy: str,
    rules: Rules | None = None,
    overhead_s: float | None = None,
    time_limit_s: float = 2.0,
    clock: ControlClock | None = None,
    backend_for: BackendFactory | None = None,
    on_step: Callable[[ClusterController], None] | None = None,
) -> ClusterController:
    """The local runtime of a shared cluster: every job of ``cluster`` given by its job file
    run as a :class:`~carbonscaler.control.cluster_controller.ClusterMember`, resuming the
    state saved in ``folder`` when there is one.

    Args:
        name: the cluster's name (its row in the state store).
        cluster: the cluster file, every job given by a job file (``job:``).
        folder: where the cluster's state goes (every job's workload stays in its own
            checkpoint folder).
        feed: the carbon, slot 0 at the cluster's start.
        capacity: servers per slot.
        policy: ``joint`` or a per-job policy (:data:`carbonscaler.cluster.CLUSTER_POLICIES`).
        rules: re-plan threshold and safety margin (default: the job files' most cautious:
            the smallest threshold, the largest margin).
        overhead_s: wall seconds a rescale loses, which plans reserve (default: the largest
            of the jobs' own).
        time_limit_s: seconds a joint plan may take.
        clock: the time (default: wall time).
        backend_for: each job's backend (default: its workload as local processes).
        on_step: called after every tick.

    Raises:
        SpecError: if a job has no job file, or the jobs' slots or time scales differ.
        PlanningError: as :class:`~carbonscaler.cluster.ClusterCore`.
    """
    from carbonscaler.cluster import ClusterCore
    from carbonscaler.control.cluster_controller import (
        ClusterController,
        ClusterMember,
        ShiftedFeed,
    )
    from carbonscaler.decision import Rules
    from carbonscaler.planner.cluster import ClusterJob
    from carbonscaler.planner.policies import Policy

    files = cluster.job_files()
    missing = [job.name for job in cluster.jobs if job.name not in files]
    if missing:
        raise SpecError(
            "a cluster run runs each job's workload, so each job needs its job file, as for "
            f"`carbonscaler run` (`job: JOB.yaml` in the cluster file); without one: "
            f"{', '.join(missing)} (or add --simulate to simulate them)"
        )
    specs = {job_name: load_job_spec(path) for job_name, path in files.items()}
    paces = {spec.seconds_per_slot for spec in specs.values()}
    if len(paces) > 1:
        raise SpecError(
            "every job of a cluster runs at the cluster's pace; give them all the same "
            f"time_scale_s (now {', '.join(sorted(f'{p:g}' for p in paces))} s per slot)"
        )
    store = StateStore(folder / STATE_FILE)
    windows = {job.name: job for job in cluster.cluster_jobs()}
    members: dict[str, ClusterMember] = {}
    jobs: list[ClusterJob] = []
    for job_name, spec in specs.items():
        profile, work, env, source = _saved_or_measured(spec, store, None, None)
        window = windows[job_name]
        backend = (backend_for or _local_backend_for)(spec, profile, work, env)
        member = ClusterMember(
            spec,
            backend,
            ShiftedFeed(feed, window.arrival_slot),
            profile,
            work,
            store,
            clock=clock,
            profile_source=source,
            workload_env=env,
            arrival_slot=window.arrival_slot,
        )
        members[job_name] = member
        jobs.append(
            ClusterJob(
                job_name, member.job, window.arrival_slot, window.deadline_slot, window.weight
            )
        )
    (seconds,) = paces
    if rules is None:
        rules = Rules(
            Policy.CARBONSCALER,
            min(spec.replan_threshold for spec in specs.values()),
            max(spec.safety_margin for spec in specs.values()),
        )
    if overhead_s is None:
        overhead_s = max(spec.restart_overhead_s for spec in specs.values())
    core = ClusterCore(
        jobs,
        capacity,
        policy=policy,
        rules=rules,
        overhead_h=overhead_s / seconds * cluster.slot_hours,
        time_limit_s=time_limit_s,
    )
    return ClusterController(
        name,
        core,
        jobs,
        members,
        feed,
        store,
        seconds_per_slot=seconds,
        clock=clock,
        on_step=on_step,
    )


def _local_backend_for(
    spec: JobSpec, profile: ScalingProfile, work: float, env: dict[str, str]
) -> Backend:
    return local_backend(spec, env)
