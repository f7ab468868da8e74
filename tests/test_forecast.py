"""Forecasters: the pure array functions, and the same forecasters over providers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from carbonscaler.forecast import (
    FORECAST_MODELS,
    FORECASTERS,
    ForecastError,
    ForecastModel,
    ForecastSpec,
    GaussianForecaster,
    PerfectForecaster,
    ProviderForecaster,
    UniformForecaster,
    carbon_percentile,
    forecast_at,
    forecast_noise,
    forecaster_from_spec,
    issue_forecasts,
    make_forecaster,
)
from carbonscaler.providers import (
    CarbonProvider,
    Forecast,
    ForecastUnavailable,
    IntensityReading,
    IntensitySeries,
    ManualClock,
    TraceReplay,
)
from carbonscaler.trace import from_values, load_trace

VALUES = np.arange(24 * 9, dtype=np.float64)  # nine days of hourly slots, value = slot number


def test_names() -> None:
    assert FORECASTERS == (
        "perfect",
        "uniform",
        "gaussian",
        "persistence",
        "seasonal",
        "learned",
        "provider",
    )
    assert FORECASTERS[:-1] == FORECAST_MODELS
    assert all(isinstance(m, ForecastModel) for m in FORECASTERS)
    for name, model in [
        ("perfect", "perfect"),
        ("REAL", "perfect"),
        (" real ", "perfect"),
        ("PRED", "provider"),
        ("Seasonal", "seasonal"),
    ]:
        assert ForecastModel.parse(name) is ForecastModel(model)
        assert ForecastModel.from_name(name) is ForecastModel(model)
    with pytest.raises(ForecastError, match=r"unknown forecaster 'oracle'; use one of perfect"):
        ForecastModel.parse("oracle")
    assert make_forecaster("REAL").name is ForecastModel.PERFECT
    assert isinstance(make_forecaster("perfect"), PerfectForecaster)


def test_perfect_is_the_future_of_the_trace() -> None:
    assert forecast_at(VALUES, 10, 4).tolist() == [10, 11, 12, 13]
    with pytest.raises(ForecastError, match="past the end"):
        forecast_at(VALUES, len(VALUES) - 2, 4)
    assert forecast_at(VALUES, len(VALUES) - 2, 4, wrap=True).tolist() == [214, 215, 0, 1]


def test_persistence_repeats_yesterday_and_keeps_the_observed_slot() -> None:
    out = forecast_at(VALUES, 30, 50, "persistence")
    assert out[0] == 30  # observed
    assert out[1:25].tolist() == list(range(7, 31))  # same slot yesterday, up to now
    assert out[25:49].tolist() == list(range(7, 31))  # further out: yesterday again
    # Before the trace begins there is no yesterday: the earliest values stand in.
    assert forecast_at(VALUES, 5, 3, "persistence").tolist() == [5, 0, 0]
    assert forecast_at(VALUES, 5, 3, "persistence", wrap=True).tolist() == [5, 198, 199]
    assert forecast_at(VALUES, 30, 3, "persistence", slots_per_day=4).tolist() == [30, 27, 28]


def test_seasonal_repeats_last_week() -> None:
    index = 24 * 8
    out = forecast_at(VALUES, index, 3, "seasonal")
    assert out.tolist() == [index, index - 167, index - 166]
    assert forecast_at(VALUES, 100, 3, "seasonal").tolist() == [100, 0, 0]


def test_noisy_forecasts_are_seeded_bounded_and_per_slot() -> None:
    a = forecast_at(VALUES + 100, 50, 24, "uniform", error=0.3, seed=7)
    b = forecast_at(VALUES + 100, 50, 24, "uniform", error=0.3, seed=7)
    c = forecast_at(VALUES + 100, 50, 24, "uniform", error=0.3, seed=8)
    truth = VALUES[50:74] + 100
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0] == truth[0]
    assert np.all(np.abs(a / truth - 1) <= 0.3 + 1e-12)
    # The forecast at a slot does not depend on what was asked before.
    noisy = UniformForecaster(0.3, seed=7)
    noisy.predict_array(VALUES + 100, 3, 5)
    assert np.array_equal(noisy.predict_array(VALUES + 100, 50, 24), a)
    # ... nor on how many slots are asked.
    assert np.array_equal(noisy.predict_array(VALUES + 100, 50, 10), a[:10])
    g = forecast_at(np.full(5000, 100.0), 0, 5000, "gaussian", error=0.1, seed=1)
    assert np.std(g[1:] / 100 - 1) == pytest.approx(0.1, rel=0.05)
    assert np.mean(g[1:] / 100 - 1) == pytest.approx(0.0, abs=0.01)
    assert np.all(forecast_at(np.full(500, 1.0), 0, 500, "gaussian", error=2.0) >= 0)


def test_noise_is_a_pure_function_of_seed_issue_slot_and_offset() -> None:
    at = np.array([0, 7, 7, 1_000_000])
    for model in ("uniform", "gaussian"):
        noise = forecast_noise(model, 0.2, 3, at, 50)
        assert noise.shape == (4, 50) and np.all(noise[:, 0] == 0)
        assert np.array_equal(noise[1], noise[2])  # same issue slot, same noise
        assert not np.array_equal(noise[0], noise[1])
        assert np.array_equal(forecast_noise(model, 0.2, 3, at[::-1], 20), noise[::-1, :20])
        assert not np.array_equal(forecast_noise(model, 0.2, 4, at, 50), noise)
    assert np.all(np.abs(forecast_noise("uniform", 0.2, 3, np.arange(100), 100)) <= 0.2)
    assert not forecast_noise("perfect", 0.2, 3, at, 50).any()


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 2000)),
    data=st.data(),
)
def test_forecast_properties(values: np.ndarray, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(values) - 1))
    horizon = data.draw(st.integers(1, 80))
    real = forecast_at(values, index, horizon, wrap=True)
    assert real.tolist() == [values[(index + h) % len(values)] for h in range(horizon)]
    for method in ("uniform", "gaussian"):
        noisy = forecast_at(values, index, horizon, method, wrap=True, error=0.25, seed=3)
        assert noisy[0] == values[index] and np.all(noisy >= 0) and len(noisy) == horizon
    for method in ("persistence", "seasonal"):
        periodic = forecast_at(values, index, horizon, method, wrap=True)
        assert periodic[0] == values[index] and set(periodic.tolist()) <= set(values.tolist())


def test_make_forecaster_and_specs() -> None:
    with pytest.raises(ForecastError, match="unknown forecaster 'magic'"):
        make_forecaster("magic")
    with pytest.raises(ForecastError, match="does not take options"):
        make_forecaster("real", error=0.03)
    with pytest.raises(ForecastError, match="fraction"):
        make_forecaster("uniform", error=-0.1)
    with pytest.raises(ForecastError, match="from a provider"):
        forecast_at(VALUES, 0, 3, "provider")
    assert forecaster_from_spec("REAL").name == "perfect"
    assert forecaster_from_spec("PRED").name == "provider"
    # The command-line spec keeps the error in percent: 12.5 % is error=0.125.
    spec = forecaster_from_spec("Gaussian:12.5", seed=4)
    assert isinstance(spec, GaussianForecaster) and (spec.error, spec.seed) == (0.125, 4)
    with pytest.raises(ForecastError, match="only uniform:PCT"):
        forecaster_from_spec("persistence:3")
    with pytest.raises(ForecastError, match="not a percentage"):
        forecaster_from_spec("uniform:lots")


def test_carbon_percentile_matches_the_reference() -> None:
    assert carbon_percentile([1, 2, 3, 4], 3) == 0.75
    assert carbon_percentile([], 3) is None


def test_forecasters_over_a_trace_replay() -> None:
    trace = from_values(VALUES, start="2022-01-01")
    replay = TraceReplay(trace, start="2022-01-03T05:00", clock=ManualClock("2022-01-01"))
    index = 2 * 24 + 5
    for name in ("perfect", "persistence", "provider"):
        forecast = make_forecaster(name).predict(replay, 30)
        method = "perfect" if name == "provider" else name
        assert list(forecast.values_g_per_kwh) == forecast_at(VALUES, index, 30, method).tolist()
        assert forecast.start == datetime(2022, 1, 3, 5, tzinfo=UTC)
    noisy = make_forecaster("uniform", error=0.2, seed=1).predict(replay, 10)
    assert list(noisy.values_g_per_kwh) == (
        forecast_at(VALUES, index, 10, "uniform", error=0.2, seed=1).tolist()
    )


@pytest.mark.filterwarnings("ignore::carbonscaler.trace.TraceWarning")
def test_persistence_on_a_real_trace_uses_its_step(shared_dir: Path) -> None:
    trace = load_trace(shared_dir / "traces" / "vessim-de-15min" / "carbon_intensity.csv")
    replay = TraceReplay(trace, start="2020-06-10", clock=ManualClock("2020-06-10"))
    forecast = make_forecaster("persistence").predict(replay, 8)
    assert forecast.step_s == 900
    i = replay.index
    assert list(forecast.values_g_per_kwh[1:]) == trace.values[i - 96 + 1 : i - 96 + 8].tolist()


NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


class HalfHourly(CarbonProvider):
    """A live-like provider: half-hourly history and forecast around NOW."""

    name = "halfhourly"
    step_s = 1800

    def __init__(self) -> None:
        super().__init__("Z")

    def current(self, zone: str | None = None) -> IntensityReading:
        return IntensityReading("Z", 500.0, NOW + timedelta(minutes=30), "halfhourly")

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        n = int((end - start) / timedelta(minutes=30))
        return IntensitySeries("Z", start, 1800, tuple(float(i) for i in range(n)), "halfhourly")

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        values = tuple(100.0 + i for i in range(horizon_slots))
        return Forecast("Z", NOW + timedelta(minutes=30), 1800, values, "halfhourly", stale=True)

    def zones(self) -> list[str]:
        return ["Z"]


def test_provider_forecast_is_reslotted_after_the_observed_value() -> None:
    forecast = ProviderForecaster().predict(HalfHourly(), 3, slot_s=3600)
    # Hourly slots from 12:00: the observed 500, then means of the half-hours 13:00-14:00 and
    # 14:00-15:00 of the upstream forecast (which starts at 12:30).
    assert forecast.start == NOW and forecast.step_s == 3600
    assert forecast.values_g_per_kwh == (500.0, 101.5, 103.5)
    assert forecast.stale  # inherited from the upstream forecast


def test_history_forecasters_on_a_live_provider() -> None:
    forecast = make_forecaster("persistence").predict(HalfHourly(), 3, slot_s=3600)
    # 24 hourly slots of history (means of half-hour pairs 0,1 -> 0.5 ... 46,47 -> 46.5).
    assert forecast.values_g_per_kwh == (500.0, 2.5, 4.5)
    noisy = make_forecaster("gaussian", error=0.1).predict(HalfHourly(), 3, slot_s=3600)
    assert noisy.values_g_per_kwh[0] == 500.0 and noisy.values_g_per_kwh[1] != 101.5
    with pytest.raises(ForecastUnavailable, match="live providers have none"):
        make_forecaster("perfect").predict(HalfHourly(), 3)


@settings(max_examples=150, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 400), elements=st.floats(0, 2000)),
    model=st.sampled_from(FORECAST_MODELS),
    error=st.sampled_from([0.0, 0.05, 0.3, 1.5]),
    seed=st.integers(-(2**63), 2**64 - 1),
    slot_minutes=st.sampled_from([15, 30, 60, 120]),
    data=st.data(),
)
def test_batch_and_single_forecasts_are_identical(
    values: np.ndarray,
    model: ForecastModel,
    error: float,
    seed: int,
    slot_minutes: int,
    data: st.DataObject,
) -> None:
    """CarbonAdvisor (batched) and the runtime (one job) make the same forecasts."""
    slots = len(values)
    issued = data.draw(st.lists(st.integers(0, slots - 1), min_size=1, max_size=8))
    horizon = data.draw(st.integers(1, 60))
    spec = ForecastSpec(model, error, seed)
    slot_hours = slot_minutes / 60
    batch = issue_forecasts(spec, values, np.array(issued), horizon, slot_hours)
    options: dict[str, object] = {}
    if model.is_noisy:
        options = {"error": error, "seed": seed}
    elif model.is_periodic or model is ForecastModel.LEARNED:
        options = {"slots_per_day": round(24 / slot_hours)}
    forecaster = make_forecaster(model, **options)
    for row, index in enumerate(issued):
        available = min(horizon, slots - index)
        single = forecaster.predict_array(values, index, available)
        assert np.array_equal(batch[row, :available], single)
        # Past the trace's end only the models that look back still forecast.
        looks_back = model.is_periodic or model is ForecastModel.LEARNED
        assert np.isnan(batch[row, available:]).all() or looks_back
        # Alone, or in another batch: the row is the same.
        alone = issue_forecasts(spec, values, np.array([index]), horizon, slot_hours)
        assert np.array_equal(alone[0], batch[row], equal_nan=True)
    others = data.draw(st.lists(st.integers(0, slots - 1), max_size=8))
    bigger = issue_forecasts(spec, values, np.array(others + issued), horizon, slot_hours)
    assert np.array_equal(bigger[len(others) :], batch, equal_nan=True)
    assert np.all(batch[~np.isnan(batch)] >= 0)
    assert np.array_equal(batch[:, 0], values[issued])  # the current slot is observed


def test_forecasts_past_the_end() -> None:
    spec = ForecastSpec("uniform", 0.1, seed=2)
    batch = issue_forecasts(spec, VALUES, np.array([len(VALUES) - 2]), 4, 1.0)
    assert np.isnan(batch[0, 2:]).all() and not np.isnan(batch[0, :2]).any()
    with pytest.raises(ForecastError, match="past the end"):
        UniformForecaster(0.1, seed=2).predict_array(VALUES, len(VALUES) - 2, 4)
    with pytest.raises(ForecastError, match="within the trace"):
        issue_forecasts(spec, VALUES, np.array([len(VALUES)]), 4, 1.0)
    with pytest.raises(ForecastError, match="from a live provider"):
        ForecastSpec("provider")
    with pytest.raises(ForecastError, match="fraction"):
        ForecastSpec("gaussian", -0.1)
    assert ForecastSpec("REAL").model is ForecastModel.PERFECT
    assert ForecastSpec("uniform", 0.0).is_perfect and not ForecastSpec("uniform", 0.1).is_perfect
