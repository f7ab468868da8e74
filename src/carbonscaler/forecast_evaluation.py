"""How good a forecast model is on a trace: a rolling-origin evaluation, as the forecasting
literature reports it.

A forecast is issued at every slot of the trace (after a warm-up, so the history models and the
learned model have something to go on) for the next four days; each is scored against what then
happened. Scores are per lead-time band — 1–6, 7–24, 25–48 and 49–96 hours — and for the horizon
asked (lead times 1..horizon): MAPE (mean absolute percentage error, over slots with a positive
actual value), MAE (gCO2eq/kWh), and, for ``learned``, the coverage of its 80 % interval (the
share of actual values between its 0.1 and 0.9 quantiles).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from carbonscaler.forecast import ForecastError, ForecastModel, ForecastSpec, issue_forecasts

__all__ = ["BANDS_H", "BandScore", "ForecastEvaluation", "evaluate_forecasts"]

BANDS_H = ((1, 6), (7, 24), (25, 48), (49, 96))
"""Lead-time bands, hours."""
WARMUP_DAYS = 14
_MAX_LEAD_H = 96


@dataclass(frozen=True)
class BandScore:
    """Scores over lead times ``first_h..last_h``."""

    first_h: float
    last_h: float
    mape_pct: float
    mae_g_per_kwh: float
    coverage_pct: float | None
    points: int


@dataclass(frozen=True)
class ForecastEvaluation:
    """A model's scores on a trace, per band and for the horizon asked."""

    model: str
    horizon_h: float
    mape_pct: float
    mae_g_per_kwh: float
    coverage_pct: float | None
    points: int
    bands: tuple[BandScore, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bands"] = [asdict(b) for b in self.bands]
        return out


def _score(
    forecast: NDArray[np.float64],
    actual: NDArray[np.float64],
    low: NDArray[np.float64] | None,
    high: NDArray[np.float64] | None,
) -> tuple[float, float, float | None, int]:
    valid = np.isfinite(actual) & np.isfinite(forecast)
    positive = valid & (actual > 0)
    errors = np.abs(forecast - actual)
    mape = float(np.mean(errors[positive] / actual[positive]) * 100) if positive.any() else math.nan
    mae = float(np.mean(errors[valid])) if valid.any() else math.nan
    coverage = None
    if low is not None and high is not None and valid.any():
        inside = (actual >= low) & (actual <= high)
        coverage = float(np.mean(inside[valid]) * 100)
    return mape, mae, coverage, int(valid.sum())


def evaluate_forecasts(
    values: NDArray[np.float64],
    slot_hours: float,
    spec: ForecastSpec,
    *,
    horizon_h: float = 24.0,
) -> ForecastEvaluation:
    """Rolling-origin evaluation of ``spec`` on ``values`` (see the module docstring).

    Raises:
        ForecastError: if the trace is too short (two weeks of warm-up plus four days) or the
            horizon is outside 1..96 h.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 1 <= horizon_h <= _MAX_LEAD_H:
        raise ForecastError(f"the horizon is 1 to {_MAX_LEAD_H} hours, not {horizon_h}")
    per_h = 1.0 / slot_hours
    leads = max(round(_MAX_LEAD_H * per_h), 1)
    warmup = round(WARMUP_DAYS * 24 * per_h)
    issued = np.arange(warmup, values.size - leads, dtype=np.int64)
    if issued.size == 0:
        days = (warmup + leads) * slot_hours / 24
        raise ForecastError(
            f"the trace has {values.size} slots; an evaluation needs at least {days:g} days "
            "(two weeks of warm-up and four days ahead)"
        )
    forecast = issue_forecasts(spec, values, issued, leads + 1, slot_hours)[:, 1:]
    actual = values[issued[:, None] + np.arange(1, leads + 1)[None, :]]
    low = high = None
    if spec.model is ForecastModel.LEARNED:
        low = issue_forecasts(
            ForecastSpec(ForecastModel.LEARNED, quantile=0.1), values, issued, leads + 1, slot_hours
        )[:, 1:]
        high = issue_forecasts(
            ForecastSpec(ForecastModel.LEARNED, quantile=0.9), values, issued, leads + 1, slot_hours
        )[:, 1:]
    lead_h = np.arange(1, leads + 1) * slot_hours

    def columns(first_h: float, last_h: float) -> NDArray[np.bool_]:
        return (lead_h >= first_h - 1e-9) & (lead_h <= last_h + 1e-9)

    def pick(
        cols: NDArray[np.bool_],
    ) -> tuple[float, float, float | None, int]:
        return _score(
            forecast[:, cols],
            actual[:, cols],
            None if low is None else low[:, cols],
            None if high is None else high[:, cols],
        )

    bands = tuple(BandScore(a, b, *pick(columns(a, b))) for a, b in BANDS_H)
    mape, mae, coverage, points = pick(columns(slot_hours, horizon_h))
    return ForecastEvaluation(str(spec.model), horizon_h, mape, mae, coverage, points, bands)
