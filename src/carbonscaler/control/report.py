"""A run's report: what it says (one set of words for every view) and the files on disk.

The words come from pure functions of a :class:`~carbonscaler.control.controller.RunReport`,
shared by the terminal (``carbonscaler run``/``demo``), the HTML page and the figure:

* :func:`headline` — one sentence: "saved 7.2 % — 481.9 g instead of 521.2 g — finishing
  1.2 h before the deadline";
* :func:`deadline_verdict` — when it finished against its deadline, rounded so that the figure
  and the verdict agree (:func:`carbonscaler.wording.hours_beside`);
* :func:`summary_rows` — the report as (label, value) rows, hours at each server count
  included;
* :func:`prediction_rows` and :func:`prediction_note` — the advisor's prediction beside the
  measurement (the demo), and one line on why they differ.

:func:`write_run_report` writes ``report.json``, ``report.png`` and ``report.html`` (rendered
from ``templates/run_report.html.j2``).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from carbonscaler.control.controller import RunReport
from carbonscaler.outputs import OutputError, atomic_write, check_output_folder
from carbonscaler.templating import render
from carbonscaler.wording import (
    at_time,
    duration,
    finish_margin,
    grams,
    hours,
    hours_beside,
    level_hours,
    percent,
    saving,
    span,
)

__all__ = [
    "PREDICTION_KEYS",
    "dates",
    "deadline_verdict",
    "finish_words",
    "has_prediction",
    "headline",
    "prediction_note",
    "prediction_rows",
    "run_figure",
    "summary_rows",
    "write_run_report",
]

PREDICTION_KEYS = (
    "advisor_emissions_g",
    "advisor_agnostic_emissions_g",
    "advisor_savings_pct",
)
"""The keys of the advisor's prediction (``carbonscaler demo``) that the report shows."""


# -- the words -------------------------------------------------------------------------------


def _done_pct(report: RunReport) -> str:
    """Progress of an unfinished run, never rounded up to 100 %."""
    return f"{math.floor(report.progress_pct * 10) / 10:.1f} %"


def _ran_h(report: RunReport) -> float:
    return sum(report.hours_by_servers.values())


def deadline_verdict(report: RunReport) -> str:
    """When the run finished against its deadline, in words that agree with their numbers:
    ``"finished at 34.8 h, 1.2 h before the deadline (36 h)"``, ``"finished at 36.004 h, 15 s
    after the deadline (36 h): missed"``, ``"not finished: 40.0 % done after 12.3 h (deadline
    36 h)"``."""
    deadline = report.deadline_hours
    done = report.completion_hours
    if not report.completed or done is None:
        return (
            f"not finished: {_done_pct(report)} done after {_ran_h(report):.1f} h "
            f"(deadline {hours(deadline)})"
        )
    return finish_words(done, deadline, report.deadline_met)


def finish_words(completion_h: float, deadline_h: float, met: bool) -> str:
    """``"finished at 34.8 h, 1.2 h before the deadline (36 h)"``, or ``"...: missed"``; the
    completion is shown with the decimals it takes to stand on its side of the deadline."""
    text = (
        f"finished at {hours_beside(completion_h, deadline_h)}, "
        f"{finish_margin(completion_h, deadline_h, met)} ({hours(deadline_h)})"
    )
    return text if met else f"{text}: missed"


def headline(report: RunReport) -> str:
    """The run in one sentence: ``"saved 7.2 % — 481.9 g instead of 521.2 g — finishing 1.2 h
    before the deadline"`` (or "missing the deadline by 15 s"; or, unfinished, "not finished —
    40.0 % done after 12.3 h, 101.2 g so far")."""
    emitted, agnostic = report.emissions_g, report.agnostic_emissions_g
    done = report.completion_hours
    if not report.completed or done is None:
        return (
            f"not finished — {_done_pct(report)} done after {_ran_h(report):.1f} h, "
            f"{grams(emitted)} so far"
        )
    if report.deadline_met:
        when = f"finishing {finish_margin(done, report.deadline_hours, True)}"
    else:
        when = f"missing the deadline by {duration(done - report.deadline_hours)}"
    return (
        f"{saving(report.savings_pct)} — {grams(emitted, agnostic)} instead of "
        f"{grams(agnostic, emitted)} — {when}"
    )


def _seconds(s: float) -> str:
    """``"25 s"``, ``"2.4 s"``, ``"0.03 s"``: rescale times, from milliseconds to minutes."""
    return f"{s:.0f} s" if s >= 10 else (f"{s:.1f} s" if s >= 1 else f"{s:.2f} s")


def _energy(kwh: float) -> str:
    if kwh >= 100:
        return f"{kwh:,.0f} kWh"
    return f"{kwh:.2f} kWh" if kwh >= 1 else f"{kwh:.3g} kWh"


