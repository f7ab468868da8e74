"""Why ``learned`` is a ridge: gradient-boosted trees measured against it on every shared trace.

Run: ``.venv/bin/pip install lightgbm && .venv/bin/python benchmarks/forecast_alternatives.py``
(LightGBM is not a dependency of carbonscaler; this script is the measurement behind the choice,
docs/validation.md section 6).

For each trace (hourly; the 15-minute one resampled) the second half of the year is forecast
day-ahead (lead times 1–24 h, issued every hour) by:

* ``ridge``: the ``learned`` model (:mod:`carbonscaler.learned`, rolling, as used everywhere);
* ``gbm``: LightGBM trained once on the first half, one model for every lead time (the lead is
  a feature), on the ridge's own features (:func:`carbonscaler.learned._features`) in log space
  made scale-free (lags and seasonal values less the log of the last day's mean, the target
  likewise), so that trees need not extrapolate to levels unseen in training;
* ``mean``: the average of the two.

Printed: each one's day-ahead MAPE as a share of persistence's (yesterday), and the GBM's
training seconds.
"""

from __future__ import annotations

import platform
import sys
import time
import warnings

import numpy as np
from numpy.typing import NDArray

from _shared import shared_dir
from carbonscaler.learned import _LAGS, LearnedForecast, _features, _recent
from carbonscaler.trace import TraceError, load_trace

SHARED = shared_dir() / "traces"
DAY_AHEAD = np.arange(1, 25)
_DAY_MEAN = len(_LAGS) + 1  # the column of the last day's mean in _recent's rows
_SCALED = slice(1, len(_LAGS) + 4)  # lags, the day's mean, the seasonal values


def scale_free(
    log_values: NDArray[np.float64], issued: NDArray[np.int64], lead: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """GBM rows for ``lead`` slots ahead, and the level they are relative to."""
    rows = _features(_recent(log_values, issued, 24), log_values, issued, lead, 24)
    level = rows[:, _DAY_MEAN].copy()
    rows[:, _SCALED] -= level[:, None]
    return np.column_stack([rows[:, 1:], np.full(issued.size, lead)]), level


def mape(forecast: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    ok = actual > 0
    return float(np.mean(np.abs(forecast - actual)[ok] / actual[ok]) * 100)


def main() -> None:
    try:
        import lightgbm
    except ImportError:
        sys.exit("this measurement needs LightGBM: .venv/bin/pip install lightgbm")
    print(f"machine: {platform.platform()}, {platform.machine()}, Python {sys.version.split()[0]}")
    print("command: python benchmarks/forecast_alternatives.py")
    warnings.simplefilter("ignore")
    print("| trace | ridge / persistence | gbm / persistence | mean / persistence | gbm train s |")
    print("|---|---|---|---|---|")
    shares: dict[str, list[float]] = {"ridge": [], "gbm": [], "mean": []}
    for path in sorted(SHARED.rglob("*.csv")):
        try:
            trace = load_trace(path, max_gap=None).resample(60)
        except TraceError:
            continue
        values = np.asarray(trace.values, dtype=np.float64)
        if values.size < 24 * 60:
            continue
        logs = np.log(np.maximum(values, 1.0))
        half = values.size // 2
        train_x, train_y = [], []
        for lead in DAY_AHEAD:
            issued = np.arange(14 * 24, half - lead, dtype=np.int64)
            rows, level = scale_free(logs, issued, int(lead))
            train_x.append(rows)
            train_y.append(logs[issued + lead] - level)
        params = {
            "objective": "l1",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "feature_fraction": 0.8,
            "num_threads": 2,
            "seed": 1,
            "verbose": -1,
        }
        began = time.perf_counter()
        data = lightgbm.Dataset(np.vstack(train_x), np.concatenate(train_y))
        booster = lightgbm.train(params, data, num_boost_round=300)
        train_s = time.perf_counter() - began
        issued = np.arange(half, values.size - 96, dtype=np.int64)
        actual = values[issued[:, None] + DAY_AHEAD[None, :]]
        gbm = np.column_stack(
            [
                np.exp(booster.predict(rows) + level)
                for rows, level in (scale_free(logs, issued, int(lead)) for lead in DAY_AHEAD)
            ]
        )
        ridge = LearnedForecast.fit(values, 1.0, horizon=96).predict(values, issued, 25)[:, 1:]
        naive = values[issued[:, None] + DAY_AHEAD[None, :] - 24]
        base = mape(naive, actual)
        row = {"ridge": ridge, "gbm": gbm, "mean": 0.5 * (ridge + gbm)}
        for name, forecast in row.items():
            shares[name].append(mape(forecast, actual) / base)
        print(
            f"| {trace.zone} ({path.parent.name}/{path.name}) | "
            + " | ".join(f"{shares[name][-1]:.2f}" for name in row)
            + f" | {train_s:.1f} |",
            flush=True,
        )
    print()
    for name, values_ in shares.items():
        print(
            f"{name} / persistence, day-ahead MAPE on the second half: median "
            f"{np.median(values_):.3f}, worst {max(values_):.2f}, over {len(values_)} traces"
        )


if __name__ == "__main__":
    main()
