"""The profiler: measure a workload's scaling curve by running it at 1..K workers.

Each count runs from scratch in its own folder for ``seconds_each`` wall seconds; throughput is
the rate at which the first column of the progress file (steps) advances after the first line
(so start-up is not counted), converted to steps per *job hour* with the run's time scale.

Power is measured where a meter is given and readable (RAPL: the machine's average power over
each count's window, the idle share included, since the job holds the machine while it runs).
Elsewhere it is the node estimate of :func:`~carbonscaler.power.meter.estimated_power` — the
machine's idle power, paid once while the job runs, plus a dynamic share per busy worker — and
the profile says so. A flat "W per worker" figure would charge the idle power again for every
worker and hide that a second worker on an already powered machine costs only its dynamic
share. Counts above the machine's cores are not profiled: an oversubscribed measurement would
describe the machine, not the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carbonscaler.backends.base import WorkloadState
from carbonscaler.backends.local import LocalBackend
from carbonscaler.power.meter import MeterError, PowerFunction, PowerMeter, estimated_power
from carbonscaler.profile import ProfileError, ScalingProfile
from carbonscaler.workload import ProgressError, ProgressRow, read_progress

__all__ = ["ProfileResult", "profile_workload"]

_HUGE_SIZE = "1000000000"


@dataclass(frozen=True)
class ProfileResult:
    """A measured profile and how it was measured."""

    profile: ScalingProfile
    steps_per_s: list[float]
    total_steps: float | None  # the workload's size, when it reported it (step / percent)
    power_source: str
    note: str


def profile_workload(
    command: str,
    scratch: Path,
    *,
    max_workers: int,
    seconds_each: float,
    seconds_per_slot: float,
    slot_hours: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    size_env: str | None = None,
    power: PowerFunction | None = None,
    meter: PowerMeter | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ProfileResult:
    """Measure throughput and power at 1..K workers, K = min(max_workers, cores).

    Args:
        command: the workload's command template.
        scratch: folder for the profiling runs (removed afterwards).
        max_workers: the most workers the job may use.
        seconds_each: wall seconds measured per worker count.
        seconds_per_slot: wall seconds per slot of the run being profiled for.
        slot_hours: slot length in job hours.
        env: the workload's environment.
        cwd: its working directory.
        size_env: if set, the variable is made huge so the workload does not finish early.
        power: the estimate of watts and source at ``k`` workers, used where ``meter`` is
            absent or fails (default: :func:`~carbonscaler.power.meter.estimated_power`).
        meter: a meter of the machine's power (e.g. RAPL), read over each count's window.
        on_progress: called with ``(k, K)`` as each count starts.

    Raises:
        ProfileError: if the workload reports no progress at some count.
    """
    estimate = power or estimated_power()
    cores = os.cpu_count() or 1
    top = max(1, min(max_workers, cores))
    run_env = dict(env or {})
    if size_env:
        run_env[size_env] = _HUGE_SIZE
    rates: list[float] = []
    watts: list[float] = []
    sources: set[str] = set()
    total_steps: float | None = None
    job_hour_s = seconds_per_slot / slot_hours
    for k in range(1, top + 1):
        if on_progress is not None:
            on_progress(k, top)
        folder = scratch / f"profile-{k}"
        shutil.rmtree(folder, ignore_errors=True)
        backend = LocalBackend(command, folder, env=run_env, cwd=cwd, stop_timeout_s=10)
        backend.start(k)
        try:
            first = _wait_for_progress(backend, timeout_s=max(30.0, seconds_each * 3))
            if first is None:
                raise ProfileError(
                    f"the workload reported no progress in {folder / 'progress.csv'} at {k} "
                    f"workers; see {backend.log_file}"
                )
            _start_window(meter)
            t0, step0 = time.monotonic(), first.step
            last = first
            t1 = t0
            while time.monotonic() - t0 < seconds_each and backend.poll() is WorkloadState.RUNNING:
                time.sleep(0.05)
                now = _read(backend)
                if now is not None and now.step > last.step:
                    last, t1 = now, time.monotonic()
            if last.percent > 0 and not size_env:
                total_steps = last.step * 100.0 / last.percent
            if t1 <= t0 or last.step <= step0:
                raise ProfileError(
                    f"the workload made no measurable progress in {seconds_each:g} s at {k} "
                    "workers; give it more time (profile_seconds) or a bigger size"
                )
            rates.append((last.step - step0) / (t1 - t0))
            w, source = _window_power(meter) or estimate(k)
            watts.append(w)
            sources.add(source)
        finally:
            backend.kill()
            shutil.rmtree(folder, ignore_errors=True)
    throughput = np.array([0.0] + [r * job_hour_s for r in rates])
    power_w = np.maximum.accumulate(np.array([0.0, *watts]))
    note = f"measured at 1..{top} workers for {seconds_each:g} s each"
    if top < max_workers:
        note += f" (this machine has {cores} cores; counts above {top} were not profiled)"
    profile = ScalingProfile(throughput, power_w, name="auto")
    return ProfileResult(profile, rates, total_steps, ",".join(sorted(sources)), note)


def _start_window(meter: PowerMeter | None) -> None:
    """Start a measurement window: a meter's read covers the time since its previous read."""
    if meter is None:
        return
    # A counter reset here is harmless: the window's own read decides.
    with contextlib.suppress(MeterError):
        meter.read()


def _window_power(meter: PowerMeter | None) -> tuple[float, str] | None:
    """Average watts and source over the window just ended; None when not measurable."""
    if meter is None:
        return None
    try:
        reading = meter.read()
    except MeterError:
        return None
    return reading.watts, reading.source


def _read(backend: LocalBackend) -> ProgressRow | None:
    """The workload's last report; a malformed one stops the profiling (it cannot measure)."""
    try:
        return read_progress(backend.progress_file)
    except ProgressError as exc:
        raise ProfileError(f"cannot measure the workload: {exc}") from None


def _wait_for_progress(backend: LocalBackend, timeout_s: float) -> ProgressRow | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = _read(backend)
        if line is not None:
            return line
        if backend.poll() is not WorkloadState.RUNNING:
            return None
        time.sleep(0.02)
    return None
