"""What a sweep shows: rich tables, JSON/CSV, PNG figures and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.table import Table

from carbonscaler.advisor.sweep import SweepResult
from carbonscaler.outputs import (
    OutputError,
    atomic_path,
    atomic_write,
    check_output_file,
    check_output_folder,
)
from carbonscaler.planner.model import Job
from carbonscaler.planner.policies import plan

__all__ = [
    "figures",
    "scenario_tables",
    "summary_records",
    "write_csv",
    "write_html",
    "write_plots",
]


def summary_records(result: SweepResult) -> list[dict[str, Any]]:
    """The ``--json`` contract: one object per (trace, slack, m, M, policy)."""
    records: list[dict[str, Any]] = json.loads(
        result.summary.to_json(orient="records", double_precision=10)
    )
    return records


def scenario_tables(result: SweepResult) -> list[Table]:
    """One rich table per scenario, a row per policy."""
    tables = []
    keys = ["trace", "zone", "slack", "min_servers", "max_servers"]
    for key, group in result.summary.groupby(keys, sort=False):
        _, zone, slack, m, top = key
        runs = int(group["runs"].iloc[0])
        cv = float(group["trace_cv"].iloc[0])
        table = Table(
            title=f"{zone} — deadline {slack:g}× length, {m}..{top} servers, {runs} starts "
            f"(trace CV {cv:.2f})"
        )
        for col in (
            "policy",
            "mean g",
            "median g",
            "p5 g",
            "p95 g",
            "saved vs agnostic",
            "saved vs suspend-resume",
            "done (h)",
            "server-h change",
            "rescales",
            "replans",
            "deadline misses",
        ):
            table.add_column(col, justify="left" if col == "policy" else "right")
        for row in group.itertuples():
            table.add_row(
                str(row.policy),
                f"{row.mean_emissions_g:.1f}",
                f"{row.median_emissions_g:.1f}",
                f"{row.p5_emissions_g:.1f}",
                f"{row.p95_emissions_g:.1f}",
                f"{row.mean_savings_vs_agnostic_pct:+.1f} %",
                f"{row.mean_savings_vs_suspend_resume_pct:+.1f} %",
                f"{row.mean_completion_hours:.1f}",
                f"{row.server_hours_change_pct:+.1f} %",
                f"{row.mean_rescales:.1f}",
                f"{row.mean_replans:.1f}",
                f"[red]{row.deadline_misses!s}[/]" if row.deadline_misses else "0",
            )
        tables.append(table)
    return tables


def write_csv(result: SweepResult, path: str | os.PathLike[str]) -> None:
    """Every simulated run as CSV (written to a temporary file, then renamed).

    Raises:
        OutputError: If the file cannot be written.
    """
    with atomic_path(check_output_file(path, "CSV"), "CSV") as tmp:
        result.runs.to_csv(tmp, index=False)


def _savings_distribution(runs: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    policies = [p for p in runs["policy"].unique() if p != "agnostic"]
    data = [runs.loc[runs["policy"] == p, "savings_vs_agnostic_pct"].dropna() for p in policies]
    ax.boxplot(data, tick_labels=policies, showfliers=False)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("carbon saved vs carbon-agnostic (%)")
    ax.set_title("Savings across start times (all scenarios)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def _example_schedule(result: SweepResult) -> Figure:
    spec = result.spec
    first = result.runs.iloc[0]
    trace = next(t for t in spec.traces if t.source == first["trace"]).resample(spec.slot_minutes)
    mask = (
        (result.runs["policy"] == "carbonscaler")
        if "carbonscaler" in spec.policies
        else (result.runs["policy"] == result.runs["policy"].iloc[0])
    )
    runs = result.runs[mask & (result.runs["trace"] == first["trace"])]
    median_run = runs.iloc[int(np.argsort(runs["emissions_g"].to_numpy())[len(runs) // 2])]
    slot_hours = spec.slot_minutes / 60.0
    job = Job.from_length(
        spec.profile,
        spec.length_hours,
        int(median_run["min_servers"]),
        int(median_run["max_servers"]),
        slot_hours,
    )
    deadline = int(np.floor(float(median_run["slack"]) * spec.length_hours / slot_hours + 1e-9))
    start = trace.index_of(median_run["start"])
    carbon = trace.values[start : start + deadline]
    schedule = plan(str(median_run["policy"]), job, carbon)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    hours = np.arange(deadline) * slot_hours
    servers = np.zeros(deadline)
    servers[: len(schedule.servers)] = schedule.servers
    ax.bar(hours, servers, width=slot_hours * 0.9, align="edge", color="#4c9a2a", label="servers")
    ax.set_xlabel(f"hours from {pd.Timestamp(median_run['start']):%Y-%m-%d %H:%M} UTC")
    ax.set_ylabel("servers")
    ax2 = ax.twinx()
    ax2.step(hours, carbon, where="post", color="#444444", label="gCO2eq/kWh")
    ax2.set_ylabel("carbon intensity (gCO2eq/kWh)")
    ax.set_title(
        f"{schedule.policy} on {median_run['zone']}: median run, {schedule.emissions_g:.0f} g"
    )
    fig.tight_layout()
    return fig


def _policy_colours(policies: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {p: cmap(i % 10) for i, p in enumerate(policies)}


def _savings_vs_slack(summary: pd.DataFrame) -> Figure:
    zones = list(dict.fromkeys(summary["zone"]))
    policies = [p for p in dict.fromkeys(summary["policy"]) if p != "agnostic"]
    colours = _policy_colours(policies)
    fig, axes = plt.subplots(
        1, len(zones), figsize=(4.2 * len(zones) + 1, 4.5), sharey=True, squeeze=False
    )
    for ax, zone in zip(axes[0], zones, strict=True):
        part = summary[summary["zone"] == zone]
        for policy in policies:
            g = part[part["policy"] == policy].groupby("slack")["mean_savings_vs_agnostic_pct"]
            means = g.mean()
            ax.plot(means.index, means.to_numpy(), marker="o", color=colours[policy], label=policy)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(str(zone))
        ax.set_xlabel("slack (deadline / length)")
    axes[0][0].set_ylabel("mean carbon saved vs agnostic (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Savings vs slack")
    fig.tight_layout()
    return fig


def _savings_vs_region(summary: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    policy = (
        "carbonscaler" if "carbonscaler" in set(summary["policy"]) else summary["policy"].iloc[0]
    )
    part = summary[summary["policy"] == policy]
    per_zone = part.groupby(["zone", "trace"]).agg(
        cv=("trace_cv", "first"), saved=("mean_savings_vs_agnostic_pct", "mean")
    )
    ax.scatter(per_zone["cv"], per_zone["saved"], color="#1f77b4")
    for key, row in per_zone.iterrows():
        ax.annotate(
            str(cast(tuple[Any, ...], key)[0]),
            (row["cv"], row["saved"]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if len(per_zone) >= 3:
        r = float(np.corrcoef(per_zone["cv"], per_zone["saved"])[0, 1])
        ax.set_title(f"{policy}: savings vs the trace's variability (Pearson r = {r:.2f})")
    else:
        ax.set_title(f"{policy}: savings vs the trace's variability")
    ax.set_xlabel("coefficient of variation of the trace")
    ax.set_ylabel("mean carbon saved vs agnostic (%)")
    fig.tight_layout()
    return fig


def figures(result: SweepResult) -> dict[str, Figure]:
    """The sweep's figures by file stem."""
    out = {
        "savings_distribution": _savings_distribution(result.runs),
        "example_schedule": _example_schedule(result),
    }
    if result.summary["slack"].nunique() > 1:
        out["savings_vs_slack"] = _savings_vs_slack(result.summary)
    if result.summary["trace"].nunique() > 1:
        out["savings_vs_region"] = _savings_vs_region(result.summary)
    return out


