"""The accounting's maths: energy from power samples, emissions from energy and intensity.

Pure functions on numbers (Unix seconds, W, J, gCO2eq/kWh); no I/O, no clocks.

**Energy.** Every meter here reports the *average* power over the interval since its
previous reading (RAPL and NVML integrate energy counters; the power server averages its
one-second readings over the exact interval asked). So a sample ``(t_i, P_i)`` says the
job drew ``P_i`` on average over ``(t_{i-1}, t_i]``, and the energy is exactly
``Σ P_i (t_i − t_{i−1})`` — piecewise-constant, backward-looking. The trapezoid rule is for
*point* samples (instantaneous power at ``t_i``); applied to interval averages it would
smear each interval's power into its neighbours and get every step change wrong by half
an interval. :func:`energy_trapezoid_j` is here for point samples (e.g. NVML's
instantaneous power), :func:`energy_piecewise_j` is what the accounting uses.

**Emissions.** Within one sample interval the power is taken as constant (its average),
so energy is spread evenly over time. Carbon intensity is piecewise-constant per carbon
slot; an interval that crosses a slot boundary is split there and each part is charged at
its own slot's intensity: ``g = Σ_parts P · Δt_part / 3.6e6 · c_part``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

ArrayOrFloat = float | NDArray[np.float64]

__all__ = [
    "J_PER_KWH",
    "IntensitySegment",
    "IntervalEmissions",
    "SlotCharge",
    "charge",
    "charge_slots",
    "energy_piecewise_j",
    "energy_trapezoid_j",
    "interval_emissions",
    "j_to_kwh",
    "measured_share",
]

J_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour."""


def charge(watts: ArrayOrFloat, hours: ArrayOrFloat, g_per_kwh: ArrayOrFloat) -> tuple[Any, Any]:
    """Energy (kWh) and emissions (gCO2eq) of ``watts`` drawn for ``hours`` at one intensity.

    Works element-wise on numpy arrays (CarbonAdvisor charges many runs at once).
    """
    energy_kwh = np.multiply(watts, hours) / 1000.0
    return energy_kwh, energy_kwh * g_per_kwh


@dataclass(frozen=True)
class SlotCharge:
    """What one slot's part of an interval cost."""

    slot: int
    hours: float
    energy_kwh: float
    emissions_g: float
    g_per_kwh: float


def charge_slots(
    start_h: float,
    end_h: float,
    slot_hours: float,
    watts: float,
    intensity: Callable[[int], float],
) -> list[SlotCharge]:
    """Energy and emissions of ``watts`` drawn from job hour ``start_h`` to ``end_h``, split
    at slot edges so each part is charged its own slot's ``intensity(slot)`` (gCO2eq/kWh).

    This is how every runtime accounts time (the controller between ticks, the operator
    between passes); CarbonAdvisor's steps never cross a slot edge and use :func:`charge`.
    """
    parts: list[SlotCharge] = []
    at = start_h
    while at < end_h - 1e-12:
        slot = math.floor(at / slot_hours + 1e-12)
        until = min(end_h, (slot + 1) * slot_hours)
        c = float(intensity(slot))
        energy_kwh, emissions_g = charge(watts, until - at, c)
        parts.append(SlotCharge(slot, until - at, float(energy_kwh), float(emissions_g), c))
        at = until
    return parts


def j_to_kwh(energy_j: float) -> float:
    """Joules to kilowatt-hours."""
    return energy_j / J_PER_KWH


def _check_series(times_s: Sequence[float], watts: Sequence[float]) -> None:
    if len(times_s) != len(watts):
        raise ValueError(f"{len(times_s)} times but {len(watts)} power values")
    for a, b in itertools.pairwise(times_s):
        if not b >= a:
            raise ValueError(f"sample times must not decrease ({a} then {b})")
    for w in watts:
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"power must be finite and >= 0 W, not {w}")


