"""Traces are honest about their inputs (issue 15, "Honest about its inputs").

A gap is never invented silently: a few missing values are interpolated and reported (count,
longest gap) on the trace, in ``plan`` and ``traces show``; a longer gap is an error naming it
unless the user allows it (``--fill-gaps N`` / ``max_gap=N``). Naive timestamps are read in
``--tz``, or taken as UTC with a note; a daylight-saving duplicate says the file looks like
local time. Unparseable timestamps name their line. Electricity Maps readers default to the
direct signal everywhere, with LCA opt-in.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from carbonscaler import datasets
from carbonscaler.cli import app
from carbonscaler.cli._common import DEFAULT_FILL_GAPS
from carbonscaler.trace import (
    DEFAULT_MAX_GAP,
    CarbonTrace,
    TraceError,
    TraceWarning,
    from_series,
    load_trace,
)

runner = CliRunner()

EM_HEADER = (
    "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),"
    "Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,"
    "Data Source,Data Estimated,Data Estimation Method"
)
PLAN = ["plan", "--length", "4", "--deadline", "12", "--profile", "amdahl:0.05", "--max", "4"]


def _hours(start: str, periods: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq="h")


def _write(path: Path, stamps: Iterable[str], values: Iterable[float] | None = None) -> Path:
    stamps = list(stamps)
    values = list(values) if values is not None else [100.0 + i % 24 for i in range(len(stamps))]
    path.write_text(
        "time,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True))
    )
    return path


def _utc_file(path: Path, hours: int, missing: Iterable[str] = ()) -> Path:
    """Hourly values in UTC (with Z) from 2022-01-01, without the ``missing`` hours."""
    skip = {pd.Timestamp(m) for m in missing}
    stamps = [t for t in _hours("2022-01-01", hours) if t not in skip]
    return _write(path, (f"{t:%Y-%m-%dT%H:%M}Z" for t in stamps))


def _quiet(**kwargs: object) -> CarbonTrace:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        return load_trace(**kwargs)  # type: ignore[arg-type]


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error:")
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    return result.stderr


def _month_gap(tmp_path: Path) -> Path:
    """Jan..Mar 2022 hourly with February 2022 00:00 .. March 2 23:00 missing (720 h)."""
    month = [str(t) for t in pd.date_range("2022-02-01", periods=720, freq="h")]
    return _utc_file(tmp_path / "month.csv", 24 * 90, missing=month)


# -- gaps -------------------------------------------------------------------------------------


def test_the_default_is_three_values_in_the_library_and_the_cli() -> None:
    assert DEFAULT_MAX_GAP == DEFAULT_FILL_GAPS == 3


def test_a_two_slot_gap_is_filled_and_reported(tmp_path: Path) -> None:
    path = _utc_file(tmp_path / "t.csv", 72, missing=["2022-01-02 05:00", "2022-01-02 06:00"])
    with pytest.warns(TraceWarning, match="interpolated 2 of 72 values") as caught:
        trace = load_trace(path)
    assert trace.filled == 2 and len(trace) == 72
    assert trace.longest_gap is not None
    assert (trace.longest_gap.start, trace.longest_gap.values) == (
        pd.Timestamp("2022-01-02 05:00", tz="UTC"),
        2,
    )
    (note,) = trace.notes
    assert "longest gap: 2 hourly values (2 h) from 2022-01-02 05:00 UTC through" in note
    assert f"{path}: {note}" in [str(w.message) for w in caught]
    # The filled values lie on the line between the neighbours.
    window = trace.window("2022-01-02 04:00", 4)
    assert np.allclose(np.diff(window, 2), 0)
    # Resampling keeps what was said.
    assert trace.resample(30).notes == trace.notes


def test_a_720_hour_gap_is_an_error_naming_it(tmp_path: Path) -> None:
    path = _month_gap(tmp_path)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    message = str(err.value)
    assert (
        "no data for 720 hourly values (720 h = 30 days) from 2022-02-01 00:00 UTC through"
        " 2022-03-02 23:00 UTC" in message
    )
    assert "--fill-gaps 720" in message and "max_gap=720" in message
    assert "2022-01-01 00:00 UTC .. 2022-01-31 23:00 UTC" in message  # a stretch without it
    with pytest.raises(TraceError, match="720 hourly values"):
        load_trace(path, max_gap=719)


def test_the_720_hour_gap_is_filled_and_noted_when_allowed(tmp_path: Path) -> None:
    path = _month_gap(tmp_path)
    with pytest.warns(TraceWarning, match="interpolated 720 of 2160"):
        trace = load_trace(path, max_gap=720)
    assert trace.filled == 720 and len(trace) == 2160
    assert "longest gap: 720 hourly values (720 h = 30 days) from 2022-02-01" in trace.notes[0]
    assert _quiet(path=path, max_gap=None).filled == 720


@pytest.mark.parametrize(("missing", "allowed"), [(3, True), (4, False)])
def test_the_default_limit_is_three_values(tmp_path: Path, missing: int, allowed: bool) -> None:
    gap = [str(t) for t in _hours("2022-01-01 10:00", missing)]
    path = _utc_file(tmp_path / "t.csv", 48, missing=gap)
    if allowed:
        assert _quiet(path=path).filled == missing
    else:
        with pytest.raises(TraceError, match=f"{missing} hourly values"):
            load_trace(path)
        assert _quiet(path=path, max_gap=missing).filled == missing


def test_empty_values_and_edges_count_as_gaps(tmp_path: Path) -> None:
    stamps = [f"{t:%Y-%m-%dT%H:%M}Z" for t in _hours("2022-01-01", 8)]
    path = _write(tmp_path / "t.csv", stamps, ["", "", 3, 4, "", 6, 7, 8])  # type: ignore[list-item]
    trace = _quiet(path=path)
    assert trace.filled == 3 and trace.values.tolist()[:5] == [3.0, 3.0, 3.0, 4.0, 5.0]
    with pytest.raises(TraceError, match=r"no data for 2 hourly values .* from 2022-01-01 00:00"):
        load_trace(path, max_gap=1)
    with pytest.raises(TraceError, match=r"the longest of 2 gaps .* --fill-gaps 2\b"):
        load_trace(path, max_gap=0)


def test_from_series_has_the_same_rule() -> None:
    index = pd.date_range("2022-01-01", periods=10, freq="h", tz="UTC").delete([3, 4, 5, 6])
    series = pd.Series(np.arange(6.0), index=index)
    with pytest.raises(TraceError, match="no data for 4 hourly values"):
        from_series(series, zone="X")
    with pytest.warns(TraceWarning, match="interpolated 4 of 10"):
        assert from_series(series, zone="X", max_gap=None).filled == 4
    with pytest.raises(TraceError, match="whole number of values >= 0"):
        from_series(series, zone="X", max_gap=-1)


def test_real_shared_traces(shared_dir: Path) -> None:
    pjm = shared_dir / "traces/eia-sustaindc/PJM_NG_&_avgCI.csv"
    with pytest.raises(TraceError, match=r"22 hourly values .* from 2022-03-13 07:00 UTC"):
        load_trace(pjm)
    assert _quiet(path=pjm, max_gap=22).filled == 23
    # CISO's three empty hours are single ones: filled by default, and said.
    ciso = _quiet(path=shared_dir / "traces/eia-sustaindc/CISO_NG_&_avgCI.csv")
    assert ciso.filled == 3 and "interpolated 3 of 8760" in ciso.notes[0]
    # A complete Electricity Maps export needs no note at all (its column says UTC).
    nl = load_trace(shared_dir / "traces/electricitymaps-fedstale/NL_2022_hourly.csv")
    assert nl.notes == () and nl.longest_gap is None


@pytest.mark.skipif(not datasets.available(), reason="offline dataset not installed")
def test_the_offline_dataset_fills_and_notes() -> None:
    with pytest.warns(TraceWarning, match="interpolated 1706 of 8760"):
        trace = datasets.load("MK", 2017)
    assert any("longest gap: 216 hourly values" in note for note in trace.notes)
    with pytest.raises(TraceError, match="216 hourly values"):
        datasets.load("MK", 2017, max_gap=3)


# -- time zones -------------------------------------------------------------------------------


def test_naive_timestamps_are_taken_as_utc_with_a_note(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", (f"{t:%Y-%m-%d %H:%M}" for t in _hours("2022-01-01", 6)))
    with pytest.warns(TraceWarning, match="no time zone and were taken as UTC"):
        trace = load_trace(path)
    assert trace.start == pd.Timestamp("2022-01-01", tz="UTC")
    assert "--tz" in trace.notes[0]
    # Said explicitly: no note.
    assert load_trace(path, tz="UTC").notes == ()
    # With offsets in the file, there is nothing to assume.
    aware = _write(tmp_path / "a.csv", (f"{t:%Y-%m-%dT%H:%M}Z" for t in _hours("2022-01-01", 6)))
    assert load_trace(aware).notes == ()
    assert "not applied" in _quiet(path=aware, tz="Europe/Berlin").notes[0]


def test_an_electricity_maps_column_that_says_utc_needs_no_note(tmp_path: Path) -> None:
    path = tmp_path / "DE_2022_hourly.csv"
    path.write_text(
        f"{EM_HEADER}\n2022-01-01 00:00:00,DE,Germany,DE,300,400,1,1,,,\n"
        "2022-01-01 01:00:00,DE,Germany,DE,310,410,1,1,,,\n"
    )
    assert load_trace(path).notes == ()


def test_tz_reads_local_time_and_converts_to_utc(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", (f"{t:%Y-%m-%d %H:%M}" for t in _hours("2022-07-01", 6)))
    trace = load_trace(path, tz="Europe/Berlin")
    assert trace.start == pd.Timestamp("2022-06-30 22:00", tz="UTC") and trace.notes == ()
    assert load_trace(path, tz="+05:30").start == pd.Timestamp("2022-06-30 18:30", tz="UTC")
    with pytest.raises(TraceError, match="unknown time zone 'Mars/Base'"):
        load_trace(path, tz="Mars/Base")


def _berlin_local(start: str, end: str, freq: str = "h") -> list[str]:
    local = pd.date_range(start, end, freq=freq, tz="Europe/Berlin")
    return [f"{t:%Y-%m-%d %H:%M}" for t in local]


def test_a_daylight_saving_duplicate_says_local_time_and_tz(tmp_path: Path) -> None:
    # Local wall-clock times through the night clocks go back: 02:00 occurs twice.
    stamps = _berlin_local("2022-10-29 22:00", "2022-10-30 06:00")
    assert stamps.count("2022-10-30 02:00") == 2
    path = _write(tmp_path / "local.csv", stamps, range(len(stamps)))
    with pytest.raises(TraceError) as err:
        load_trace(path)
    message = str(err.value)
    assert "duplicate timestamp 2022-10-30 02:00 on lines 6 and 7" in message
    assert "looks like local time" in message and "--tz" in message
    # Read as local time: one hour per row, in file order, no gap and no note.
    trace = load_trace(path, tz="Europe/Berlin")
    assert trace.notes == () and len(trace) == len(stamps)
    assert trace.start == pd.Timestamp("2022-10-29 20:00", tz="UTC")
    assert trace.values.tolist() == [float(i) for i in range(len(stamps))]
    # The same through the CLI: one line, exit code 2.
    output = _one_line_error(["traces", "show", str(path)])
    assert "looks like local time" in output and "--tz" in output
    shown = runner.invoke(app, ["traces", "show", str(path), "--tz", "Europe/Berlin", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["start"] == "2022-10-29T20:00:00+00:00"


def test_a_missing_spring_hour_is_filled_and_says_local_time(tmp_path: Path) -> None:
    stamps = _berlin_local("2022-03-26 22:00", "2022-03-27 06:00")
    assert "2022-03-27 02:00" not in stamps
    path = _write(tmp_path / "spring.csv", stamps)
    trace = _quiet(path=path)
    assert trace.filled == 1
    assert "looks like clocks going forward" in trace.notes[-1] and "--tz" in trace.notes[-1]
    assert _quiet(path=path, tz="Europe/Berlin").filled == 0
    # At 15-minute steps the missing hour is 4 values: an error, with the same hint.
    quarter = _write(
        tmp_path / "q.csv", _berlin_local("2022-03-26 22:00", "2022-03-27 06:00", "15min")
    )
    with pytest.raises(TraceError, match=r"clocks going forward.*--fill-gaps 4"):
        load_trace(quarter)
    assert _quiet(path=quarter, tz="Europe/Berlin").filled == 0


def test_a_time_the_zone_skips_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", (f"{t:%Y-%m-%d %H:%M}" for t in _hours("2022-03-27", 5)))
    with pytest.raises(TraceError, match="line 4: '2022-03-27 02:00' does not exist in Europe"):
        load_trace(path, tz="Europe/Berlin")


@pytest.mark.parametrize(
    ("bad", "line"), [("2022-13-01 00:00", 5), ("01/02/2022 soon", 3), ("noon", 2)]
)
def test_an_unparseable_timestamp_names_its_line(tmp_path: Path, bad: str, line: int) -> None:
    stamps = [f"{t:%Y-%m-%d %H:%M}" for t in _hours("2022-01-01", 6)]
    stamps[line - 2] = bad
    path = _write(tmp_path / "t.csv", stamps)
    with pytest.raises(TraceError, match=f"line {line}: cannot parse timestamp '{bad}'"):
        load_trace(path)
    output = _one_line_error(["traces", "show", str(path)])
    assert f"line {line}" in output and bad in output


# -- through the CLI ----------------------------------------------------------------------------


def test_plan_json_shows_the_notes(tmp_path: Path) -> None:
    path = _utc_file(tmp_path / "t.csv", 72, missing=["2022-01-01 05:00", "2022-01-01 06:00"])
    result = runner.invoke(app, [*PLAN, "--trace", str(path), "--start", "2022-01-01", "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("interpolated 2 of 72 values" in note for note in notes)
    assert "warning:" not in result.stderr  # said once, in the result


def test_plan_table_prints_the_notes(tmp_path: Path) -> None:
    path = _utc_file(tmp_path / "t.csv", 72, missing=["2022-01-01 05:00"])
    result = runner.invoke(
        app, [*PLAN, "--trace", str(path), "--start", "2022-01-01"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "note: interpolated 1 of 72 values" in result.stdout


def test_plan_on_a_720_hour_gap_is_one_clear_line(tmp_path: Path) -> None:
    path = _month_gap(tmp_path)
    args = [*PLAN, "--trace", str(path), "--start", "2022-02-10"]
    output = _one_line_error(args)
    assert "720 hourly values" in output and "2022-02-01 00:00 UTC" in output
    assert "--fill-gaps 720" in output
    result = runner.invoke(app, [*args, "--fill-gaps", "720", "--json"])
    assert result.exit_code == 0, result.output
    (note,) = json.loads(result.stdout)["notes"]
    assert "interpolated 720 of 2160 values" in note and "longest gap: 720 hourly" in note


def test_plan_tz_and_the_utc_note(tmp_path: Path) -> None:
    stamps = [f"{t:%Y-%m-%d %H:%M}" for t in _hours("2022-07-01", 48)]
    path = _write(tmp_path / "t.csv", stamps)
    args = [*PLAN, "--trace", str(path), "--json"]
    assumed = runner.invoke(app, [*args, "--start", "2022-07-01"])
    assert assumed.exit_code == 0, assumed.output
    assert any("taken as UTC" in note for note in json.loads(assumed.stdout)["notes"])
    local = runner.invoke(app, [*args, "--start", "2022-06-30T22:00Z", "--tz", "Europe/Berlin"])
    assert local.exit_code == 0, local.output
    out = json.loads(local.stdout)
    assert out["notes"] == [] or not any("UTC" in n for n in out["notes"])
    assert out["carbon_intensity"][0] == 100.0  # local midnight is 22:00 UTC


def test_traces_show_prints_notes_and_json(tmp_path: Path) -> None:
    path = _utc_file(tmp_path / "t.csv", 72, missing=["2022-01-02 05:00", "2022-01-02 06:00"])
    table = runner.invoke(app, ["traces", "show", str(path)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "note: interpolated 2 of 72 values" in table.stdout
    assert "2 hourly values (2 h) from 2022-01-02 05:00 UTC" in table.stdout
    shown = json.loads(runner.invoke(app, ["traces", "show", str(path), "--json"]).stdout)
    assert shown["filled"] == 2 and len(shown["notes"]) == 1 and shown["warnings"] == []
    assert shown["longest_gap"] == {
        "start": "2022-01-02T05:00:00+00:00",
        "values": 2,
        "end": "2022-01-02T06:00:00+00:00",
    }


def test_traces_list_shows_the_longest_gap(tmp_path: Path) -> None:
    _month_gap(tmp_path)
    result = runner.invoke(app, ["traces", "list", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["kind"] == "file"]
    assert (row["filled"], row["longest_gap"]) == (720, 720)
    assert row["longest_gap_start"] == "2022-02-01T00:00:00+00:00"


def test_advise_warns_about_what_it_filled(tmp_path: Path) -> None:
    path = _utc_file(tmp_path / "t.csv", 96, missing=["2022-01-02 05:00"])
    result = runner.invoke(
        app,
        [
            "advise",
            "--trace",
            str(path),
            "--profile",
            "linear",
            "--length",
            "4",
            "--slack",
            "2",
            "--max",
            "2",
            "--starts",
            "3",
            "--policy",
            "carbonscaler",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "interpolated 1 of 96 values" in result.stderr


# -- signals ----------------------------------------------------------------------------------


def test_direct_is_the_default_signal_everywhere(tmp_path: Path) -> None:
    from carbonscaler.providers.electricitymaps import ElectricityMaps

    assert ElectricityMaps("DE", api_key="x").emission_factor == "direct"
    assert ElectricityMaps("DE", api_key="x", emission_factor="lca").emission_factor == (
        "lifecycle"
    )
    path = tmp_path / "DE_2022_hourly.csv"
    path.write_text(
        f"{EM_HEADER}\n2022-01-01 00:00:00,DE,Germany,DE,300,400,1,1,,,\n"
        "2022-01-01 01:00:00,DE,Germany,DE,310,410,1,1,,,\n"
    )
    assert load_trace(path).signal == "direct"
    shown = json.loads(runner.invoke(app, ["traces", "show", str(path), "--json"]).stdout)
    assert (shown["signal"], shown["mean"]) == ("direct", 305.0)
    lca = runner.invoke(app, ["traces", "show", str(path), "--signal", "lca", "--json"])
    assert (json.loads(lca.stdout)["signal"], json.loads(lca.stdout)["mean"]) == ("lca", 405.0)
    planned = runner.invoke(
        app,
        [
            "plan",
            "--trace",
            str(path),
            "--start",
            "2022-01-01",
            "--length",
            "1",
            "--deadline",
            "2",
            "--profile",
            "linear",
            "--max",
            "1",
            "--json",
        ],
    )
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["carbon_intensity"][0] == 300.0


# -- the same options wherever a trace file is read ---------------------------------------


def _job_spec(tmp_path: Path, trace: Path, **carbon: object) -> Path:
    spec = {
        "name": "gappy",
        "workload": {"command": "true"},
        "profile": "amdahl:0.05",
        "minReplicas": 1,
        "maxReplicas": 2,
        "length_hours": 4,
        "slack": 2,
        "carbon": {"trace": str(trace), "start": "2022-02-10T00:00Z", **carbon},
        "checkpoint_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_a_job_spec_names_the_gap_and_fills_it_when_told(tmp_path: Path) -> None:
    path = _month_gap(tmp_path)
    output = _one_line_error(["run", "--simulate", str(_job_spec(tmp_path, path))])
    assert "720 hourly values" in output and "fill_gaps: 720" in output
    filled = _job_spec(tmp_path, path, fill_gaps=720)
    result = runner.invoke(app, ["run", "--simulate", str(filled), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["completed"] is True


def test_a_job_spec_reads_local_time_with_tz(tmp_path: Path) -> None:
    # Berlin local times with the clocks going back on 2022-10-30: ambiguous without tz.
    path = _write(tmp_path / "local.csv", _berlin_local("2022-10-29", "2022-11-02"))
    output = _one_line_error(["run", "--simulate", str(_job_spec(tmp_path, path))])
    assert "carbon: tz:" in output
    spec = _job_spec(tmp_path, path, tz="Europe/Berlin")
    spec.write_text(spec.read_text().replace("2022-02-10T00:00Z", "2022-10-29T12:00Z"))
    result = runner.invoke(app, ["run", "--simulate", str(spec), "--json"])
    assert result.exit_code == 0, result.output


def test_the_carbon_service_takes_fill_gaps(tmp_path: Path) -> None:
    from carbonscaler.services import CarbonServiceConfig, create_app

    path = _month_gap(tmp_path)
    refused = runner.invoke(
        app, ["carbon-service", "--trace", str(path), "--db-path", str(tmp_path / "s.db")]
    )
    assert refused.exit_code == 2, refused.output
    assert "--fill-gaps 720" in refused.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        create_app(CarbonServiceConfig(db_path=tmp_path / "s.db", carbon_path=path, max_gap=720))
    with pytest.raises(TraceError, match="720 hourly values"):
        create_app(CarbonServiceConfig(db_path=tmp_path / "t.db", carbon_path=path))


def test_every_command_that_reads_a_trace_file_takes_fill_gaps_and_tz() -> None:
    from typing import Any

    import typer.main

    def walk(command: Any, path: str) -> Iterable[tuple[str, Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    readers = []
    for path, command in walk(typer.main.get_command(app), "carbonscaler"):
        flags = {flag for param in command.params for flag in getattr(param, "opts", [])}
        if "--trace" in flags or "--carbon-path" in flags:
            readers.append(path)
            assert {"--fill-gaps", "--tz"} <= flags, f"{path} reads traces without both"
    assert len(readers) >= 8, readers  # plan, advise, run's siblings, services, cluster ...
