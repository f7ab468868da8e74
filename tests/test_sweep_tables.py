"""The sweep's tables, built from the simulations' arrays, equal pandas' own computation.

:func:`carbonscaler.advisor.run_sweep` computes every saving against the baselines of the same
start and every statistic of the summary from the outcome arrays directly (no merges, no
groupby). Here the same tables are computed the plain pandas way — merge each run with its
baselines' runs on the scenario and start, then group by scenario and policy — and the two must
agree exactly, NaN savings (a baseline that emitted nothing) and unfinished runs included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from carbonscaler.advisor import Conditions, ForecastSpec, SweepSpec, run_sweep
from carbonscaler.planner import POLICIES
from carbonscaler.profile import amdahl_profile
from carbonscaler.trace import CarbonTrace, from_values

KEYS = ["trace", "zone", "slack", "min_servers", "max_servers", "start"]
GROUP = ["trace", "zone", "slack", "min_servers", "max_servers", "policy"]


def _trace(seed: int, zone: str) -> CarbonTrace:
    rng = np.random.default_rng(seed)
    hours = np.arange(400)
    values = 300 + 150 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 40, 400)
    values[100:140] = 0.0  # free hours: a baseline that emits nothing has no saving to compare
    values[-60:] = np.linspace(300, 900, 60)  # rising: threshold runs near the end never finish
    return from_values(np.clip(np.round(values, -1), 0, None), zone=zone)


def _savings_by_merge(runs: pd.DataFrame) -> pd.DataFrame:
    out = runs
    for baseline, column in (
        ("agnostic", "savings_vs_agnostic_pct"),
        ("suspend-resume", "savings_vs_suspend_resume_pct"),
    ):
        base = runs[runs["policy"] == baseline][[*KEYS, "emissions_g", "server_hours"]]
        base = base.rename(columns={"emissions_g": "_base_g", "server_hours": "_base_h"})
        out = out.merge(base, on=KEYS, how="left")
        with np.errstate(divide="ignore", invalid="ignore"):
            out[column] = 100.0 * (1.0 - out["emissions_g"] / out["_base_g"])
            if baseline == "agnostic":
                out["server_hours_change_pct"] = 100.0 * (out["server_hours"] / out["_base_h"] - 1)
        out = out.drop(columns=["_base_g", "_base_h"])
    return out


def _summary_by_groupby(runs: pd.DataFrame, cv: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for key, group in runs.groupby(GROUP, sort=False):
        trace, zone, slack, m, top, policy = key  # type: ignore[misc]
        emissions = group["emissions_g"].to_numpy()
        misses = int((~group["deadline_met"]).sum())
        row = {
            "trace": trace,
            "zone": zone,
            "slack": float(slack),
            "min_servers": int(m),
            "max_servers": int(top),
            "policy": policy,
            "runs": len(group),
            "mean_emissions_g": float(np.mean(emissions)),
            "median_emissions_g": float(np.median(emissions)),
            "p5_emissions_g": float(np.percentile(emissions, 5)),
            "p95_emissions_g": float(np.percentile(emissions, 95)),
            "mean_savings_vs_agnostic_pct": float(group["savings_vs_agnostic_pct"].mean()),
            "median_savings_vs_agnostic_pct": float(group["savings_vs_agnostic_pct"].median()),
            "mean_savings_vs_suspend_resume_pct": float(
                group["savings_vs_suspend_resume_pct"].mean()
            ),
            "deadline_misses": misses,
            "deadline_miss_pct": 100.0 * misses / len(group),
            "mean_completion_hours": float(group["completion_hours"].mean()),
            "mean_server_hours": float(group["server_hours"].mean()),
            "server_hours_change_pct": float(group["server_hours_change_pct"].mean()),
            "mean_rescales": float(group["rescales"].mean()),
            "mean_replans": float(group["replans"].mean()),
            "not_completed": int((~group["completed"]).sum()),
            "trace_cv": cv[trace],
            "mean_cost": float(group["cost"].mean()),
        }
        rows.append(row)
    return rows


@pytest.mark.parametrize("noisy", [False, True], ids=["as-planned", "noisy"])
def test_tables_equal_pandas_merge_and_groupby(noisy: bool) -> None:
    traces = [_trace(1, "A"), _trace(2, "B")]
    cond = (
        Conditions(forecast=ForecastSpec("uniform", 0.1, seed=3), profile_error=0.05)
        if noisy
        else Conditions()
    )
    spec = SweepSpec(
        traces=traces,
        profile=amdahl_profile(4, 0.05),
        length_hours=8,
        slacks=[1.0, 2.0],
        min_servers=[1, 2],
        max_servers=[2, 4],
        conditions=cond,
        price_per_server_hour=0.7,
    )
    result = run_sweep(spec)
    runs = result.runs
    assert runs["savings_vs_agnostic_pct"].isna().any()  # the free hours
    assert (~runs["completed"]).any()  # threshold runs past the trace's end
    reference = _savings_by_merge(runs.drop(columns=list(runs.columns[-3:])))
    pd.testing.assert_frame_equal(runs, reference, check_exact=True)
    cv = {t.source: t.stats().cv for t in traces}
    expected = pd.DataFrame(_summary_by_groupby(runs, cv))
    summary = result.summary.drop(columns=["rank", "same_as"])
    pd.testing.assert_frame_equal(summary, expected[summary.columns], check_exact=True)


def test_tables_keep_the_order_asked_for() -> None:
    policies = ["static", "carbonscaler", "agnostic"]
    spec = SweepSpec(
        traces=[_trace(1, "A")],
        profile=amdahl_profile(4, 0.05),
        length_hours=8,
        slacks=[1.5, 2.0],
        max_servers=[4],
        policies=policies,
        starts=50,
    )
    result = run_sweep(spec)
    assert list(result.summary["policy"]) == policies * 2
    assert list(result.runs["policy"].drop_duplicates()) == policies
    assert list(result.runs.groupby("slack", sort=False)["policy"].first()) == ["static"] * 2
    assert set(POLICIES) >= set(result.runs["policy"])
