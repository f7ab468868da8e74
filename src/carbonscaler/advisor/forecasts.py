"""Forecasts for many runs at once, as the what-if simulator issues them.

A forecast issued at absolute slot ``a`` for slots ``a..a+h-1`` is one of:

* ``perfect`` — the actual trace (the reference's ``REAL``);
* ``uniform`` / ``gaussian`` — the actual values times ``1 + ε``, ``ε ~ U(-x, x)`` or
  ``N(0, x)``, seeded, drawn afresh for every issue so a re-plan sees a new forecast;
* ``persistence`` — the value one day earlier, repeated (slot ``a + h`` takes the value of
  ``a + h - ceil(h / P) · P`` with ``P`` a day of slots);
* ``seasonal`` — the same with ``P`` a week of slots (seasonal naive).

As in :mod:`carbonscaler.forecast`, which the runtime uses, the current slot ``a`` is observed,
not forecast: every model returns its actual value. The history models need data before ``a``;
near the start of a trace they fall back to the earliest values available.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carbonscaler.planner.model import FloatArray, IntArray

__all__ = ["FORECAST_MODELS", "ForecastSpec", "issue_forecasts"]

FORECAST_MODELS: tuple[str, ...] = ("perfect", "uniform", "gaussian", "persistence", "seasonal")


@dataclass(frozen=True)
class ForecastSpec:
    """How forecasts are made.

    Args:
        model: one of :data:`FORECAST_MODELS`.
        error: relative error ``x`` for the noise models (0.1 = ±10 %).
        seed: seed for the noise models.
    """

    model: str = "perfect"
    error: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in FORECAST_MODELS:
            raise ValueError(
                f"unknown forecast model {self.model!r}; choose one of {', '.join(FORECAST_MODELS)}"
            )
        if not 0.0 <= self.error < 1.0 and self.model in ("uniform", "gaussian"):
            raise ValueError(f"forecast error must be within [0, 1), got {self.error}")

    @property
    def is_perfect(self) -> bool:
        return self.model == "perfect" or (
            self.model in ("uniform", "gaussian") and self.error == 0.0
        )


def issue_forecasts(
    spec: ForecastSpec,
    trace: FloatArray,
    issued_at: IntArray,
    horizon: int,
    slot_hours: float,
    *,
    draw: int = 0,
) -> FloatArray:
    """Forecasts issued at absolute slots ``issued_at`` for the next ``horizon`` slots.

    Args:
        spec: the forecast model.
        trace: the actual intensity of the whole trace (gCO2eq/kWh); slots past its end are NaN.
        issued_at: ``(B,)`` absolute slot of each issue.
        horizon: slots to forecast.
        slot_hours: slot length, for the history periods.
        draw: distinguishes successive issues for the same runs (mixed into the noise seed).

    Returns:
        ``(B, horizon)`` forecasts, non-negative.
    """
    offsets = issued_at[:, None] + np.arange(horizon)[None, :]
    padded = np.concatenate([trace, np.full(horizon + 1, np.nan)])
    actual: FloatArray = padded[np.minimum(offsets, len(padded) - 1)]
    if spec.model == "perfect":
        return actual
    if spec.model in ("uniform", "gaussian"):
        rng = np.random.default_rng([spec.seed, draw])
        if spec.model == "uniform":
            noise = rng.uniform(-spec.error, spec.error, actual.shape)
        else:
            noise = rng.normal(0.0, spec.error, actual.shape)
        noise[:, 0] = 0.0  # the current slot is observed
        noisy: FloatArray = np.maximum(actual * (1.0 + noise), 0.0)
        return noisy
    period = max(round((24.0 if spec.model == "persistence" else 168.0) / slot_hours), 1)
    ahead = np.arange(horizon)[None, :]
    back = -(-ahead // period) * period  # whole periods back; 0 for the current slot
    source = np.clip(issued_at[:, None] + ahead - back, 0, len(trace) - 1)
    return np.asarray(trace[source], dtype=np.float64)
