"""``carbonscaler forecast evaluate``: how good a forecast model is on a trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from carbonscaler.cli._common import (
    TRACE_FLAGS,
    TRACE_HELP,
    YEAR_FLAGS,
    YEAR_HELP,
    ZONE_FLAGS,
    FillGapsOption,
    TzOption,
    console,
    open_trace,
    user_errors,
)
from carbonscaler.cli._progress import ProgressDisplay
from carbonscaler.forecast_names import FORECAST_MODELS

app = typer.Typer(
    help="Forecast models: how good they are on a trace.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("evaluate")
def evaluate_command(
    model: Annotated[
        str, typer.Option(help=f"One of: {', '.join(FORECAST_MODELS)} (not provider).")
    ],
    trace: Annotated[Path | None, typer.Option(*TRACE_FLAGS, help=TRACE_HELP)] = None,
    zone: Annotated[
        str | None, typer.Option(*ZONE_FLAGS, help="Offline dataset zone (with --year).")
    ] = None,
    year: Annotated[int | None, typer.Option(*YEAR_FLAGS, help=YEAR_HELP)] = None,
    fill_gaps: FillGapsOption = None,
    tz: TzOption = None,
    horizon: Annotated[float, typer.Option(help="Hours ahead to score (1-96).")] = 24.0,
    error: Annotated[
        float, typer.Option(help="Relative error for uniform/gaussian (0.1 = ±10 %).")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of uniform/gaussian noise.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Score a forecast model on a trace: a forecast issued at every hour (after two weeks of
    warm-up) for four days ahead, MAPE, MAE and interval coverage per lead-time band."""
    _evaluate(
        model=model,
        trace=trace,
        zone=zone,
        year=year,
        fill_gaps=fill_gaps,
        tz=tz,
        horizon=horizon,
        error=error,
        seed=seed,
        as_json=as_json,
    )


@user_errors
def _evaluate(
    *,
    model: str,
    trace: Path | None,
    zone: str | None,
    year: int | None,
    fill_gaps: int | None,
    tz: str | None,
    horizon: float,
    error: float,
    seed: int,
    as_json: bool,
) -> None:
    from rich.table import Table

    from carbonscaler.forecast import ForecastModel, ForecastSpec
    from carbonscaler.forecast_evaluation import evaluate_forecasts

    chosen = ForecastModel.parse(model)
    spec = ForecastSpec(chosen, error if chosen.is_noisy else 0.0, seed)
    series = open_trace(trace, zone, year, fill_gaps=fill_gaps, tz=tz)
    slot_hours = series.step.total_seconds() / 3600.0
    doing = f"scoring {chosen} forecasts on {series.zone}"
    if chosen is ForecastModel.LEARNED:
        doing += " (training the learned model first; cached for next time)"
    with ProgressDisplay(doing) as reporter:
        reporter.update(0)
        result = evaluate_forecasts(series.values, slot_hours, spec, horizon_h=horizon)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"{chosen} on {series.zone} ({series.source})")
    for column in ("lead time", "MAPE %", "MAE g/kWh", "80 % interval coverage %", "points"):
        table.add_column(column, justify="right")
    for band in result.bands:
        coverage = "—" if band.coverage_pct is None else f"{band.coverage_pct:.1f}"
        table.add_row(
            f"{band.first_h:g}–{band.last_h:g} h",
            f"{band.mape_pct:.1f}",
            f"{band.mae_g_per_kwh:.1f}",
            coverage,
            str(band.points),
        )
    coverage = "—" if result.coverage_pct is None else f"{result.coverage_pct:.1f}"
    table.add_row(
        f"[bold]1–{horizon:g} h[/]",
        f"[bold]{result.mape_pct:.1f}[/]",
        f"{result.mae_g_per_kwh:.1f}",
        coverage,
        str(result.points),
    )
    console().print(table)