def dates(report: RunReport) -> str | None:
    """``"arrived 2020-03-02 00:00 UTC, deadline 2020-03-03 12:00 UTC, finished 2020-03-03
    10:48 UTC"``; None where the run's start time is unknown (a simulation of a live source)."""
    arrived = at_time(report.start_utc, 0.0)
    if arrived is None:
        return None
    parts = [f"arrived {arrived}", f"deadline {at_time(report.start_utc, report.deadline_hours)}"]
    if report.completed and report.completion_hours is not None:
        parts.append(f"finished {at_time(report.start_utc, report.completion_hours)}")
    return ", ".join(parts)


def summary_rows(report: RunReport) -> list[tuple[str, str]]:
    """The report as (label, value) rows, for the terminal table and the HTML page alike."""
    emitted, agnostic = report.emissions_g, report.agnostic_emissions_g
    by_level = report.hours_by_servers
    rows = [
        ("outcome", deadline_verdict(report)),
        ("emissions", f"{grams(emitted, agnostic)} ({_energy(report.energy_kwh)})"),
        (
            "carbon-agnostic",
            f"{grams(agnostic, emitted)} (the same work at minReplicas from arrival)",
        ),
        ("saving", saving(report.savings_pct) if report.completed else "— (not finished)"),
        ("hours at each level", "; ".join(level_hours(by_level)) or "not recorded"),
    ]
    if by_level:
        server_h = sum(k * h for k, h in by_level.items())
        rows.append(("server-hours", f"{server_h:.1f}"))
    changes = f"{report.rescales} / {report.replans} / {report.restarts}"
    if report.rescales and report.mean_rescale_s > 0:
        changes += f" (a rescale took {_seconds(report.mean_rescale_s)} on average)"
    rows.append(("rescales / re-plans / restarts", changes))
    rows.append(("carbon", report.carbon_source))
    when = dates(report)
    if when is not None:
        rows.append(("dates", when))
    if report.degraded or report.unobserved_slots:
        rows.append(
            (
                "carbon source",
                f"down for {len(report.unobserved_slots)} slot(s): planned on the last forecast",
            )
        )
    rows.append(("power", report.power_source))
    rows.append(("profile", report.profile_source))
    return rows


def has_prediction(prediction: Mapping[str, Any] | None) -> bool:
    """Whether ``prediction`` carries the advisor's numbers (:data:`PREDICTION_KEYS`)."""
    return prediction is not None and all(k in prediction for k in PREDICTION_KEYS)


def _off(measured: float, predicted: float) -> str:
    """How far a measurement is from its prediction, relative: ``"3.1 % more"``."""
    if not (predicted and math.isfinite(measured) and math.isfinite(predicted)):
        return "—"
    rel = 100.0 * (measured / predicted - 1.0)
    if round(rel, 1) == 0:
        return "the same"
    return f"{abs(rel):.1f} % {'more' if rel > 0 else 'less'}"


def prediction_rows(
    report: RunReport, prediction: Mapping[str, Any]
) -> list[tuple[str, str, str, str]]:
    """(quantity, measured, advisor's prediction, difference) for the emissions, the
    carbon-agnostic baseline and the saving."""
    emitted, agnostic = report.emissions_g, report.agnostic_emissions_g
    p_emitted = float(prediction["advisor_emissions_g"])
    p_agnostic = float(prediction["advisor_agnostic_emissions_g"])
    p_saving = float(prediction["advisor_savings_pct"])
    points = report.savings_pct - p_saving
    return [
        (
            "emissions",
            grams(emitted, p_emitted),
            grams(p_emitted, emitted),
            _off(emitted, p_emitted),
        ),
        (
            "carbon-agnostic",
            grams(agnostic, p_agnostic),
            grams(p_agnostic, agnostic),
            _off(agnostic, p_agnostic),
        ),
        (
            "saving",
            saving(report.savings_pct),
            saving(p_saving),
            f"{abs(points):.1f} points {'more' if points > 0 else 'less'}"
            if round(points, 1)
            else "the same",
        ),
    ]


def prediction_note(report: RunReport, prediction: Mapping[str, Any]) -> str:
    """One line on why the measured saving differs from the advisor's prediction.

    The advisor runs the same decisions on the profile's speed with the rescale time measured
    here; the run's carbon-agnostic baseline is corrected to the speed the job showed, so the
    two baselines differ by how far the job's real pace was from its profile.
    """
    points = report.savings_pct - float(prediction["advisor_savings_pct"])
    if abs(points) < 0.5:
        return "The run saved what the advisor predicted, within half a point."
    p_agnostic = float(prediction["advisor_agnostic_emissions_g"])
    pace = report.agnostic_emissions_g / p_agnostic - 1.0 if p_agnostic > 0 else 0.0
    if abs(pace) < 0.005:
        speed = "the job ran at its profiled speed"
    else:
        pace_word = "slower" if pace > 0 else "faster"
        speed = f"the job ran about {abs(100 * pace):.0f} % {pace_word} than profiled"
    rescales = ""
    if report.rescales and report.mean_rescale_s > 0:
        rescales = (
            f", and its {report.rescales} rescales took {_seconds(report.mean_rescale_s)} each"
        )
    return (
        f"The run saved {abs(points):.1f} points {'more' if points > 0 else 'less'} than "
        f"predicted: the advisor simulates the same decisions at the profiled speed, while here "
        f"{speed}{rescales}."
    )