def energy_piecewise_j(times_s: Sequence[float], watts: Sequence[float]) -> float:
    """Energy from interval-average samples: ``watts[i]`` held over ``(times_s[i-1], times_s[i]]``.

    ``watts[0]`` only marks the start (its interval began before ``times_s[0]``).

    Raises:
        ValueError: If the lengths differ, times decrease or a power is negative.
    """
    _check_series(times_s, watts)
    return sum(w * (t1 - t0) for t0, t1, w in zip(times_s, times_s[1:], watts[1:], strict=False))


def energy_trapezoid_j(times_s: Sequence[float], watts: Sequence[float]) -> float:
    """Energy from point samples (instantaneous power at each time), trapezoid rule.

    Raises:
        ValueError: If the lengths differ, times decrease or a power is negative.
    """
    _check_series(times_s, watts)
    return sum(
        (w0 + w1) / 2 * (t1 - t0)
        for t0, t1, w0, w1 in zip(times_s, times_s[1:], watts, watts[1:], strict=False)
    )


@dataclass(frozen=True)
class IntensitySegment:
    """Carbon intensity over ``[start_s, end_s)``, Unix seconds."""

    start_s: float
    end_s: float
    g_per_kwh: float
    stale: bool = False
    """True when the value is old or a fallback (the provider said so, or we held it)."""


@dataclass(frozen=True)
class IntervalEmissions:
    """Emissions of one sample interval."""

    emissions_g: float
    intensity_g_per_kwh: float
    """Time-weighted mean intensity over the interval (= emissions / energy)."""
    stale: bool
    """True when any part was charged at a stale intensity."""
    parts: tuple[tuple[float, float, float], ...]
    """``(start_s, end_s, g_per_kwh)`` of each part the interval was split into."""


def interval_emissions(
    start_s: float, end_s: float, energy_j: float, segments: Sequence[IntensitySegment]
) -> IntervalEmissions:
    """Emissions of ``energy_j`` drawn evenly over ``[start_s, end_s]``, split at slot edges.

    Parts of the interval no segment covers take the nearest segment's value (the
    intensity in force before or after) and are flagged stale.

    Raises:
        ValueError: If ``segments`` is empty, the interval is reversed or energy negative.
    """
    if not segments:
        raise ValueError("no carbon intensity for the interval")
    if end_s < start_s:
        raise ValueError(f"interval ends ({end_s}) before it starts ({start_s})")
    if not (math.isfinite(energy_j) and energy_j >= 0):
        raise ValueError(f"energy must be finite and >= 0 J, not {energy_j}")
    ordered = sorted(segments, key=lambda s: s.start_s)
    if end_s == start_s:
        return IntervalEmissions(0.0, ordered[0].g_per_kwh, ordered[0].stale, ())
    # Segment i holds from its start until the next one starts (the first also backwards,
    # the last also forwards); any held stretch outside a segment's own span is stale.
    parts: list[tuple[float, float, float]] = []
    stale = False
    for i, seg in enumerate(ordered):
        held_from = -math.inf if i == 0 else seg.start_s
        held_to = ordered[i + 1].start_s if i + 1 < len(ordered) else math.inf
        lo, hi = max(start_s, held_from), min(end_s, held_to)
        if hi <= lo:
            continue
        parts.append((lo, hi, seg.g_per_kwh))
        stale = stale or seg.stale or lo < seg.start_s or hi > seg.end_s
    duration_s = end_s - start_s
    power_w = energy_j / duration_s
    emissions_g = sum(power_w * (hi - lo) / J_PER_KWH * c for lo, hi, c in parts)
    energy_kwh = energy_j / J_PER_KWH
    mean = emissions_g / energy_kwh if energy_kwh > 0 else _time_mean(parts)
    return IntervalEmissions(emissions_g, mean, stale, tuple(parts))


def _time_mean(parts: Sequence[tuple[float, float, float]]) -> float:
    total_s = sum(hi - lo for lo, hi, _ in parts)
    return sum((hi - lo) * c for lo, hi, c in parts) / total_s if total_s > 0 else parts[0][2]


def measured_share(measured: float, total: float) -> float | None:
    """The measured fraction of a total (energy or emissions), or None when nothing was drawn."""
    return measured / total if total > 0 else None
