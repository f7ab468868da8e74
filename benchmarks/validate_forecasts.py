"""Forecasting on every trace of the shared folder: day-ahead error, and the savings kept.

The folder is ``$CARBONSCALER_SHARED``, default ``../shared`` beside the repository.

Run: ``.venv/bin/python benchmarks/validate_forecasts.py`` (a few minutes; the learned models
are cached). The forecasting section of docs/validation.md comes from this script.

For each trace (hourly; the 15-minute one resampled): the day-ahead MAPE (lead times 1–24 h, a
forecast issued every hour after two weeks of warm-up) of ``persistence``, ``seasonal`` and
``learned``, the time to train ``learned`` on the trace, and the share of the perfect-forecast
savings CarbonScaler keeps with each model — CarbonAdvisor, a 24 h job at 1..8 servers
(Amdahl, 5 % serial), deadline 1.5 × its length, re-planning as usual, 400 evenly spaced starts:
``kept = (agnostic − model) / (agnostic − perfect)`` from the mean emissions.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

from _shared import shared_dir
from carbonscaler.advisor import Conditions, SweepSpec, run_sweep
from carbonscaler.forecast import ForecastSpec
from carbonscaler.forecast_evaluation import evaluate_forecasts
from carbonscaler.learned import learned_model
from carbonscaler.profile import amdahl_profile
from carbonscaler.trace import TraceError, load_trace

SHARED = shared_dir() / "traces"
MODELS = ("persistence", "seasonal", "learned")
STARTS = 400


def savings_kept(trace: object, model: str) -> float:
    emissions = {}
    for forecast in ("perfect", model):
        spec = SweepSpec(
            traces=[trace],  # type: ignore[list-item]
            profile=amdahl_profile(8, 0.05),
            length_hours=24,
            slacks=[1.5],
            min_servers=[1],
            max_servers=[8],
            policies=["agnostic", "carbonscaler"],
            starts=STARTS,
            conditions=Conditions(forecast=ForecastSpec(forecast)),
        )
        summary = run_sweep(spec).summary.set_index("policy")["mean_emissions_g"]
        emissions[forecast] = float(summary["carbonscaler"])
        agnostic = float(summary["agnostic"])
    return (agnostic - emissions[model]) / (agnostic - emissions["perfect"])


def main() -> None:
    # The training time is for an empty cache: a cache of its own, removed at the end.
    os.environ["CARBONSCALER_CACHE"] = tempfile.mkdtemp(prefix="carbonscaler-validate-")
    try:
        report()
    finally:
        shutil.rmtree(os.environ["CARBONSCALER_CACHE"], ignore_errors=True)


def report() -> None:
    print(f"machine: {platform.platform()}, {platform.machine()}, Python {sys.version.split()[0]}")
    print("command: python benchmarks/validate_forecasts.py")
    warnings.simplefilter("ignore")
    header = (
        "| trace | MAPE persistence | seasonal | learned | learned / persistence | "
        "train s | kept persistence | seasonal | learned |"
    )
    print(header)
    print("|---" * 9 + "|")
    ratios, kept_all = [], {m: [] for m in MODELS}
    for path in sorted(SHARED.rglob("*.csv")):
        try:
            trace = load_trace(path, max_gap=None).resample(60)  # PJM: 22 h filled, as before
        except TraceError as exc:
            print(f"| {path.name} | skipped: {exc} |")
            continue
        if len(trace.values) < 24 * 60:
            continue
        began = time.perf_counter()
        learned_model(trace.values, 1.0, horizon=96)
        train_s = time.perf_counter() - began
        mape = {
            m: evaluate_forecasts(trace.values, 1.0, ForecastSpec(m), horizon_h=24).mape_pct
            for m in MODELS
        }
        kept = {m: savings_kept(trace, m) for m in MODELS}
        ratio = mape["learned"] / mape["persistence"]
        ratios.append(ratio)
        for m in MODELS:
            kept_all[m].append(kept[m])
        name = f"{trace.zone} ({path.parent.name}/{path.name})"
        print(
            f"| {name} | {mape['persistence']:.1f} | {mape['seasonal']:.1f} | "
            f"{mape['learned']:.1f} | {ratio:.2f} | {train_s:.1f} | "
            f"{100 * kept['persistence']:.0f} % | {100 * kept['seasonal']:.0f} % | "
            f"{100 * kept['learned']:.0f} % |"
        )
    print()
    print(
        f"learned / persistence day-ahead MAPE: median {np.median(ratios):.2f}, "
        f"worst {max(ratios):.2f}, best {min(ratios):.2f} over {len(ratios)} traces"
    )
    for m in MODELS:
        print(f"perfect-forecast savings kept, {m}: mean {100 * np.mean(kept_all[m]):.0f} %")


if __name__ == "__main__":
    main()