# -- the figure ------------------------------------------------------------------------------


def run_figure(report: RunReport, slot_hours: float | None = None) -> Figure:
    """Servers run per slot (bars, whole servers on the axis) over the carbon intensity the
    run was charged at (line), with the deadline and the finish; every line in the legend."""
    slot_h = slot_hours or report.slot_hours
    fig, ax = plt.subplots(figsize=(9.5, 4.8), layout="constrained")
    n = len(report.servers_by_slot)
    starts = np.arange(n) * slot_h
    handles: list[Any] = [
        ax.bar(
            starts,
            report.servers_by_slot,
            width=slot_h * 0.9,
            align="edge",
            color="#4c9a2a",
            label="servers (mean over the slot)",
        )
    ]
    top = max([float(np.max(report.servers_by_slot, initial=0.0)), 1.0])
    ax.set_ylim(0, top + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("servers")
    arrived = at_time(report.start_utc, 0.0)
    ax.set_xlabel(f"hours from {arrived}" if arrived else "job hours since arrival")
    ax2 = ax.twinx()
    carbon = np.asarray(report.carbon_by_slot, dtype=np.float64)
    if n:
        (line,) = ax2.step(  # the last slot drawn to its end
            np.append(starts, n * slot_h),
            np.append(carbon, carbon[-1:]),
            where="post",
            color="#444444",
            label="carbon intensity (gCO2eq/kWh)",
        )
        handles.append(line)
    ax2.set_ylabel("carbon intensity (gCO2eq/kWh)")
    handles.append(
        ax.axvline(
            report.deadline_hours,
            color="#c0392b",
            ls="--",
            lw=1,
            label=f"deadline ({hours(report.deadline_hours)})",
        )
    )
    if report.completed and report.completion_hours is not None:
        handles.append(
            ax.axvline(
                report.completion_hours,
                color="#1f77b4",
                ls=":",
                lw=1.5,
                label=f"finished ({hours_beside(report.completion_hours, report.deadline_hours)})",
            )
        )
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_title(f"{report.name}: {headline(report)}", fontsize=10)
    return fig


# -- the files -------------------------------------------------------------------------------


def _slot_rows(report: RunReport, slot_h: float) -> list[dict[str, str]]:
    rows = []
    for i, (servers, emitted, carbon) in enumerate(
        zip(report.servers_by_slot, report.emissions_by_slot, report.carbon_by_slot, strict=True)
    ):
        rows.append(
            {
                "slot": str(i),
                "hours": f"{i * slot_h:g}–{(i + 1) * slot_h:g}",
                "time": at_time(report.start_utc, i * slot_h) or "",
                "carbon": f"{carbon:.0f}" if math.isfinite(carbon) else "—",
                "servers": f"{servers:.2f}".rstrip("0").rstrip(".") if servers else "0",
                "emissions": f"{emitted:.1f}",
                "unobserved": "yes" if i in report.unobserved_slots else "",
            }
        )
    return rows


def _level_rows(report: RunReport) -> list[dict[str, Any]]:
    total = _ran_h(report) or 1.0
    rows = []
    for k, h in sorted(report.hours_by_servers.items()):
        share = 100.0 * h / total
        rows.append(
            {"level": k, "hours": span(h), "share": percent(share, 0) if share >= 0.5 else "<1 %"}
        )
    return rows


def write_run_report(
    report: RunReport,
    folder: Path,
    slot_hours: float | None = None,
    *,
    prediction: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``report.json``, ``report.png`` and ``report.html`` into ``folder`` (created if
    missing), each to a temporary file first, then renamed.

    Args:
        report: the run.
        folder: where the files go.
        slot_hours: the slot length (default: the report's).
        prediction: extra fields for the report (the demo's advisor prediction): added to
            ``report.json``, and shown beside the measurement where they are the advisor's.

    Raises:
        OutputError: If the folder or a file cannot be written.
    """
    slot_h = slot_hours or report.slot_hours
    check_output_folder(folder, "report folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create report folder {folder}: {exc.strerror or exc}") from exc
    data = {**report.to_dict(), **(prediction or {})}
    atomic_write(folder / "report.json", json.dumps(data, indent=2, default=float).encode())
    fig = run_figure(report, slot_h)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=100, format="png")
    finally:
        plt.close(fig)
    png = buffer.getvalue()
    atomic_write(folder / "report.png", png)
    shown = prediction if has_prediction(prediction) else None
    page = render(
        "run_report.html.j2",
        name=report.name,
        headline=headline(report),
        met=report.completed and report.deadline_met,
        rows=summary_rows(report),
        levels=_level_rows(report),
        prediction=prediction_rows(report, shown) if shown else None,
        prediction_note=prediction_note(report, shown) if shown else "",
        notes=report.notes,
        png=base64.b64encode(png).decode("ascii"),
        slots=_slot_rows(report, slot_h),
    )
    atomic_write(folder / "report.html", page.encode())
    return [folder / "report.json", folder / "report.png", folder / "report.html"]
