"""Reproduce the shape of the paper's findings on the real traces of the shared folder.

The folder is ``$CARBONSCALER_SHARED``, default ``../shared`` beside the repository.

Run: ``.venv/bin/python benchmarks/validate_advisor.py > validation.txt`` (a few minutes).
The figures in docs/validation.md come from this script.

Every experiment simulates a job arriving at every hour of the trace's year and averages the
per-start savings against carbon-agnostic (m servers from arrival) and deadline-based
suspend-resume on the same trace.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from _shared import shared_dir
from carbonscaler.advisor import Conditions, ForecastSpec, SweepSpec, run_sweep
from carbonscaler.profile import ScalingProfile, amdahl_profile, load_profile, power_law_profile
from carbonscaler.trace import CarbonTrace, load_trace

SHARED = shared_dir()
EM = SHARED / "traces"
REGIONS = {
    "NL": EM / "electricitymaps-fedstale/NL_2022_hourly.csv",
    "CA-ON": EM / "electricitymaps-fedstale/CA-ON_2022_hourly.csv",
    "DE": EM / "electricitymaps-fedstale/DE_2022_hourly.csv",
    "GB": EM / "electricitymaps-fedstale/GB_2022_hourly.csv",
    "FR": EM / "electricitymaps-fedstale/FR_2022_hourly.csv",
    "BE": EM / "electricitymaps-fedstale/BE_2022_hourly.csv",
    "FI": EM / "electricitymaps-fedstale/FI_2022_hourly.csv",
    "IE": EM / "electricitymaps-fedstale/IE_2022_hourly.csv",
    "SE-SE3": EM / "electricitymaps-fedstale/SE-SE3_2022_hourly.csv",
    "US-CAL-CISO": EM / "electricitymaps-decarbonization-potential/US-CAL-CISO_2022_hourly.csv",
    "ES": EM / "electricitymaps-decarbonization-potential/ES_2022_hourly.csv",
    "NO": EM / "electricitymaps-decarbonization-potential/NO_2022_hourly.csv",
    "BR": EM / "electricitymaps-decarbonization-potential/BR_2022_hourly.csv",
    "US-MIDA-PJM": EM / "electricitymaps-cozybench/US-MIDA-PJM_2023_hourly.csv",
    "IN-WE": EM / "electricitymaps-cozybench/IN-WE_2023_hourly.csv",
    "EIA-ERCO": EM / "eia-sustaindc/ERCO_NG_&_avgCI.csv",
    "EIA-BPAT": EM / "eia-sustaindc/BPAT_NG_&_avgCI.csv",
}
BASE = ["agnostic", "suspend-resume", "carbonscaler", "static-best"]


def sweep(traces: list[CarbonTrace], profile: ScalingProfile, **kw: object) -> pd.DataFrame:
    spec = SweepSpec(traces=traces, profile=profile, length_hours=24, **kw)  # type: ignore[arg-type]
    return run_sweep(spec).summary


def show(frame: pd.DataFrame, columns: list[str]) -> None:
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()


def main() -> None:
    started = time.perf_counter()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traces = {name: load_trace(path) for name, path in REGIONS.items()}
    near_linear = load_profile(SHARED / "profiles" / "nbody100k.csv")
    cols = [
        "zone",
        "slack",
        "policy",
        "mean_savings_vs_agnostic_pct",
        "mean_savings_vs_suspend_resume_pct",
        "server_hours_change_pct",
        "mean_rescales",
    ]

    print("== 1. Headline setup: 24 h job, deadline 1.5x, 1..7 servers, N-body 100k profile ==")
    head = sweep(
        [traces["NL"], traces["CA-ON"]], near_linear, slacks=[1.5], max_servers=[7], policies=BASE
    )
    show(head, cols)

    print("== 2. Savings vs slack (carbonscaler, N-body 100k, 1..7) ==")
    slack = sweep(
        [traces[z] for z in ("NL", "CA-ON", "DE", "US-CAL-CISO")],
        near_linear,
        slacks=[1.0, 1.5, 2.0, 3.0],
        max_servers=[7],
        policies=["carbonscaler", "suspend-resume"],
    )
    table = slack.pivot_table(
        index=["zone", "policy"], columns="slack", values="mean_savings_vs_agnostic_pct"
    )
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))
    print()

    print("== 3. Savings vs the trace's variability, no slack (T = l), 1..7 servers ==")
    regions = sweep(
        list(traces.values()),
        near_linear,
        slacks=[1.0],
        max_servers=[7],
        policies=["carbonscaler", "static-best"],
    )
    cs = regions[regions["policy"] == "carbonscaler"].sort_values("trace_cv")
    show(cs, ["zone", "trace_cv", "mean_savings_vs_agnostic_pct", "server_hours_change_pct"])
    r = float(np.corrcoef(cs["trace_cv"], cs["mean_savings_vs_agnostic_pct"])[0, 1])
    saved = cs["mean_savings_vs_agnostic_pct"]
    print(
        f"{len(cs)} regions: median saving {saved.median():.1f} %, mean {saved.mean():.1f} %, "
        f"Pearson r(CV, saving) = {r:.2f}\n"
    )

    print("== 4. Scalability: linear-ish, diminishing, hardly scaling (NL and CA-ON, 1.5x) ==")
    shapes = {
        "nbody100k (near linear)": near_linear,
        "amdahl 10 %": amdahl_profile(7, 0.10),
        "powerlaw 0.2 (hardly scales)": power_law_profile(7, 0.2),
    }
    for name, profile in shapes.items():
        frame = sweep(
            [traces["NL"], traces["CA-ON"]],
            profile,
            slacks=[1.5],
            max_servers=[7],
            policies=["carbonscaler", "suspend-resume"],
        )
        print(f"-- {name}")
        show(frame, cols[:5])

    print("== 5. Forecast error (uniform noise), NL and CA-ON, 1.5x, N-body 100k ==")
    for model, error in (
        ("perfect", 0.0),
        ("uniform", 0.1),
        ("uniform", 0.3),
        ("persistence", 0.0),
        ("seasonal", 0.0),
    ):
        frame = sweep(
            [traces["NL"], traces["CA-ON"]],
            near_linear,
            slacks=[1.5],
            max_servers=[7],
            policies=["carbonscaler"],
            conditions=Conditions(forecast=ForecastSpec(model, error, seed=1)),
        )
        for row in frame.itertuples():
            print(
                f"{model:<12} ±{error:.0%}  {row.zone:<6} mean {row.mean_emissions_g:7.1f} g "
                f"p95 {row.p95_emissions_g:7.1f} g  saved vs agnostic "
                f"{row.mean_savings_vs_agnostic_pct:5.1f} %  replans {row.mean_replans:4.1f} "
                f"misses {row.deadline_misses}"
            )
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
