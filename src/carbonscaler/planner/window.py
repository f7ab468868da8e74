"""The best window: when to start a job that cannot scale or pause, to emit the least.

A job of fixed length at a fixed power emits in proportion to the mean intensity over the
hours it runs, so the cleanest start is the one whose window has the least mean intensity —
the question the Carbon Aware SDK's "best time to run" answers. A length that is not a whole
number of slots covers its last slot in part, and starts are at slot boundaries. Pure maths:
the carbon service and ``carbonscaler best-window`` add the data and the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from carbonscaler.planner.model import FloatArray, PlanningError

__all__ = ["Window", "best_window"]


@dataclass(frozen=True)
class Window:
    """The best start within a forecast, and what it saves against starting at once.

    Args:
        start_slot: slots from the forecast's first slot to the best start.
        duration_slots: the job's length in slots (may end inside a slot).
        mean_g_per_kwh: mean intensity over the best window, gCO2eq/kWh.
        now_g_per_kwh: mean intensity over the window starting at once.
    """

    start_slot: int
    duration_slots: float
    mean_g_per_kwh: float
    now_g_per_kwh: float

    @property
    def saving_pct(self) -> float:
        """Emissions saved against starting at once, in percent (0 when starting now is best)."""
        if self.now_g_per_kwh <= 0:
            return 0.0
        return 100.0 * (1.0 - self.mean_g_per_kwh / self.now_g_per_kwh)


def best_window(carbon: FloatArray, duration_slots: float) -> Window:
    """The start (a slot of ``carbon``) whose window of ``duration_slots`` has the least mean
    intensity; the earliest among equals.

    Args:
        carbon: intensity per slot, gCO2eq/kWh, from now to the latest the job may end.
        duration_slots: the job's length, in slots (> 0; a fraction covers part of the last).

    Raises:
        PlanningError: for a non-positive length, a forecast with gaps, or a window that does
            not fit in the forecast (saying how long the forecast is).
    """
    values = np.asarray(carbon, dtype=np.float64)
    if not (math.isfinite(duration_slots) and duration_slots > 0):
        raise PlanningError(f"the job's length must be positive, got {duration_slots} slots")
    if not np.all(np.isfinite(values)):
        raise PlanningError("the forecast has gaps (missing values); fill them or pick a window")
    whole = math.floor(duration_slots + 1e-9)
    part = max(duration_slots - whole, 0.0) if duration_slots - whole > 1e-9 else 0.0
    span = whole + (1 if part > 0 else 0)
    if span > len(values):
        raise PlanningError(
            f"a {duration_slots:g}-slot job does not fit in a {len(values)}-slot forecast; "
            f"look further ahead (at least {span} slots) or shorten the job"
        )
    starts = len(values) - span + 1
    # Each window summed on its own (not prefix-sum differences), so equal windows tie exactly.
    totals = (
        np.lib.stride_tricks.sliding_window_view(values[: whole + starts - 1], whole).sum(axis=1)
        if whole
        else np.zeros(starts)
    )
    if part > 0:
        totals = totals + part * values[whole : whole + starts]
    best = int(np.argmin(totals))  # argmin takes the earliest of equal minima
    return Window(
        start_slot=best,
        duration_slots=float(duration_slots),
        mean_g_per_kwh=float(totals[best] / duration_slots),
        now_g_per_kwh=float(totals[0] / duration_slots),
    )
