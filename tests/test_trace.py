"""Carbon-intensity traces: the real files in ../shared/traces and hand-made edge cases."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonscaler.trace import (
    FORMATS,
    CarbonTrace,
    TraceError,
    TraceWarning,
    from_series,
    from_values,
    load_trace,
)
from conftest import SHARED

EM_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method"
)


def _trace_files() -> list[str]:
    found = sorted(str(p.relative_to(SHARED)) for p in SHARED.glob("traces/**/*.csv"))
    # Keep one parameter when the folder is absent so the test reports the fixture's skip reason.
    return found or ["traces/<missing>"]


def _load_quietly(path: Path, signal: str = "direct") -> CarbonTrace:
    """Load with any gap filled (PJM has a 22-hour one, the reference sample 53 days)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        return load_trace(path, signal=signal, max_gap=None)


def _write(tmp_path: Path, text: str, name: str = "trace.csv", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


# --- every real file --------------------------------------------------------------------


def test_shared_folder_has_all_35_traces(shared_dir: Path) -> None:
    assert len(list((shared_dir / "traces").glob("**/*.csv"))) == 35


@pytest.mark.parametrize("name", _trace_files())
def test_every_shared_trace_loads_clean(shared_dir: Path, name: str) -> None:
    trace = _load_quietly(shared_dir / name)
    index = trace.series.index
    assert isinstance(index, pd.DatetimeIndex)
    assert str(index.tz) == "UTC"
    assert index.is_monotonic_increasing and index.is_unique
    assert (np.diff(index.asi8) == trace.step.value).all()
    assert trace.step in (pd.Timedelta(minutes=15), pd.Timedelta(hours=1))
    assert trace.series.dtype == np.float64
    assert not trace.series.isna().any()
    assert trace.fmt in FORMATS
    assert trace.zone and trace.zone != "synthetic"
    stats = trace.stats()
    assert 0 <= stats.min < stats.mean < stats.max < 1500, stats
    assert len(trace) >= 59


# --- facts stated in SOURCES.md ------------------------------------------------------------


def test_nl_2022_direct_matches_sources(shared_dir: Path) -> None:
    trace = load_trace(shared_dir / "traces/electricitymaps-fedstale/NL_2022_hourly.csv")
    stats = trace.stats()
    assert (trace.fmt, trace.zone, trace.signal) == ("electricitymaps", "NL", "direct")
    assert (round(stats.min, 2), round(stats.mean, 2), round(stats.max, 2)) == (
        57.45,
        266.94,
        452.34,
    )
    assert stats.n == 8760 and stats.filled == 0
    assert trace.start == pd.Timestamp("2022-01-01", tz="UTC")
    assert trace.end == pd.Timestamp("2022-12-31 23:00", tz="UTC")


def test_ca_on_crlf_file_matches_sources(shared_dir: Path) -> None:
    path = shared_dir / "traces/electricitymaps-fedstale/CA-ON_2022_hourly.csv"
    assert b"\r\n" in path.read_bytes()[:400]
    stats = load_trace(path).stats()
    assert (round(stats.min, 2), round(stats.mean, 2), round(stats.max, 2)) == (
        2.38,
        36.30,
        131.61,
    )


@pytest.mark.parametrize(
    ("name", "mean"),
    [
        ("electricitymaps-decarbonization-potential/US-CAL-CISO_2022_hourly.csv", 195),
        ("electricitymaps-decarbonization-potential/ES_2021_hourly.csv", 127),
        ("electricitymaps-decarbonization-potential/NO_2022_hourly.csv", 13),
        ("electricitymaps-decarbonization-potential/BR_2023_hourly.csv", 51),
        ("electricitymaps-fedstale/DE_2022_hourly.csv", 406),
        ("electricitymaps-fedstale/FR_2022_hourly.csv", 61),
        ("electricitymaps-cozybench/IN-WE_2023_hourly.csv", 692),
        ("electricitymaps-cozybench/US-MIDA-PJM_2023_hourly.csv", 322),
        ("eia-sustaindc/AZPS_NG_&_avgCI.csv", 575),
        ("eia-sustaindc/BPAT_NG_&_avgCI.csv", 55),
    ],
)
def test_means_match_sources(shared_dir: Path, name: str, mean: float) -> None:
    assert round(_load_quietly(shared_dir / "traces" / name).stats().mean) == mean


def test_decarbonization_potential_files_are_crlf_and_load(shared_dir: Path) -> None:
    for path in sorted(
        (shared_dir / "traces/electricitymaps-decarbonization-potential").glob("*.csv")
    ):
        assert b"\r\n" in path.read_bytes()[:400]
        trace = load_trace(path)
        assert len(trace) == 8760 and trace.filled == 0


def test_pjm_eia_empty_hours_are_filled_with_a_warning(shared_dir: Path) -> None:
    # SOURCES.md speaks of "23 empty hours plus one", but the file has 23 empty rows in all:
    # 2022-03-13 07:00 .. 2022-03-14 04:00 (22 hours) and 2022-11-07 05:00.
    path = shared_dir / "traces/eia-sustaindc/PJM_NG_&_avgCI.csv"
    assert path.read_text().count(",,,,,,,,,") == 23
    # 22 hours is more than the default allows: an error naming the gap.
    with pytest.raises(
        TraceError, match=r"22 hourly values \(22 h\) from 2022-03-13 07:00 UTC through"
    ):
        load_trace(path)
    with pytest.warns(TraceWarning, match=r"interpolated 23 of 8760 values"):
        trace = load_trace(path, max_gap=22)
    assert (trace.fmt, trace.zone, trace.signal, trace.filled) == ("eia", "PJM", "avg", 23)
    assert trace.longest_gap is not None and trace.longest_gap.values == 22
    assert "longest gap: 22 hourly values" in trace.notes[0]
    # The filled stretch is a straight line between its neighbours.
    gap = trace.series["2022-03-13 06:00":"2022-03-14 05:00"].to_numpy()
    assert np.allclose(np.diff(gap, 2), 0, atol=1e-9)


@pytest.mark.parametrize(("ba", "filled"), [("CISO", 3), ("MISO", 3), ("ERCO", 0)])
def test_other_eia_gaps(shared_dir: Path, ba: str, filled: int) -> None:
    trace = _load_quietly(shared_dir / f"traces/eia-sustaindc/{ba}_NG_&_avgCI.csv")
    assert trace.filled == filled and trace.zone == ba


def test_vessim_file_is_15_min_with_two_gaps_filled(shared_dir: Path) -> None:
    with pytest.warns(TraceWarning, match="interpolated 2 of"):
        trace = load_trace(shared_dir / "traces/vessim-de-15min/carbon_intensity.csv")
    assert (trace.fmt, trace.zone) == ("vessim", "DE")
    assert trace.step == pd.Timedelta(minutes=15)
    assert len(trace) == 37147 + 2 and trace.filled == 2
    assert trace.start == pd.Timestamp("2019-12-20", tz="UTC")  # naive timestamps taken as UTC
    for missing in ("2020-12-19 23:15", "2020-12-19 23:45"):
        i = trace.index_of(missing)
        assert trace.values[i] == pytest.approx((trace.values[i - 1] + trace.values[i + 1]) / 2)
    stats = trace.stats()
    assert (round(stats.mean), round(stats.min), round(stats.max)) == (315, 101, 593)


def test_lca_differs_from_direct(shared_dir: Path) -> None:
    path = shared_dir / "traces/electricitymaps-fedstale/DE_2022_hourly.csv"
    direct, lca = load_trace(path), load_trace(path, signal="LCA")
    assert (direct.signal, lca.signal) == ("direct", "lca")
    assert lca.values[0] == pytest.approx(212.91) and direct.values[0] == pytest.approx(162.59)
    assert (lca.values > direct.values).mean() > 0.99


def test_eia_has_no_lca_signal(shared_dir: Path) -> None:
    with pytest.raises(TraceError, match=r"no 'lca' signal; available: 'avg'"):
        load_trace(shared_dir / "traces/eia-sustaindc/SOCO_NG_&_avgCI.csv", signal="lca")


def test_reference_sample_loads_with_its_53_day_hole(shared_dir: Path) -> None:
    path = shared_dir / "traces/upstream-sample/data-sample.csv"
    with pytest.raises(TraceError, match=r"1286 hourly values \(1286 h = 53.6 days\)"):
        load_trace(path)
    with pytest.warns(TraceWarning, match=r"longest gap: 1286 hourly values"):
        trace = load_trace(path, max_gap=None)
    assert (trace.fmt, trace.zone, trace.signal) == ("reference", "US-CAL-CISO", "avg")
    assert trace.values[0] == pytest.approx(332.39)
    assert trace.end == pd.Timestamp("2020-02-26 01:00", tz="UTC")


def test_resample_15_to_60_is_the_hourly_mean(shared_dir: Path) -> None:
    quarter = _load_quietly(shared_dir / "traces/vessim-de-15min/carbon_intensity.csv")
    hourly = quarter.resample(60)
    assert hourly.step == pd.Timedelta(hours=1) and hourly.filled == quarter.filled
    assert len(hourly) == len(quarter) // 4
    expected = quarter.series["2020-06-01 12:00":"2020-06-01 12:45"].mean()
    assert hourly.window("2020-06-01 12:00", 1)[0] == pytest.approx(expected)


# --- resample, window, stats on hand-made traces -------------------------------------------


def test_resample_down_and_up() -> None:
    trace = from_values([1, 3, 5, 7, 2, 2, 2, 2], step_minutes=15)
    assert trace.resample(60).values.tolist() == [4.0, 2.0]
    assert trace.resample(30).values.tolist() == [2.0, 6.0, 2.0, 2.0]
    up = from_values([10, 20], step_minutes=60).resample(30)
    assert up.values.tolist() == [10.0, 10.0, 20.0, 20.0]
    assert up.series.index[1] == pd.Timestamp("2022-01-01 00:30", tz="UTC")
    assert trace.resample(15) is trace


def test_resample_drops_partial_slots_at_the_edges() -> None:
    # Starts at 00:30: the first full hour is 01:00; the last value (03:00) is a partial hour.
    trace = from_values([9, 1, 3, 5, 7, 4], start="2022-01-01 00:30", step_minutes=30)
    hourly = trace.resample(60)
    assert hourly.values.tolist() == [2.0, 6.0]
    assert hourly.start == pd.Timestamp("2022-01-01 01:00", tz="UTC")


@pytest.mark.parametrize("slot", [0, -15, 45])
def test_resample_rejects_nonsense(slot: int) -> None:
    with pytest.raises(TraceError):
        from_values([1.0] * 8, step_minutes=30).resample(slot)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 2000), min_size=1, max_size=12), st.sampled_from([2, 3, 4]))