def write_plots(result: SweepResult, folder: str | os.PathLike[str]) -> list[Path]:
    """Write the figures as PNG files into ``folder`` (created if missing), each to a
    temporary file first, then renamed.

    Raises:
        OutputError: If the folder or a file cannot be written.
    """
    target = check_output_folder(folder, "plot folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create plot folder {target}: {exc.strerror or exc}") from exc
    written = []
    for stem, fig in figures(result).items():
        path = target / f"{stem}.png"
        try:
            with atomic_path(path, "figure") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
        finally:
            plt.close(fig)
        written.append(path)
    return written


def write_html(result: SweepResult, path: str | os.PathLike[str], *, command: str = "") -> None:
    """One self-contained HTML page (figures embedded) to mail to a colleague, written to a
    temporary file, then renamed.

    Raises:
        OutputError: If the file cannot be written.
    """
    check_output_file(path, "report")
    images = []
    for stem, fig in figures(result).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=100, format="png")
        plt.close(fig)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        images.append(
            f'<figure><img alt="{stem}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(stem.replace('_', ' '))}</figcaption></figure>"
        )
    spec = result.spec
    cond = spec.conditions
    shown = result.summary[
        [
            "zone",
            "slack",
            "min_servers",
            "max_servers",
            "policy",
            "runs",
            "mean_emissions_g",
            "median_emissions_g",
            "p5_emissions_g",
            "p95_emissions_g",
            "mean_savings_vs_agnostic_pct",
            "mean_savings_vs_suspend_resume_pct",
            "mean_completion_hours",
            "server_hours_change_pct",
            "mean_rescales",
            "deadline_misses",
        ]
    ]
    table = shown.to_html(index=False, float_format=lambda v: f"{v:.1f}", border=0)
    sources = "".join(
        f"<li>{html.escape(t.zone)}: {html.escape(t.source)}</li>" for t in spec.traces
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CarbonAdvisor report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
code {{ background: #f6f6f6; padding: 0.1em 0.3em; }}
</style></head><body>
<h1>CarbonAdvisor report</h1>
<p>A {spec.length_hours:g} h job (at its minimum server count), profile
<code>{html.escape(spec.profile.name)}</code>, slot {spec.slot_minutes} min; forecasts
<code>{html.escape(cond.forecast.model)}</code> (error {cond.forecast.error:g}), profile error
{cond.profile_error:g}, rescale overhead {cond.rescale_overhead_s:g} s, re-planning threshold
{cond.replan_threshold:.0%}.</p>
{f"<p>Command: <code>{html.escape(command)}</code></p>" if command else ""}
<h2>Summary</h2>
{table}
<h2>Figures</h2>
{"".join(images)}
<h2>Carbon data</h2><ul>{sources}</ul>
<p>Savings are per start time against carbon-agnostic (m servers from arrival) and deadline-based
suspend-resume on the same trace, then averaged. Emissions are gCO2eq.</p>
</body></html>
"""
    atomic_write(path, page, "report")
