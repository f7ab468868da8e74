"""The learned forecaster: no look-ahead, deterministic, cached, everywhere a forecaster is;
and the evaluation's figures, recomputed by hand."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from carbonscaler.cli import app
from carbonscaler.forecast import (
    ForecastError,
    ForecastModel,
    ForecastSpec,
    issue_forecasts,
    make_forecaster,
)
from carbonscaler.forecast_evaluation import evaluate_forecasts
from carbonscaler.learned import QUANTILES, LearnedModel, learned_model

runner = CliRunner()


def synthetic(days: int = 42, seed: int = 1) -> np.ndarray:
    """A daily and weekly cycle with noise: what grids look like, small."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    daily = 80 * np.sin(2 * np.pi * hours / 24)
    weekly = 40 * np.sin(2 * np.pi * hours / 168)
    return 300 + daily + weekly + rng.normal(0, 15, hours.size)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from carbonscaler import learned

    monkeypatch.setenv("CARBONSCALER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(learned, "_MEMORY", {})


def test_a_forecast_made_at_t_ignores_everything_after_t() -> None:
    values = synthetic()
    for t in (24 * 16, 24 * 22 + 5, 24 * 35 + 11):
        before = issue_forecasts(ForecastSpec("learned"), values, np.array([t]), 48, 1.0)
        altered = values.copy()
        altered[t + 1 :] = np.random.default_rng(t).uniform(0, 900, values.size - t - 1)
        after = issue_forecasts(ForecastSpec("learned"), altered, np.array([t]), 48, 1.0)
        np.testing.assert_allclose(after, before, rtol=1e-9)
        for q in (0.1, 0.9):
            spec = ForecastSpec("learned", quantile=q)
            np.testing.assert_allclose(
                issue_forecasts(spec, altered, np.array([t]), 48, 1.0),
                issue_forecasts(spec, values, np.array([t]), 48, 1.0),
                rtol=1e-9,
            )


def test_it_learns_the_cycle_and_beats_persistence() -> None:
    values = synthetic(days=120)
    spec = ForecastSpec("learned")
    late = evaluate_forecasts(values, 1.0, spec, horizon_h=24)
    naive = evaluate_forecasts(values, 1.0, ForecastSpec("persistence"), horizon_h=24)
    assert late.mape_pct < 0.8 * naive.mape_pct
    # The 80 % band covers roughly 80 % of what happened (conformal, out of sample).
    assert late.coverage_pct is not None and 65 < late.coverage_pct < 92
    # Early on, before two weeks of targets are known, it is persistence.
    early = issue_forecasts(spec, values, np.array([30]), 30, 1.0)
    persistence = issue_forecasts(ForecastSpec("persistence"), values, np.array([30]), 30, 1.0)
    np.testing.assert_allclose(early, persistence)


def test_the_fit_is_a_correction_to_persistence_so_regularising_leads_back_to_it() -> None:
    """Each lead's ridge fits the difference from persistence: made ever stiffer, the model
    becomes persistence (not zero, which shrank level forecasts of flat, high grids)."""
    values = synthetic(days=40)
    at = np.arange(24 * 20, 24 * 30, 5)
    naive = issue_forecasts(ForecastSpec("persistence"), values, at, 40, 1.0)
    for log_space in (False, True):
        stiff = LearnedModel.fit(values, 1.0, horizon=48, ridge=1e12, log_space=log_space)
        np.testing.assert_allclose(stiff.predict(values, at, 40, quantile=None), naive, rtol=1e-6)
        loose = LearnedModel.fit(values, 1.0, horizon=48, log_space=log_space)
        assert np.abs(loose.predict(values, at, 40, quantile=None) - naive).max() > 1.0


def test_quantiles_order_and_bad_ones_are_refused() -> None:
    values = synthetic()
    at = np.arange(24 * 20, 24 * 30, 7)
    rows = [
        issue_forecasts(ForecastSpec("learned", quantile=q), values, at, 24, 1.0) for q in QUANTILES
    ]
    for low, high in itertools.pairwise(rows):
        assert np.all(low[:, 1:] <= high[:, 1:] + 1e-9)
    assert np.array_equal(rows[0][:, 0], values[at])  # the current slot is observed
    with pytest.raises(ForecastError, match="quantile"):
        ForecastSpec("learned", quantile=0.42)


def test_the_model_is_deterministic_and_cached_on_disk(tmp_path: Path) -> None:
    values = synthetic()
    first = learned_model(values, 1.0, horizon=36)
    files = list((tmp_path / "cache" / "learned").glob("*.npz"))
    assert len(files) == 1
    fresh = LearnedModel.fit(values, 1.0, horizon=first.plain.horizon)
    np.testing.assert_array_equal(fresh.weights, first.plain.weights)
    from carbonscaler import learned

    learned._MEMORY.clear()  # the next one comes from the disk
    again = learned_model(values, 1.0, horizon=36)
    at = np.arange(24 * 15, 24 * 40, 5)
    np.testing.assert_array_equal(again.predict(values, at, 36), first.predict(values, at, 36))


def test_batch_and_one_run_agree() -> None:
    values = synthetic()
    at = np.array([24 * 15, 24 * 21 + 3, 24 * 33 + 17])
    batch = issue_forecasts(ForecastSpec("learned"), values, at, 36, 1.0)
    forecaster = make_forecaster("learned")
    for row, t in zip(batch, at, strict=True):
        np.testing.assert_allclose(forecaster.predict_array(values, int(t), 36), row)


def test_the_evaluation_figures_recomputed_by_hand() -> None:
    values = synthetic(days=21, seed=4)
    result = evaluate_forecasts(values, 1.0, ForecastSpec("persistence"), horizon_h=6)
    warmup, leads = 14 * 24, 96
    errors, relative = [], []
    for t in range(warmup, values.size - leads):
        for h in range(1, 7):
            forecast = values[t + h - 24]  # persistence: the same hour yesterday
            actual = values[t + h]
            errors.append(abs(forecast - actual))
            relative.append(abs(forecast - actual) / actual)
    assert result.points == len(errors)
    assert result.mae_g_per_kwh == pytest.approx(np.mean(errors))
    assert result.mape_pct == pytest.approx(100 * np.mean(relative))
    assert result.coverage_pct is None
    assert [(b.first_h, b.last_h) for b in result.bands] == [(1, 6), (7, 24), (25, 48), (49, 96)]
    assert result.bands[0].mape_pct == pytest.approx(result.mape_pct)
    with pytest.raises(ForecastError, match="at least"):
        evaluate_forecasts(values[:200], 1.0, ForecastSpec("persistence"))


def test_forecast_evaluate_on_the_command_line(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    values = synthetic(days=30)
    stamps = np.datetime64("2022-01-03T00:00") + np.arange(values.size) * np.timedelta64(1, "h")
    trace.write_text(
        "timestamp,value\n"
        + "".join(f"{s!s}Z,{v:.3f}\n" for s, v in zip(stamps, values, strict=True))
    )
    result = runner.invoke(
        app, ["forecast", "evaluate", "--trace", str(trace), "--model", "learned", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"model", "horizon_h", "mape_pct", "mae_g_per_kwh", "coverage_pct", "points"} <= set(out)
    assert out["model"] == "learned" and out["horizon_h"] == 24
    table = runner.invoke(
        app, ["forecast", "evaluate", "--trace", str(trace), "--model", "seasonal"]
    )
    assert table.exit_code == 0 and "49–96 h" in table.stdout
    bad = runner.invoke(app, ["forecast", "evaluate", "--trace", str(trace), "--model", "oracle"])
    assert bad.exit_code != 0 and "unknown forecaster" in bad.output


def test_learned_is_a_forecast_model_everywhere() -> None:
    assert ForecastModel.parse("LEARNED") is ForecastModel.LEARNED
    from carbonscaler.control.spec import JobSpec

    spec = JobSpec.model_validate(
        {
            "name": "x",
            "workload": {"command": "true"},
            "maxReplicas": 2,
            "work": 5,
            "deadline": 4,
            "forecaster": "learned",
            "forecast_quantile": 0.9,
            "carbon": {"trace": "t.csv", "start": "2022-01-01T00:00Z"},
            "checkpoint_dir": "out",
        }
    )
    from carbonscaler.cli._runner import make_forecaster_for

    forecaster = make_forecaster_for(spec)
    assert forecaster is not None and forecaster.name is ForecastModel.LEARNED