def test_resample_keeps_the_mean(hours: list[float], k: int) -> None:
    fine = from_values(np.repeat(hours, k), step_minutes=60 // k)
    assert fine.resample(60).values == pytest.approx(hours)
    assert fine.resample(60).stats().mean == pytest.approx(fine.stats().mean)


def test_window_and_index_of() -> None:
    trace = from_values(np.arange(48.0), start="2022-03-01")
    assert trace.window("2022-03-01 05:00", 3).tolist() == [5.0, 6.0, 7.0]
    assert trace.index_of(pd.Timestamp("2022-03-01 06:00+01:00")) == 5  # converted to UTC
    window = trace.window("2022-03-02 23:00", 1)
    window[0] = -1  # a copy: the trace is untouched
    assert trace.values[-1] == 47.0
    with pytest.raises(ValueError, match="read-only"):
        trace.values[0] = 1.0


def test_window_past_the_end_names_the_span() -> None:
    trace = from_values(np.ones(48), start="2022-03-01")
    with pytest.raises(TraceError) as err:
        trace.window("2022-03-02 20:00", 10)
    message = str(err.value)
    assert "2022-03-01 00:00 UTC..2022-03-02 23:00 UTC" in message
    assert "4 slots" in message


@pytest.mark.parametrize(
    ("start", "match"),
    [("2022-02-28 23:00", "outside"), ("2022-03-01 00:30", "not a slot start"), ("soon", "time")],
)
def test_index_of_rejects_bad_starts(start: str, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        from_values(np.ones(48), start="2022-03-01").index_of(start)


def test_stats_by_hand() -> None:
    # Day 1 swings 100..300, day 2 is flat at 200; a trailing partial day is ignored.
    day1 = [100.0] * 12 + [300.0] * 12
    day2 = [200.0] * 24
    trace = from_values([*day1, *day2, 1000.0], zone="X")
    stats = trace.stats()
    values = np.array([*day1, *day2, 1000.0])
    assert stats.mean == pytest.approx(values.mean())
    assert stats.std == pytest.approx(values.std())
    assert stats.cv == pytest.approx(values.std() / values.mean())
    assert stats.daily_swing_mean == pytest.approx(100.0)  # (200 + 0) / 2
    assert stats.daily_swing_ratio_mean == pytest.approx(2.0)  # (3 + 1) / 2
    assert (stats.zone, stats.n, stats.step_minutes, stats.max) == ("X", 49, 60.0, 1000.0)
    assert stats.as_dict()["start"] == "2022-01-01T00:00:00+00:00"


def test_stats_without_a_full_day_are_nan() -> None:
    stats = from_values([0.0, 0.0, 0.0]).stats()
    assert stats.cv == 0.0
    assert np.isnan(stats.daily_swing_mean)
    assert stats.as_dict()["daily_swing_mean"] is None


@pytest.mark.parametrize(
    "values", [[], [1.0, float("nan")], [1.0, -2.0], [[1.0, 2.0]], [float("inf")], ["a"]]
)
def test_from_values_validates(values: list[object]) -> None:
    with pytest.raises(TraceError):
        from_values(values)  # type: ignore[arg-type]


def test_carbon_trace_rejects_irregular_series() -> None:
    index = pd.DatetimeIndex(["2022-01-01 00:00", "2022-01-01 01:00", "2022-01-01 03:00"], tz="UTC")
    with pytest.raises(TraceError, match="regular step"):
        CarbonTrace(pd.Series([1.0, 2.0, 3.0], index=index), "X", "avg", "test", "plain")
    with pytest.warns(TraceWarning, match="interpolated 1 of 4"):
        repaired = from_series(pd.Series([1.0, 2.0, 3.0], index=index), zone="X")
    assert repaired.values.tolist() == [1.0, 2.0, 2.5, 3.0]


# --- hand-made files, one per format --------------------------------------------------------


def test_electricitymaps_file_crlf_quoted_comma(tmp_path: Path) -> None:
    text = (
        f"{EM_HEADER}\n"
        '2023-01-01 00:00:00,USA,"PJM Interconnection, LLC",US-MIDA-PJM,299.98,365.25,1,1,,,\n'
        '2023-01-01 01:00:00,USA,"PJM Interconnection, LLC",US-MIDA-PJM,290.95,354.25,1,1,,,\n'
    )
    path = _write(tmp_path, text, newline="\r\n")
    trace = load_trace(path)
    assert (trace.fmt, trace.zone, trace.signal) == ("electricitymaps", "US-MIDA-PJM", "direct")
    assert trace.values.tolist() == [299.98, 290.95]
    assert load_trace(path, signal="lca", zone="us-mida-pjm").values.tolist() == [365.25, 354.25]
    with pytest.raises(TraceError, match="no rows for zone 'DE'"):
        load_trace(path, zone="DE")
    with pytest.raises(TraceError, match="unknown signal"):
        load_trace(path, signal="marginal")


def test_reference_file_with_unix_timestamps(tmp_path: Path) -> None:
    text = "timestamp,zone_name,carbon_intensity_avg\n1577840400,X,2\n1577836800,X,1\n"
    trace = load_trace(_write(tmp_path, text))
    assert (trace.fmt, trace.zone) == ("reference", "X")
    assert trace.start == pd.Timestamp("2020-01-01", tz="UTC")  # unsorted input is sorted
    assert trace.values.tolist() == [1.0, 2.0]


def test_zone_labels_files_that_name_no_zone(tmp_path: Path) -> None:
    text = "datetime,carbon_intensity_avg\n2020-01-01T00:00:00Z,1\n2020-01-01T01:00:00Z,2\n"
    path = _write(tmp_path, text, name="sample.csv")
    assert load_trace(path).zone == "sample"
    assert load_trace(path, zone="US-CAL-CISO").zone == "US-CAL-CISO"


def test_eia_file_with_empty_first_header_and_empty_rows(tmp_path: Path) -> None:
    text = (
        ",timestamp,NG,avg_CI\n"
        "0,2022-01-01 00:00:00+00:00,1,100\n"
        "1,2022-01-01 01:00:00+00:00,,\n"
        "2,2022-01-01 02:00:00+00:00,,\n"
        "3,2022-01-01 03:00:00+00:00,1,400\n"
    )
    with pytest.warns(TraceWarning, match="interpolated 2 of 4"):
        trace = load_trace(_write(tmp_path, text, name="TEST_NG_&_avgCI.csv"))
    assert (trace.fmt, trace.zone, trace.filled) == ("eia", "TEST", 2)
    assert trace.values.tolist() == [100.0, 200.0, 300.0, 400.0]


def test_plain_file_with_offsets_and_a_missing_timestamp(tmp_path: Path) -> None:
    text = (
        "time,carbon_intensity\n"
        "2022-01-01T01:00:00+01:00,10\n"  # = 00:00 UTC
        "2022-01-01T01:00:00Z,20\n"
        "2022-01-01T03:00:00Z,40\n"
    )
    with pytest.warns(TraceWarning):
        trace = load_trace(_write(tmp_path, text, name="mine.csv"), zone="lab")
    assert (trace.fmt, trace.zone, trace.filled) == ("plain", "lab", 1)
    assert trace.values.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert load_trace(_write(tmp_path, "timestamp,value\n2022-01-01,1\n2022-01-02,2\n")).zone == (
        "trace"
    )


def test_plain_two_columns_with_unusual_names(tmp_path: Path) -> None:
    trace = load_trace(_write(tmp_path, "when,NL\n2022-01-01 00:00,5\n2022-01-01 01:00,6\n"))
    assert (trace.fmt, trace.zone) == ("vessim", "NL")


def test_vessim_file_with_several_zones(tmp_path: Path) -> None:
    path = _write(tmp_path, "time,DE,FR\n2020-01-01 00:00:00,300,50\n2020-01-01 00:15:00,310,60\n")
    assert load_trace(path, zone="fr").values.tolist() == [50.0, 60.0]
    with pytest.raises(TraceError, match="several zones"):
        load_trace(path)


def test_duplicate_timestamps_are_an_error(tmp_path: Path) -> None:
    text = "time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,2\n2022-01-01 01:00,3\n"
    with pytest.raises(TraceError, match="duplicate timestamp 2022-01-01 01:00 on lines 3 and 4"):
        load_trace(_write(tmp_path, text))


def test_unknown_format_lists_formats_and_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "foo,bar,baz\n1,2,3\n")
    with pytest.raises(TraceError) as err:
        load_trace(path)
    message = str(err.value)
    assert "'foo', 'bar', 'baz'" in message
    for name in FORMATS:
        assert name in message


def test_negative_values_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"negative carbon intensity -5\.0 at 2022-01-01 01:00"):
        load_trace(_write(tmp_path, "time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,-5\n"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("time,value\n", "no data rows"),
        ("time,value\n2022-01-01 00:00,1\n", "one row"),
        ("time,value\n2022-01-01 00:00,\n2022-01-01 01:00,\n", "all rows are empty"),
        ("time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,high\n", "line 3: 'high'"),
        ("time,value\nyesterday,1\ntoday,2\n", "line 2: cannot parse timestamp 'yesterday'"),
        (
            "time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,2\n2022-01-01 02:00,2\n"
            "2022-01-01 02:20,3\n",
            "02:20 UTC is off the 60-minute grid",
        ),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        load_trace(_write(tmp_path, text))


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")
