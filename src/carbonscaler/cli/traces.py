"""``carbonscaler traces``: list and inspect carbon-intensity traces.

Mounted by the main CLI as ``app.add_typer(traces_app, name="traces")``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from carbonscaler.cli._common import (
    DEFAULT_FILL_GAPS,
    TRACE_FLAGS,
    TRACE_HELP,
    YEAR_FLAGS,
    ZONE_FLAGS,
    FillGapsOption,
    TzOption,
    open_trace,
)

if TYPE_CHECKING:
    from carbonscaler.trace import CarbonTrace

app = typer.Typer(
    help="List and inspect carbon-intensity traces: CSV files and the offline ENTSO-E dataset.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_ERROR_BRIEF = 90  # characters of a load error shown in the `list` table


@app.command("list")
def list_traces(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Also list the CSV trace files under this folder (recursive)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the offline dataset's zones and years, and optionally the trace files in a folder."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from carbonscaler import datasets

    if directory is not None and not directory.is_dir():
        _fail(f"{directory}: not a folder")
    rows: list[dict[str, object]] = []
    if datasets.available():
        by_zone: dict[str, list[datasets.DatasetEntry]] = {}
        for entry in datasets.catalogue():
            by_zone.setdefault(entry.zone, []).append(entry)
        for zone, entries in by_zone.items():
            rows.append(
                {
                    "kind": "dataset",
                    "name": f"{datasets.DATASET_NAME}:{zone}",
                    "zone": zone,
                    "years": [e.year for e in entries],
                    "step_minutes": sorted({e.step_minutes for e in entries}),
                }
            )
    else:
        _note("the offline dataset that ships with carbonscaler is missing: reinstall the package")
    if directory is not None:
        rows.extend(_file_row(path, directory) for path in sorted(directory.rglob("*.csv")))

    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    if any(r["kind"] == "dataset" for r in rows):
        table = Table(title=f"Offline dataset {datasets.DATASET_NAME} (ENTSO-E generation mix)")
        for header in ("zone", "years", "native step"):
            table.add_column(header)
        for r in rows:
            if r["kind"] == "dataset":
                table.add_row(
                    str(r["zone"]),
                    _years(_ints(r["years"])),
                    "/".join(f"{m} min" for m in _ints(r["step_minutes"])),
                )
        console.print(table)
    if directory is not None:
        table = Table(title=f"Trace files under {directory}")
        table.add_column("file", overflow="fold")
        for header in ("format", "zone", "span (UTC)"):
            table.add_column(header, no_wrap=True)
        for header in ("rows", "filled", "longest gap"):
            table.add_column(header, justify="right", no_wrap=True)
        failed = []
        for r in rows:
            if r["kind"] != "file":
                continue
            if "error" in r:
                table.add_row(escape(str(r["path"])), "[red]error[/red]")
                failed.append(r)
            else:
                table.add_row(
                    escape(str(r["path"])),
                    str(r["format"]),
                    str(r["zone"]),
                    f"{str(r['start'])[:10]} .. {str(r['end'])[:10]}",
                    str(r["rows"]),
                    str(r["filled"]),
                    _gap_cell(r),
                )
        console.print(table)
        if any(_needs_fill(r) for r in rows):
            console.print(
                f"[yellow]*[/yellow] a gap longer than {DEFAULT_FILL_GAPS} values: loading that"
                " file is an error unless --fill-gaps allows it",
                highlight=False,
            )
        for r in failed:
            # Messages start with the full path; the relative one is enough here.
            brief = str(r["error"]).split(": ", 1)[-1][:_ERROR_BRIEF]
            console.print(f"[red]{escape(str(r['path']))}[/red]: {escape(brief)}", highlight=False)


@app.command("show")
def show(
    zone_or_path: Annotated[
        str | None,
        typer.Argument(
            metavar="[ZONE_OR_PATH]",
            help="A trace CSV file, or an offline-dataset zone such as DE (or use --trace or "
            "--zone).",
        ),
    ] = None,
    trace_path: Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)] = None,
    zone: Annotated[
        str | None,
        typer.Option(
            *ZONE_FLAGS,
            help="An offline-dataset zone; with --trace, the zone to select in the file.",
        ),
    ] = None,
    year: Annotated[
        int | None,
        typer.Option(*YEAR_FLAGS, help="Dataset year (default: the latest available)."),
    ] = None,
    signal: Annotated[
        str | None,
        typer.Option(
            help="direct or lca for Electricity Maps files (default: direct, as every command "
            "and the Electricity Maps provider; lca is opt-in). The offline dataset has lca only."
        ),
    ] = None,
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show summary statistics of a trace file or an offline-dataset zone, and what loading
    it repaired or assumed (interpolated gaps, timestamps taken as UTC)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if zone_or_path is not None:
        if trace_path is not None or zone is not None:
            _fail("give ZONE_OR_PATH, or --trace PATH / --zone ZONE, not both")
        path = Path(zone_or_path)
        if path.is_file():
            trace_path = path
        elif "/" in zone_or_path or "\\" in zone_or_path or path.suffix.lower() == ".csv":
            _fail(f"{zone_or_path}: no such file")
        else:
            zone = zone_or_path
    if trace_path is None and zone is None:
        _fail("give a trace file or an offline-dataset zone: ZONE_OR_PATH, --trace or --zone")
    if trace_path is not None:
        if year is not None:
            _fail("--year selects a dataset year; it does not apply to a file")
    elif signal is not None and signal.strip().lower() != "lca":
        _fail(f"the offline dataset has only the 'lca' signal, not {signal!r}")
    file, name = trace_path, zone
    trace, caught = _capture(
        lambda: open_trace(file, name, year, signal=signal or "direct", fill_gaps=fill_gaps, tz=tz)
    )
    # The loader's notes also come as warnings: keep only the warnings that say more.
    noted = {f"{trace.source}: {note}" for note in trace.notes}
    others = [message for message in caught if message not in noted]

    stats = trace.stats()
    gap = trace.longest_gap
    summary: dict[str, object] = {
        "source": trace.source,
        "format": trace.fmt,
        "signal": trace.signal,
        **stats.as_dict(),
        "longest_gap": None
        if gap is None
        else {"start": gap.start.isoformat(), "values": gap.values, "end": gap.last.isoformat()},
        "notes": list(trace.notes),
        "warnings": others,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for message in others:
        _note(message)
    table = Table(title=f"{trace.zone} ({trace.signal}) from {trace.source}", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    unit = "gCO2eq/kWh"
    for label, value in (
        ("span (UTC)", f"{_short(stats.start.isoformat())} .. {_short(stats.end.isoformat())}"),
        ("step", f"{stats.step_minutes:g} min"),
        ("rows", str(stats.n)),
        ("filled (interpolated)", str(stats.filled)),
        ("longest gap filled", "none" if gap is None else gap.describe()),
        ("format", trace.fmt),
        ("signal", _signal_text(trace.signal, dataset=trace.fmt == "entsoe-dataset")),
        ("mean", f"{stats.mean:.1f} {unit}"),
        ("min", f"{stats.min:.1f} {unit}"),
        ("max", f"{stats.max:.1f} {unit}"),
        ("std", f"{stats.std:.1f} {unit}"),
        ("cv (std/mean)", f"{stats.cv:.3f}"),
        ("daily swing, mean", _maybe(stats.daily_swing_mean, f"{{:.1f}} {unit}")),
        ("daily max/min, mean", _maybe(stats.daily_swing_ratio_mean, "{:.2f}x")),
    ):
        table.add_row(label, escape(value))
    Console().print(table)
    for note in trace.notes:
        Console().print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)


def _capture(load: Callable[[], CarbonTrace]) -> tuple[CarbonTrace, list[str]]:
    """Run a loader, turning trace errors into a CLI error and warnings into notes."""
    from carbonscaler.datasets import DatasetError
    from carbonscaler.trace import TraceError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trace = load()
        except (TraceError, DatasetError) as exc:
            _fail(str(exc))
    return trace, [str(w.message) for w in caught]


def _file_row(path: Path, root: Path) -> dict[str, object]:
    from carbonscaler.trace import TraceError, load_trace

    name = str(path.relative_to(root))
    try:
        with warnings.catch_warnings():
            # Repairs show up in the "filled" and "longest gap" columns (and, with --json, in
            # the notes); per-file warnings would bury the table. Any gap is filled here, to
            # show how long it is.
            warnings.simplefilter("ignore")
            trace = load_trace(path, max_gap=None)
    except TraceError as exc:
        return {"kind": "file", "path": name, "error": str(exc)}
    gap = trace.longest_gap
    return {
        "kind": "file",
        "path": name,
        "format": trace.fmt,
        "zone": trace.zone,
        "signal": trace.signal,
        "start": trace.start.isoformat(),
        "end": trace.end.isoformat(),
        "rows": len(trace),
        "step_minutes": trace.step.total_seconds() / 60,
        "filled": trace.filled,
        "longest_gap": 0 if gap is None else gap.values,
        "longest_gap_start": None if gap is None else gap.start.isoformat(),
        "notes": list(trace.notes),
    }


def _fail(message: str) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[red]error:[/red] {escape(' '.join(message.split()))}", soft_wrap=True, highlight=False
    )
    raise typer.Exit(2)


def _note(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]note:[/yellow] {escape(message)}", highlight=False)


def _needs_fill(row: dict[str, object]) -> bool:
    gap = row.get("longest_gap")
    return isinstance(gap, int) and gap > DEFAULT_FILL_GAPS


def _gap_cell(row: dict[str, object]) -> str:
    gap = row.get("longest_gap")
    if not gap:
        return "-"
    star = " [yellow]*[/yellow]" if _needs_fill(row) else ""
    return f"{gap} from {str(row['longest_gap_start'])[:16].replace('T', ' ')}{star}"


def _signal_text(signal: str, *, dataset: bool) -> str:
    if dataset:
        return f"{signal} (life-cycle, production-based: the offline dataset's only signal)"
    return {
        "direct": "direct (operational; the default)",
        "lca": "lca (life-cycle)",
        "avg": "avg (the file's only signal)",
    }.get(signal, signal)


def _ints(value: object) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list) else []


def _years(years: list[int]) -> str:
    """Compact year list: 2017-2020, or 2017, 2019 when not consecutive."""
    if len(years) > 1 and years == list(range(years[0], years[-1] + 1)):
        return f"{years[0]}-{years[-1]}"
    return ", ".join(map(str, years))


def _short(iso: str) -> str:
    """'2022-01-01T00:00:00+00:00' -> '2022-01-01 00:00'."""
    return iso[:16].replace("T", " ")


def _maybe(value: float, template: str) -> str:
    return "n/a" if math.isnan(value) else template.format(value)
