"""Bad input files and options end in one clear line, never a traceback (issue 16, item 11).

A 105-byte trace with a 1 ms step made pandas allocate gigabytes; a year-9999 timestamp
raised ``OutOfBoundsDatetime``; ``advise --csv missing/x.csv`` raised ``OSError`` after the
whole sweep (and ``--report missing/...`` failed after the CSV was written). Inputs now
bound the work they can cause, outputs are checked before any work and written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carbonscaler import trace as trace_module
from carbonscaler.cli import app
from carbonscaler.outputs import (
    OutputError,
    atomic_path,
    atomic_write,
    check_output_file,
    check_output_folder,
)
from carbonscaler.profile import ProfileError, parse_profile_spec
from carbonscaler.trace import MAX_SLOTS, TraceError, from_values, load_trace

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def hourly(path: Path, hours: int = 72) -> Path:
    rows = "".join(
        f"2022-01-{1 + h // 24:02d}T{h % 24:02d}:00Z,{100 + h % 24}\n" for h in range(hours)
    )
    return write(path, "time,value\n" + rows)


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no other exception
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


# -- traces ----------------------------------------------------------------------------------


def test_a_millisecond_step_is_refused_at_once(tmp_path: Path) -> None:
    # The file of the report: 105 bytes, 1 ms steps and a gap that made the loader fill
    # 86 million slots.
    path = write(
        tmp_path / "ms.csv",
        "time,value\n2022-01-01T00:00:00.000Z,1\n2022-01-01T00:00:00.001Z,2\n"
        "2022-01-02T00:00:00.000Z,3\n",
    )
    assert path.stat().st_size < 110
    started = time.monotonic()
    with pytest.raises(TraceError, match=r"step is 0\.001 s; the shortest supported step is 1"):
        load_trace(path)
    assert time.monotonic() - started < 5
    assert "shortest supported step" in one_line_error(["traces", "show", "--trace", str(path)])


def test_a_span_of_too_many_slots_is_refused(tmp_path: Path) -> None:
    # 1-minute steps and a typo in a year: 41 million slots to fill.
    path = write(
        tmp_path / "typo.csv",
        "time,value\n2022-01-01T00:00Z,1\n2022-01-01T00:01Z,2\n2100-01-01T00:00Z,3\n",
    )
    with pytest.raises(TraceError, match=f"more than the {MAX_SLOTS:,} supported"):
        load_trace(path)


@pytest.mark.parametrize(
    ("rows", "line", "shown"),
    [
        ("2022-01-01T00:00Z,1\n2022-01-01T01:00Z,2\n9999-01-01T00:00Z,3\n", 4, "9999-01-01"),
        ("1600-01-01T00:00Z,1\n1600-01-01T01:00Z,2\n", 2, "1600-01-01"),
        ("1000000000,1\n1000003600,2\n99999999999,3\n", 4, "99999999999"),
        ("1000000000,1\n1000003600,2\n999999999999999,3\n", 4, "999999999999999"),
    ],
)
def test_timestamps_outside_the_range_name_their_line(
    tmp_path: Path, rows: str, line: int, shown: str
) -> None:
    path = write(tmp_path / "far.csv", "time,value\n" + rows)
    with pytest.raises(TraceError, match=f"line {line}: timestamp '{shown}[^']*' is outside"):
        load_trace(path)
    output = one_line_error(["traces", "show", "--trace", str(path)])
    assert f"line {line}" in output and "1677-09-22 .. 2262-04-11" in output


def test_upsampling_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_module, "MAX_SLOTS", 1000)
    trace = from_values([100.0] * 48)
    assert len(trace.resample(30)) == 96
    with pytest.raises(TraceError, match="would make 2,880 slots, more than the 1,000"):
        trace.resample(1)


def test_synthetic_traces_past_the_range_are_refused() -> None:
    with pytest.raises(TraceError, match="leave the supported range"):
        from_values([1.0] * 100, start="2262-04-11")


def test_plan_with_a_huge_server_count_is_refused(tmp_path: Path) -> None:
    path = hourly(tmp_path / "t.csv")
    with pytest.raises(ProfileError, match="1 to 10000 servers"):
        parse_profile_spec("amdahl:0.05,servers=inf")
    with pytest.raises(ProfileError, match="1 to 10000 servers"):
        parse_profile_spec("linear", default_servers=10**8)
    base = ["plan", "--start", "2022-01-01", "--length", "4", "--deadline", "12"]
    output = one_line_error(
        [*base, "--profile", "amdahl:0.05", "--trace", str(path), "--max", "100000000"]
    )
    assert "1 to 10000 servers" in output


# -- the advisor -----------------------------------------------------------------------------


def advise(trace: Path, *extra: str) -> list[str]:
    return [
        "advise",
        "--trace",
        str(trace),
        "--profile",
        "amdahl:0.05",
        "--length",
        "6",
        "--max",
        "2",
        "--policy",
        "carbonscaler",
        *extra,
    ]


def test_advise_checks_every_output_before_simulating(tmp_path: Path) -> None:
    path = hourly(tmp_path / "t.csv")
    csv = tmp_path / "runs.csv"
    output = one_line_error(advise(path, "--csv", str(tmp_path / "missing" / "x.csv")))
    assert "missing does not exist" in output
    # A bad --report no longer fails after the CSV was written: nothing is written.
    output = one_line_error(
        advise(path, "--csv", str(csv), "--report", str(tmp_path / "missing" / "r.html"))
    )
    assert "--report" in output and not csv.exists()
    assert "is a folder" in one_line_error(advise(path, "--csv", str(tmp_path)))
    assert "is a file" in one_line_error(advise(path, "--plot", str(path)))
    result = runner.invoke(app, advise(path, "--csv", str(csv), "--json"))
    assert result.exit_code == 0, result.output
    assert csv.read_text().startswith("trace,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "t.csv"]  # no temporaries


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--seed", "-1", "seed must be >= 0"),
        ("--price", "nan", "--price must be a finite number"),
        ("--rescale-overhead-s", "inf", "rescale overhead must be a finite number"),
    ],
)
def test_advise_refuses_numbers_that_mean_nothing(
    tmp_path: Path, option: str, value: str, reason: str
) -> None:
    assert reason in one_line_error(advise(hourly(tmp_path / "t.csv"), option, value))


def test_advise_bounds_the_sweep(tmp_path: Path) -> None:
    # A week at 1-minute slots, a 6 h job with 1.5x slack: 9,541 starts x 540 slots.
    rows = "".join(
        f"2022-01-{1 + m // 1440:02d}T{m % 1440 // 60:02d}:{m % 60:02d}Z,{100 + m % 97}\n"
        for m in range(7 * 1440)
    )
    path = write(tmp_path / "minutes.csv", "time,value\n" + rows)
    output = one_line_error(
        [*advise(path, "--slot-minutes", "1"), "--csv", str(tmp_path / "x.csv")]
    )
    assert "more than the 3,000,000 one sweep may hold" in output and "--starts 5555" in output
    assert not (tmp_path / "x.csv").exists()


def test_profile_command_checks_its_output_first(tmp_path: Path) -> None:
    started = time.monotonic()
    output = one_line_error(
        ["profile", "--command", "false", "--out", str(tmp_path / "missing" / "p.csv")]
    )
    assert "--out" in output and "does not exist" in output
    assert time.monotonic() - started < 10  # refused before any profiling run


# -- outputs ---------------------------------------------------------------------------------


def test_output_checks(tmp_path: Path) -> None:
    file = write(tmp_path / "f.txt", "x")
    assert check_output_file(tmp_path / "new.csv") == tmp_path / "new.csv"
    assert check_output_file(file) == file  # replaced when written
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_file(tmp_path / "no" / "x.csv")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output_file(file / "x.csv")
    assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # created later
    with pytest.raises(OutputError, match="is a file"):
        check_output_folder(file)
    with pytest.raises(OutputError, match="is not a folder"):
        check_output_folder(file / "sub")


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    target = write(tmp_path / "out.csv", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crashed while writing")
    assert target.read_text() == "old\n"
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write(tmp_path / "missing" / "x", b"data")
