"""CarbonAdvisor: batch planning, the executor, forecasts, sweeps, reports and the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from carbonscaler.advisor import (
    Conditions,
    ForecastSpec,
    SweepSpec,
    issue_forecasts,
    resolve_starts,
    run_sweep,
    simulate_policy,
    summary_records,
    write_csv,
    write_html,
    write_plots,
)
from carbonscaler.cli import app
from carbonscaler.forecast import forecast_at
from carbonscaler.planner import POLICIES, Job, PlanningError, plan
from carbonscaler.planner.batch import BatchPlan, batch_greedy, rescale_losses
from carbonscaler.profile import ScalingProfile, amdahl_profile, linear_profile, load_profile
from carbonscaler.trace import CarbonTrace, from_values, load_trace

runner = CliRunner()


@pytest.fixture(scope="module")
def nl(shared_dir: Path) -> CarbonTrace:
    return load_trace(shared_dir / "traces" / "electricitymaps-fedstale" / "NL_2022_hourly.csv")


@pytest.fixture(scope="module")
def nbody10k(shared_dir: Path) -> ScalingProfile:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_profile(shared_dir / "profiles" / "nbody10k.csv")


def test_batch_greedy_equals_single_plans(nl: CarbonTrace) -> None:
    job = Job.from_length(amdahl_profile(8, 0.1), 24, 2, 8)
    starts = np.arange(0, 8000, 173)
    windows = np.stack([nl.values[s : s + 36] for s in starts])
    batch = batch_greedy(job.ladder(), windows, job.work)
    assert batch.feasible.all()
    for row, start in enumerate(starts):
        single = plan("carbonscaler", job, nl.values[start : start + 36])
        n = len(single.servers)
        assert batch.servers[row, :n].tolist() == single.servers.tolist()
        assert np.all(batch.servers[row, n:] == 0)
        if single.partial_slot is not None:
            assert batch.fraction[row, single.partial_slot] == pytest.approx(
                single.last_slot_fraction, abs=1e-12
            )
            assert batch.after[row, single.partial_slot] == single.partial_servers_after


def test_batch_greedy_marks_infeasible_rows() -> None:
    job = Job.from_length(linear_profile(2), 10, 1, 2)
    batch = batch_greedy(job.ladder(), np.ones((2, 4)), np.array([8.0, 9.0]))
    assert batch.feasible.tolist() == [True, False]
    assert batch.servers[1].sum() == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_executor_reproduces_plans_under_perfect_conditions(
    nl: CarbonTrace, nbody10k: ScalingProfile, policy: str
) -> None:
    job = Job.from_length(nbody10k, 24, 1, 7)
    starts = np.arange(200, 8500, 997)
    outcome = simulate_policy(policy, job, nl.values, starts, 36, Conditions(safety_margin=0.0))
    for row, start in enumerate(starts):
        history = nl.values[start - 168 : start] if policy == "suspend-resume-threshold" else None
        schedule = plan(policy, job, nl.values[start:], deadline_slots=36, history=history)
        assert outcome.emissions_g[row] == pytest.approx(schedule.emissions_g, rel=1e-9)
        assert outcome.energy_kwh[row] == pytest.approx(schedule.energy_kwh, rel=1e-9)
        assert outcome.completion_hours[row] == pytest.approx(schedule.completion_hours)
        assert outcome.rescales[row] == schedule.rescales
        assert outcome.deadline_met[row] == schedule.deadline_met
        assert outcome.server_hours[row] == pytest.approx(schedule.server_hours, rel=1e-9)
    assert outcome.replans.sum() == 0


def test_forecast_models() -> None:
    trace = np.arange(400, dtype=float) + 100
    at = np.array([200, 300])
    perfect = issue_forecasts(ForecastSpec(), trace, at, 10, 1.0)
    assert np.array_equal(perfect[0], trace[200:210])
    noisy = issue_forecasts(ForecastSpec("uniform", 0.1, seed=3), trace, at, 10, 1.0)
    assert np.all(np.abs(noisy / perfect - 1) <= 0.1 + 1e-12)
    assert np.array_equal(noisy[:, 0], perfect[:, 0])  # the current slot is observed
    assert not np.allclose(noisy, perfect)
    again = issue_forecasts(ForecastSpec("uniform", 0.1, seed=3), trace, at, 10, 1.0)
    assert np.array_equal(noisy, again)
    # A re-issue one slot later sees fresh noise for the same target slots.
    later = issue_forecasts(ForecastSpec("uniform", 0.1, seed=3), trace, at + 1, 9, 1.0)
    assert not np.array_equal(noisy[:, 2:], later[:, 1:-1])
    gauss = issue_forecasts(ForecastSpec("gaussian", 0.2, seed=1), trace, at[:1], 200, 1.0)
    assert 0.15 < float(np.std(gauss[0] / trace[200:400] - 1)) < 0.25
    persistence = issue_forecasts(ForecastSpec("persistence"), trace, at, 30, 1.0)
    assert persistence[0, 0] == trace[200]
    assert np.array_equal(persistence[0, 1:25], trace[177:201])
    assert np.array_equal(persistence[0, 25:30], trace[177:182])  # two days back
    seasonal = issue_forecasts(ForecastSpec("seasonal"), trace, at, 10, 1.0)
    assert np.array_equal(seasonal[1, 1:], trace[133:142])
    # The runtime's forecasters (carbonscaler.forecast) make the same forecasts.
    for model, options in (
        ("persistence", {}),
        ("seasonal", {}),
        ("perfect", {}),
        ("uniform", {"error": 0.1, "seed": 3}),
        ("gaussian", {"error": 0.2, "seed": 1}),
    ):
        spec = ForecastSpec(model, float(options.get("error", 0.0)), int(options.get("seed", 0)))
        batch = issue_forecasts(spec, trace, at, 100, 1.0)
        for row, index in enumerate(at):
            assert np.array_equal(batch[row], forecast_at(trace, int(index), 100, model, **options))
    with pytest.raises(ValueError, match="unknown forecaster 'crystal-ball'"):
        ForecastSpec("crystal-ball")


def test_forecast_error_triggers_replans_and_costs_little(nl: CarbonTrace) -> None:
    job = Job.from_length(amdahl_profile(8, 0.05), 24, 1, 8)
    starts = np.arange(0, 8600, 61)
    perfect = simulate_policy("carbonscaler", job, nl.values, starts, 36)
    noisy = simulate_policy(
        "carbonscaler",
        job,
        nl.values,
        starts,
        36,
        Conditions(forecast=ForecastSpec("uniform", 0.3, seed=1)),
    )
    assert noisy.replans.mean() > 1
    assert noisy.deadline_met.all()
    extra = noisy.emissions_g.mean() / perfect.emissions_g.mean() - 1
    assert 0 <= extra < 0.10  # the paper: 30 % noise cost ~4 % at the 95th percentile


def test_profile_error_is_caught_by_replanning(nl: CarbonTrace) -> None:
    job = Job.from_length(amdahl_profile(8, 0.05), 24, 1, 8)
    starts = np.arange(0, 8600, 47)
    outcome = simulate_policy(
        "carbonscaler", job, nl.values, starts, 36, Conditions(profile_error=0.2, seed=4)
    )
    assert outcome.deadline_met.all()
    assert outcome.replans.max() >= 1
    assert np.allclose(outcome.work_done, job.work)


def test_rescale_overhead_is_paid_and_planned_for(nl: CarbonTrace) -> None:
    job = Job.from_length(amdahl_profile(8, 0.05), 24, 1, 8)
    starts = np.arange(0, 8600, 53)
    free = simulate_policy("carbonscaler", job, nl.values, starts, 36)
    costly = simulate_policy(
        "carbonscaler", job, nl.values, starts, 36, Conditions(rescale_overhead_s=120)
    )
    # Plans cover the work their own rescales lose, so deadlines still hold.
    assert costly.deadline_met.all()
    assert costly.emissions_g.mean() > free.emissions_g.mean()
    assert costly.server_hours.mean() > free.server_hours.mean()
    agnostic = simulate_policy(
        "agnostic", job, nl.values, starts, 36, Conditions(rescale_overhead_s=600)
    )
    assert agnostic.rescales.sum() == 0  # never rescales, so never pays


def test_rescale_losses_by_hand() -> None:
    # Slots: 2 servers, 0, then 3 servers for 40 % of the slot and 2 after; previous level 0.
    plans = BatchPlan(
        servers=np.array([[2, 0, 3]]),
        fraction=np.array([[1.0, 1.0, 0.4]]),
        after=np.array([[2, 0, 2]]),
        feasible=np.array([True]),
    )
    throughput = np.array([0.0, 1.0, 1.8, 2.5])
    fresh = rescale_losses(plans, throughput, 0.1, 1.0, np.array([0]), np.array([False]))
    # First start free; 0 -> 3 costs 0.1 h at 2.5; 3 -> 2 costs 0.1 h at 1.8.
    assert fresh[0] == pytest.approx(0.25 + 0.18)
    resumed = rescale_losses(plans, throughput, 0.1, 1.0, np.array([0]), np.array([True]))
    assert resumed[0] == pytest.approx(0.18 + 0.25 + 0.18)


def test_resolve_starts(nl: CarbonTrace) -> None:
    assert len(resolve_starts(nl, "all", 36)) == 8760 - 36 + 1
    assert len(resolve_starts(nl, 10, 36)) == 10
    picked = resolve_starts(nl, ["2022-03-01T00:00Z", "2022-02-01T12:00Z"], 36)
    assert picked.tolist() == [nl.index_of("2022-02-01T12:00Z"), nl.index_of("2022-03-01")]
    with pytest.raises(PlanningError, match="deadline needs 36"):
        resolve_starts(nl, ["2022-12-31T00:00Z"], 36)
    short = from_values([100.0] * 10)
    with pytest.raises(PlanningError, match="fewer than the deadline"):
        resolve_starts(short, "all", 36)


def test_sweep_summary_and_savings(nl: CarbonTrace, shared_dir: Path) -> None:
    on = load_trace(shared_dir / "traces" / "electricitymaps-fedstale" / "CA-ON_2022_hourly.csv")
    spec = SweepSpec(
        traces=[nl, on],
        profile=amdahl_profile(8, 0.05),
        length_hours=24,
        slacks=[1.0, 2.0],
        starts=200,
    )
    result = run_sweep(spec)
    records = summary_records(result)
    assert len(records) == 2 * 2 * len(POLICIES)
    keys = {
        "trace",
        "slack",
        "policy",
        "runs",
        "mean_emissions_g",
        "median_emissions_g",
        "mean_savings_vs_agnostic_pct",
        "mean_savings_vs_suspend_resume_pct",
        "mean_completion_hours",
        "mean_rescales",
        "deadline_misses",
    }
    assert keys <= set(records[0])
    by = {(r["zone"], r["slack"], r["policy"]): r for r in records}
    for zone in ("NL", "CA-ON"):
        assert by[(zone, 1.0, "agnostic")]["mean_savings_vs_agnostic_pct"] == pytest.approx(0)
        assert by[(zone, 1.0, "suspend-resume")]["mean_savings_vs_agnostic_pct"] == (
            pytest.approx(0, abs=1e-9)
        )
        # Scaling saves even without slack, and more slack saves more.
        cs1 = by[(zone, 1.0, "carbonscaler")]["mean_savings_vs_agnostic_pct"]
        cs2 = by[(zone, 2.0, "carbonscaler")]["mean_savings_vs_agnostic_pct"]
        assert 0 < cs1 < cs2
        assert by[(zone, 2.0, "carbonscaler")]["mean_savings_vs_suspend_resume_pct"] > 0
        assert by[(zone, 2.0, "carbonscaler")]["deadline_misses"] == 0
        assert by[(zone, 2.0, "exact")]["mean_emissions_g"] == pytest.approx(
            by[(zone, 2.0, "carbonscaler")]["mean_emissions_g"], rel=1e-9
        )
    # Ontario swings far more than the Netherlands: it saves more.
    assert (
        by[("CA-ON", 2.0, "carbonscaler")]["mean_savings_vs_agnostic_pct"]
        > (by[("NL", 2.0, "carbonscaler")]["mean_savings_vs_agnostic_pct"])
    )
    assert result.runs["policy"].value_counts().min() == 2 * 2 * 200


def test_reports_are_written(nl: CarbonTrace, tmp_path: Path) -> None:
    spec = SweepSpec(
        traces=[nl, from_values(nl.values[:2000] * 0.5 + 20, zone="half-NL")],
        profile=linear_profile(4),
        length_hours=12,
        slacks=[1.5, 2.0],
        max_servers=[4],
        starts=40,
        policies=["carbonscaler", "suspend-resume", "agnostic"],
        price_per_server_hour=0.1,
    )
    result = run_sweep(spec)
    write_csv(result, tmp_path / "runs.csv")
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 2 * 2 * 3 * 40
    assert {"emissions_g", "savings_vs_agnostic_pct", "cost", "start"} <= set(runs.columns)
    written = write_plots(result, tmp_path / "plots")
    names = {p.name for p in written}
    assert names == {
        "savings_distribution.png",
        "example_schedule.png",
        "savings_vs_slack.png",
        "savings_vs_region.png",
    }
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_html(result, tmp_path / "report.html", command="carbonscaler advise ...")
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert 'src="http' not in page  # self-contained: nothing to fetch
    assert "<table" in page and "carbonscaler advise" in page


def test_advise_cli_json(shared_dir: Path, tmp_path: Path) -> None:
    trace = shared_dir / "traces" / "electricitymaps-fedstale" / "CA-ON_2022_hourly.csv"
    profile = shared_dir / "profiles" / "nbody100k.csv"
    result = runner.invoke(
        app,
        [
            "advise",
            "--trace",
            str(trace),
            "--profile",
            str(profile),
            "--length",
            "24",
            "--slack",
            "1.5",
            "--slack",
            "2",
            "--min",
            "1",
            "--max",
            "7",
            "--starts",
            "50",
            "--policy",
            "carbonscaler",
            "--policy",
            "suspend-resume",
            "--forecast-error",
            "0.1",
            "--profile-error",
            "0.05",
            "--rescale-overhead-s",
            "30",
            "--json",
            "--csv",
            str(tmp_path / "runs.csv"),
            "--report",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [(r["slack"], r["policy"]) for r in records] == [
        (1.5, "carbonscaler"),
        (1.5, "suspend-resume"),
        (2.0, "carbonscaler"),
        (2.0, "suspend-resume"),
    ]
    assert all(r["runs"] == 50 for r in records)
    assert records[0]["mean_replans"] > 0
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_advise_cli_rejects_bad_input(shared_dir: Path) -> None:
    trace = shared_dir / "traces" / "electricitymaps-fedstale" / "CA-ON_2022_hourly.csv"
    base = ["advise", "--trace", str(trace), "--profile", "linear", "--length", "24"]
    for extra, fragment in (
        (["--slack", "0.5"], "slack factors must be >= 1"),
        (["--policy", "yolo"], "unknown policies"),
        (["--forecast-model", "oracle"], "unknown forecaster 'oracle'"),
        (["--starts", "2030-01-01T00:00Z"], "outside"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert fragment in result.output, (extra, result.output)
    result = runner.invoke(app, ["advise", "--profile", "linear", "--length", "24"])
    assert result.exit_code == 2 and "--trace" in result.output
