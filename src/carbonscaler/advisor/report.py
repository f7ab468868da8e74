"""What a sweep shows: rich tables, JSON/CSV, PNG figures and a self-contained HTML report.

Every view ranks policies the same way (:func:`carbonscaler.advisor.sweep.rank_policies`): a
policy that misses deadlines never stands above one that meets them, and its misses (count and
share) stand beside its savings. Policies whose runs coincide (``exact`` and ``carbonscaler`` on
a concave profile) are both shown and said to be equal.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from carbonscaler.advisor.executor import simulate_policy
from carbonscaler.advisor.sweep import SCENARIO_KEYS, SweepResult
from carbonscaler.outputs import (
    OutputError,
    atomic_path,
    atomic_write,
    check_output_file,
    check_output_folder,
)
from carbonscaler.planner.model import Job
from carbonscaler.templating import render
from carbonscaler.wording import percent, saving

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "RANKING_RULE",
    "figures",
    "headline",
    "miss_note",
    "ranked_summary",
    "scenario_tables",
    "share_of_runs",
    "summary_records",
    "write_csv",
    "write_html",
    "write_plots",
    "write_summary_csv",
]

RANKING_RULE = (
    "Ranked by mean saving vs carbon-agnostic among the policies that meet every deadline; "
    "a policy that misses any deadline ranks below all of them (fewest misses first), "
    "whatever it saves."
)

_MISSED = "#c0392b"  # red for misses, in tables and figures


# -- words and numbers ------------------------------------------------------------------------


def share_of_runs(pct: float) -> str:
    """A share of runs: "93 %", "2.4 %", "<0.1 %", ">99 %" (never rounded to all or none)."""
    if pct >= 10:
        text = f"{pct:.0f} %"
        return ">99 %" if text == "100 %" and pct < 100 else text
    if pct >= 0.1 or pct == 0:
        return f"{pct:.1f} %"
    return "<0.1 %"


def _misses(row: Any) -> str:
    """``0`` or ``"8,144 (93 %)"``."""
    count = int(row.deadline_misses)
    return f"{count:,} ({share_of_runs(float(row.deadline_miss_pct))})" if count else "0"


def miss_note(pct: float) -> str:
    """``"misses 93 % of deadlines"``: a share of runs that missed (:func:`share_of_runs`)."""
    return f"misses {share_of_runs(pct)} of deadlines"


def _saved(pct: float) -> str:
    """A saving as words: "saved 7.2 %", "emits 5.0 % more", "saved nothing"."""
    return saving(float(pct), past=False)


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """The rows of ``frame`` as named tuples (typed loosely: the columns vary)."""
    yield from frame.itertuples()


def _pct(pct: float) -> str:
    return percent(float(pct))


def summary_records(result: SweepResult) -> list[dict[str, Any]]:
    """The ``--json`` contract: one object per (trace, slack, m, M, policy), in the order the
    policies were asked for, each with its ``rank`` in its scenario."""
    records: list[dict[str, Any]] = json.loads(
        result.summary.to_json(orient="records", double_precision=10)
    )
    return records


def ranked_summary(result: SweepResult) -> pd.DataFrame:
    """The summary scenario by scenario (in sweep order), best-ranked policy first."""
    summary = result.summary
    scenario = summary.groupby(SCENARIO_KEYS, sort=False).ngroup()
    return (
        summary.assign(_scenario=scenario)
        .sort_values(["_scenario", "rank"], kind="stable")
        .drop(columns="_scenario")
        .reset_index(drop=True)
    )


def _scenarios(result: SweepResult) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    for key, group in ranked_summary(result).groupby(SCENARIO_KEYS, sort=False):
        yield cast(tuple[Any, ...], key), group


def _scenario_title(key: tuple[Any, ...], group: pd.DataFrame) -> str:
    _, zone, slack, m, top = key
    runs = int(group["runs"].iloc[0])
    cv = float(group["trace_cv"].iloc[0])
    return (
        f"{zone} — deadline {slack:g}× length, {m}..{top} servers, {runs:,} starts "
        f"(trace CV {cv:.2f})"
    )


def _equal_note(group: pd.DataFrame) -> str:
    pairs = [
        f"{row.policy} = {row.same_as}"
        for row in _rows(group)
        if isinstance(row.same_as, str) and row.same_as
    ]
    return f"{', '.join(pairs)}: identical runs." if pairs else ""


# -- the headline ----------------------------------------------------------------------------


def _verdict(ranked: list[tuple[str, float, int, float, str | None]]) -> str:
    """Policies ranked best first as (policy, mean saving %, misses, miss %, equal to) in a
    sentence or three: the best that meets every deadline and its saving, those that saved
    more only by missing deadlines, and carbon-agnostic's own misses."""
    agnostic = next((r for r in ranked if r[0] == "agnostic"), None)
    others = [r for r in ranked if r[0] != "agnostic"]
    if not others:
        return ""
    twins = {r[4]: r[0] for r in others if r[4]}

    def name(row: tuple[str, float, int, float, str | None]) -> str:
        twin = twins.get(row[0]) or row[4]
        return f"{row[0]} (= {twin})" if twin else row[0]

    meeting = [r for r in others if r[2] == 0]
    parts = []
    if meeting:
        best = meeting[0]
        parts.append(
            f"Best policy that meets every deadline: {name(best)}, which "
            f"{saving(best[1])} on average vs carbon-agnostic."
        )
        richer = [
            r
            for r in others
            if r[2] > 0 and not r[4] and np.isfinite(r[1]) and round(r[1] - best[1], 1) > 0
        ]
        if richer:
            parts.append(
                "; ".join(f"{name(r)} {saving(r[1])} but {miss_note(r[3])}" for r in richer) + "."
            )
    else:
        fewest = others[0]
        parts.append(
            f"No policy meets every deadline: {name(fewest)} misses the fewest "
            f"({share_of_runs(fewest[3])}) and {saving(fewest[1])} on average vs carbon-agnostic."
        )
    if agnostic is not None and agnostic[2]:
        parts.append(f"Carbon-agnostic itself {miss_note(agnostic[3])}.")
    return " ".join(parts)


def headline(result: SweepResult) -> str:
    """The sweep in a sentence or three, over every scenario: the best policy that meets every
    deadline and its mean saving vs carbon-agnostic, the policies that saved more only by
    missing deadlines (and how often they miss), and carbon-agnostic's own misses."""
    return _verdict(
        [
            (
                str(r.policy),
                float(r.saved),
                int(r.misses),
                float(r.miss_pct),
                r.same_as if isinstance(r.same_as, str) and r.same_as else None,
            )
            for r in _rows(_overall(result))
        ]
    )


def _scenario_headline(group: pd.DataFrame) -> str:
    """:func:`headline` for one scenario (its rows of the ranked summary)."""
    return _verdict(
        [
            (
                str(r.policy),
                float(r.mean_savings_vs_agnostic_pct),
                int(r.deadline_misses),
                float(r.deadline_miss_pct),
                r.same_as if isinstance(r.same_as, str) and r.same_as else None,
            )
            for r in _rows(group)
        ]
    )


# -- the terminal ---------------------------------------------------------------------------


_ESSENTIAL = 5  # rank, policy, the two savings and the misses: always shown


def scenario_tables(result: SweepResult, width: int | None = None) -> list[Table]:
    """One rich table per scenario, a row per policy, best-ranked first (:data:`RANKING_RULE`):
    misses (count and share) beside the savings, and policies that miss deadlines in red below
    those that meet them. (The median is in ``--json``, the CSVs and the HTML report.) With
    several scenarios each caption ends with the scenario's verdict (as :func:`headline`).

    Args:
        result: the sweep.
        width: the console's width: the columns after rank, policy, savings and misses are
            left out, from the right, where they would not fit.
    """
    tables = []
    several = result.summary.groupby(SCENARIO_KEYS, sort=False).ngroups > 1
    for key, group in _scenarios(result):
        replans = bool((group["mean_replans"] > 0).any())
        columns = [
            "rank",
            "policy",
            "saved vs\nagnostic",
            "deadline\nmisses",
            "saved vs\nsuspend-\nresume",
            "mean g",
            "done (h)",
            "server-h\nchange",
            "p5–p95 g",
            "rescales",
            *(["replans"] if replans else []),
        ]
        rows: list[list[str | Text]] = []
        dim: list[bool] = []
        for row in _rows(group):
            missed = int(row.deadline_misses) > 0
            policy = Text(str(row.policy))
            if isinstance(row.same_as, str) and row.same_as:
                policy.append(f" (= {row.same_as})", style="dim")
            rows.append(
                [
                    str(row.rank),
                    policy,
                    _pct(row.mean_savings_vs_agnostic_pct),
                    Text(_misses(row), style=f"bold {_MISSED}" if missed else ""),
                    _pct(row.mean_savings_vs_suspend_resume_pct),
                    f"{row.mean_emissions_g:.1f}",
                    f"{row.mean_completion_hours:.1f}",
                    f"{row.server_hours_change_pct:+.1f} %",
                    f"{row.p5_emissions_g:.1f}–{row.p95_emissions_g:.1f}",
                    f"{row.mean_rescales:.1f}",
                    *([f"{row.mean_replans:.1f}"] if replans else []),
                ]
            )
            dim.append(missed)
        widths = [
            max([len(line) for line in col.split("\n")] + [len(str(r[i])) for r in rows])
            for i, col in enumerate(columns)
        ]
        shown = len(columns)
        # Each column costs its text, a space either side and a rule.
        while (
            width is not None and shown > _ESSENTIAL and sum(widths[:shown]) + 3 * shown + 1 > width
        ):
            shown -= 1
        left_out = [col.replace("\n", " ") for col in columns[shown:]]
        notes = " ".join(
            filter(
                None,
                [
                    _equal_note(group),
                    f"Left out to fit: {', '.join(left_out)} (see --json)." if left_out else "",
                ],
            )
        )
        verdict = _scenario_headline(group) if several else ""  # else the headline says it
        caption = "\n".join(filter(None, [notes, verdict]))
        table = Table(
            title=_scenario_title(key, group), caption=caption or None, caption_justify="left"
        )
        for col, least in zip(columns[:shown], widths[:shown], strict=True):
            table.add_column(
                col,
                justify="left" if col == "policy" else "right",
                no_wrap=True,
                min_width=least,
            )
        for cells, missed in zip(rows, dim, strict=True):
            table.add_row(*cells[:shown], style="dim" if missed else None)
        tables.append(table)
    return tables


# -- CSV ------------------------------------------------------------------------------------

_RUN_COLUMNS = [
    "trace",
    "zone",
    "slack",
    "min_servers",
    "max_servers",
    "policy",
    "start",
    "emissions_g",
    "savings_vs_agnostic_pct",
    "savings_vs_suspend_resume_pct",
    "deadline_met",
    "completion_hours",
    "completed",
]


def write_csv(result: SweepResult, path: str | os.PathLike[str]) -> None:
    """Every simulated run as CSV, whether it met its deadline beside its savings (written to
    a temporary file, then renamed).

    Raises:
        OutputError: If the file cannot be written.
    """
    runs = result.runs
    first = [c for c in _RUN_COLUMNS if c in runs.columns]
    ordered = runs[first + [c for c in runs.columns if c not in first]]
    with atomic_path(check_output_file(path, "CSV"), "CSV") as tmp:
        ordered.to_csv(tmp, index=False)


def write_summary_csv(result: SweepResult, path: str | os.PathLike[str]) -> None:
    """The summary as CSV, ranked: a row per (scenario, policy), best first, with
    ``deadline_misses`` and ``deadline_miss_pct`` beside the savings.

    Raises:
        OutputError: If the file cannot be written.
    """
    with atomic_path(check_output_file(path, "summary CSV"), "summary CSV") as tmp:
        ranked_summary(result).to_csv(tmp, index=False)


# -- figures --------------------------------------------------------------------------------

_STYLES = [
    ("-", "o"),
    ("--", "s"),
    ("-.", "^"),
    (":", "D"),
    ("-", "v"),
    ("--", "P"),
    ("-.", "X"),
    (":", "*"),
]


def _overall(result: SweepResult) -> pd.DataFrame:
    """Per policy over every scenario: misses, their share, mean saving, the policy it equals
    (every run alike), ranked by the same rule as each scenario."""
    runs = result.runs
    rows = []
    emissions: dict[str, np.ndarray] = {}
    for policy, group in runs.groupby("policy", sort=False):
        name = str(policy)
        misses = int((~group["deadline_met"]).sum())
        emissions[name] = group["emissions_g"].to_numpy()
        same = next(
            (
                other
                for other in emissions
                if other != name and np.array_equal(emissions[other], emissions[name])
            ),
            None,
        )
        rows.append(
            {
                "policy": name,
                "misses": misses,
                "miss_pct": 100.0 * misses / len(group),
                "saved": float(group["savings_vs_agnostic_pct"].mean()),
                "same_as": same,
            }
        )
    table = pd.DataFrame(rows)
    table["_lost"] = -table["saved"].fillna(-np.inf)
    return (
        table.sort_values(["miss_pct", "_lost"], kind="stable")
        .drop(columns="_lost")
        .reset_index(drop=True)
    )


def _baseline_label(overall: pd.DataFrame) -> str:
    """The zero line's label: carbon-agnostic, and its misses if it has any."""
    agnostic = overall[overall["policy"] == "agnostic"]
    label = "carbon-agnostic (0 %)"
    if len(agnostic) and int(agnostic["misses"].iloc[0]):
        label += f" — {miss_note(float(agnostic['miss_pct'].iloc[0]))}"
    return label


def _label(row: Any) -> str:
    """A policy's legend label: its name, what it equals, and its misses."""
    label = str(row.policy)
    if isinstance(row.same_as, str) and row.same_as:
        label += f" (= {row.same_as})"
    if row.misses:
        label += f" — {miss_note(float(row.miss_pct))}"
    return label


@cache
def _agg() -> None:
    """Draw on matplotlib's Agg backend (files only; never needs a display). Matplotlib is
    imported by the first figure, so a sweep that draws none does not wait for it."""
    import matplotlib

    matplotlib.use("Agg")


def _savings_distribution(result: SweepResult) -> Figure:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    everyone = _overall(result)
    overall = everyone[everyone["policy"] != "agnostic"].reset_index(drop=True)
    runs = result.runs
    fig, ax = plt.subplots(figsize=(max(8.0, 1.5 * len(overall) + 2), 5.2), layout="constrained")
    data = [
        runs.loc[runs["policy"] == p, "savings_vs_agnostic_pct"].dropna().to_numpy()
        for p in overall["policy"]
    ]
    boxes = ax.boxplot(data, patch_artist=True, showfliers=False, widths=0.55)
    for patch, row in zip(boxes["boxes"], _rows(overall), strict=True):
        if row.misses:
            patch.set(facecolor="#f6d5d1", edgecolor=_MISSED, hatch="///")
        else:
            patch.set(facecolor="#d9ead3", edgecolor="#333333")
    labels = []
    for row in _rows(overall):
        text = str(row.policy)
        if isinstance(row.same_as, str) and row.same_as:
            text += f"\n(= {row.same_as})"
        if row.misses:
            text += f"\n{miss_note(float(row.miss_pct))}"
        labels.append(text)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    for tick, row in zip(ax.get_xticklabels(), _rows(overall), strict=True):
        if row.misses:
            tick.set_color(_MISSED)
    for position, row in enumerate(_rows(overall), start=1):
        ax.annotate(
            _saved(float(row.saved)),
            (position, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -4),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=8,
            color=_MISSED if row.misses else "#222222",
        )
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("carbon saved vs carbon-agnostic (%)")
    ax.set_xlabel("policies, best first: those that miss deadlines rank last")
    ax.set_title("Savings across start times (all scenarios); mean saving above each box")
    handles = [
        Patch(facecolor="#d9ead3", edgecolor="#333333", label="meets every deadline"),
        Line2D([], [], color="grey", lw=0.8, ls="--", label=_baseline_label(everyone)),
    ]
    if overall["misses"].any():
        handles.insert(
            1, Patch(facecolor="#f6d5d1", edgecolor=_MISSED, hatch="///", label="misses deadlines")
        )
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ymin, ymax = ax.get_ylim()
    ax.set_ylim(ymin, ymax + 0.08 * (ymax - ymin))  # room for the savings above the boxes
    return fig


def _example_run(result: SweepResult) -> tuple[pd.Series, str]:
    """The run to draw: the median run (by emissions) in the first scenario of
    ``carbonscaler`` if it was asked for, else of the best-ranked policy."""
    first = ranked_summary(result).iloc[0]
    policy = "carbonscaler" if "carbonscaler" in result.spec.policies else str(first["policy"])
    runs = _scenario_runs(result, first)
    runs = runs[runs["policy"] == policy].reset_index(drop=True)
    order = np.argsort(runs["emissions_g"].to_numpy(), kind="stable")
    return runs.iloc[int(order[len(runs) // 2])], policy


def _scenario_runs(result: SweepResult, row: pd.Series) -> pd.DataFrame:
    """The runs of ``row``'s scenario."""
    runs = result.runs
    return runs[np.logical_and.reduce([runs[c] == row[c] for c in SCENARIO_KEYS])]


def _example_schedule(result: SweepResult) -> Figure:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    spec = result.spec
    run, policy = _example_run(result)
    trace = next(t for t in spec.traces if t.source == run["trace"]).resample(spec.slot_minutes)
    slot_hours = spec.slot_minutes / 60.0
    job = Job.from_length(
        spec.profile,
        spec.length_hours,
        int(run["min_servers"]),
        int(run["max_servers"]),
        slot_hours,
    )
    deadline = int(np.floor(float(run["slack"]) * spec.length_hours / slot_hours + 1e-9))
    start = trace.index_of(run["start"])
    # The run as simulated: the profile error is drawn per run in the order of the sweep's
    # starts, so with one the whole scenario is simulated again; otherwise the run alone.
    if spec.conditions.profile_error > 0:
        same = _scenario_runs(result, run)
        starts = np.array(
            [trace.index_of(t) for t in same.loc[same["policy"] == policy, "start"]],
            dtype=np.int64,
        )
    else:
        starts = np.array([start], dtype=np.int64)
    row = int(np.flatnonzero(starts == start)[0])
    # A run that overruns its deadline is drawn until it ends, up to twice the deadline.
    shown = deadline
    if not bool(run["deadline_met"]):
        end = float(run["completion_hours"])
        late = int(np.ceil(end / slot_hours)) if np.isfinite(end) else 2 * deadline
        shown = max(deadline, min(late, 2 * deadline, len(trace) - start))
    outcome = simulate_policy(
        policy, job, trace.values, starts, deadline, spec.conditions, record_slots=shown
    )
    carbon = trace.values[start : start + shown]
    hours = np.arange(shown) * slot_hours
    if outcome.servers_by_slot is not None:
        servers = outcome.servers_by_slot[row]
    else:  # static-best keeps no record; it runs one level from arrival until done
        end = float(outcome.completion_hours[row])
        end = end if np.isfinite(end) else shown * slot_hours
        level = float(outcome.server_hours[row]) / max(end, 1e-9)
        servers = level * np.clip(end - hours, 0.0, slot_hours) / slot_hours
    fig, ax = plt.subplots(figsize=(9.5, 4.8), layout="constrained")
    bars = ax.bar(
        hours,
        servers,
        width=slot_hours * 0.9,
        align="edge",
        color="#4c9a2a",
        label="servers (mean over the slot)",
    )
    ax.set_xlabel(f"hours from {pd.Timestamp(run['start']):%Y-%m-%d %H:%M} UTC")
    ax.set_ylabel("servers")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(float(np.max(servers, initial=0.0)), float(job.max_servers)) + 0.5)
    ax2 = ax.twinx()
    (line,) = ax2.step(  # the last slot drawn to its end
        np.append(hours, shown * slot_hours),
        np.append(carbon, carbon[-1:]),
        where="post",
        color="#444444",
        label="carbon intensity (gCO2eq/kWh)",
    )
    ax2.set_ylabel("carbon intensity (gCO2eq/kWh)")
    edge = ax.axvline(
        deadline * slot_hours,
        color=_MISSED,
        ls="--",
        lw=1,
        label=f"deadline ({deadline * slot_hours:g} h)",
    )
    ax.legend(handles=[bars, line, edge], fontsize=8, loc="upper right", framealpha=0.9)
    met = bool(run["deadline_met"])
    verdict = "met its deadline" if met else "MISSED its deadline"
    same = _scenario_runs(result, run)
    missed = ~same.loc[same["policy"] == policy, "deadline_met"]
    if missed.any():
        verdict += f" ({policy} {miss_note(100.0 * float(missed.mean()))} here)"
    ax.set_title(
        f"{policy} on {run['zone']}, median run: {float(run['emissions_g']):.0f} g, "
        f"{_saved(float(run['savings_vs_agnostic_pct']))} vs carbon-agnostic, {verdict}",
        fontsize=10,
    )
    return fig


def _savings_vs_slack(result: SweepResult) -> Figure:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    summary = result.summary
    everyone = _overall(result)
    overall = everyone[everyone["policy"] != "agnostic"].reset_index(drop=True)
    zones = list(dict.fromkeys(summary["zone"]))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        1,
        len(zones),
        figsize=(4.2 * len(zones) + 4.5, 4.8),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    handles: dict[str, Any] = {}
    for ax, zone in zip(axes[0], zones, strict=True):
        part = summary[summary["zone"] == zone]
        for i, row in enumerate(_rows(overall)):
            rows = part[part["policy"] == row.policy].groupby("slack")
            saved = rows["mean_savings_vs_agnostic_pct"].mean()
            misses = rows["deadline_misses"].sum()
            style, marker = _STYLES[i % len(_STYLES)]
            twin = isinstance(row.same_as, str) and bool(row.same_as)
            (drawn,) = ax.plot(
                saved.index,
                saved.to_numpy(),
                ls=style,
                marker=marker,
                color=cmap(i % 10),
                # A policy equal to another is drawn on top, thinner and with hollow, larger
                # markers, so both lines stay visible.
                lw=1.2 if twin else 2.0,
                markersize=10 if twin else 6,
                markerfacecolor="none" if twin else cmap(i % 10),
                zorder=3 if twin else 2,
                label=_label(row),
            )
            handles.setdefault(_label(row), drawn)
            missed = misses.to_numpy() > 0
            if missed.any():
                ax.scatter(
                    saved.index[missed],
                    saved.to_numpy()[missed],
                    s=90,
                    marker="x",
                    color=_MISSED,
                    zorder=4,
                )
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(str(zone))
        ax.set_xlabel("slack (deadline / length)")
        ax.set_xticks(sorted(part["slack"].unique()))
    axes[0][0].set_ylabel("mean carbon saved vs carbon-agnostic (%)")
    legend = list(handles.values())
    legend.append(Line2D([], [], color="grey", lw=0.8, ls="--", label=_baseline_label(everyone)))
    if everyone["misses"].any():
        legend.append(
            Line2D([], [], ls="", marker="x", color=_MISSED, markersize=9, label="misses deadlines")
        )
    fig.legend(handles=legend, loc="outside right upper", fontsize=8)
    fig.suptitle("Savings vs slack")
    return fig


def _savings_vs_region(result: SweepResult) -> Figure:
    import matplotlib.pyplot as plt

    summary = result.summary
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    policy = str(ranked_summary(result).iloc[0]["policy"])
    if "carbonscaler" in set(summary["policy"]):
        policy = "carbonscaler"
    part = summary[summary["policy"] == policy]
    per_zone = part.groupby(["zone", "trace"]).agg(
        cv=("trace_cv", "first"),
        saved=("mean_savings_vs_agnostic_pct", "mean"),
        misses=("deadline_misses", "sum"),
        runs=("runs", "sum"),
    )
    met = per_zone["misses"] == 0
    ax.scatter(per_zone.loc[met, "cv"], per_zone.loc[met, "saved"], color="#1f77b4", label=policy)
    if (~met).any():
        ax.scatter(
            per_zone.loc[~met, "cv"],
            per_zone.loc[~met, "saved"],
            color=_MISSED,
            marker="x",
            s=70,
            label=f"{policy}, where it misses deadlines",
        )
    for key, row in per_zone.iterrows():
        text = f"{cast(tuple[Any, ...], key)[0]}: {_saved(float(row['saved']))}"
        if row["misses"]:
            text += f", {miss_note(100.0 * float(row['misses']) / float(row['runs']))}"
        ax.annotate(
            text,
            (row["cv"], row["saved"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
            color=_MISSED if row["misses"] else "#222222",
        )
    ax.axhline(0, color="grey", lw=0.8, ls="--", label="carbon-agnostic (0 %)")
    if len(per_zone) >= 3:
        r = float(np.corrcoef(per_zone["cv"], per_zone["saved"])[0, 1])
        ax.set_title(f"{policy}: savings vs the trace's variability (Pearson r = {r:.2f})")
    else:
        ax.set_title(f"{policy}: savings vs the trace's variability")
    ax.set_xlabel("coefficient of variation of the trace")
    ax.set_ylabel("mean carbon saved vs carbon-agnostic (%)")
    ax.legend(fontsize=8, loc="best")
    _pad_x(ax)
    return fig


def _pad_x(ax: Axes) -> None:
    """Room on the right for the labels beside the points."""
    low, high = ax.get_xlim()
    ax.set_xlim(low, high + 0.25 * (high - low))


def figures(result: SweepResult) -> dict[str, Figure]:
    """The sweep's figures by file stem."""
    _agg()
    out = {
        "savings_distribution": _savings_distribution(result),
        "example_schedule": _example_schedule(result),
    }
    if result.summary["slack"].nunique() > 1:
        out["savings_vs_slack"] = _savings_vs_slack(result)
    if result.summary["trace"].nunique() > 1:
        out["savings_vs_region"] = _savings_vs_region(result)
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
    import matplotlib.pyplot as plt

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


# -- HTML -----------------------------------------------------------------------------------

_HTML_COLUMNS = (
    "rank",
    "policy",
    "saved vs agnostic",
    "deadline misses",
    "saved vs suspend-resume",
    "mean g",
    "median g",
    "p5–p95 g",
    "done (h)",
    "server-h change",
    "rescales",
    "replans",
)


def _html_scenarios(result: SweepResult) -> list[dict[str, Any]]:
    """Per scenario: its title, its one-line verdict, its rows (best first) and its note."""
    scenarios = []
    several = result.summary.groupby(SCENARIO_KEYS, sort=False).ngroups > 1
    for key, group in _scenarios(result):
        rows = []
        for row in _rows(group):
            missed = int(row.deadline_misses) > 0
            rows.append(
                {
                    "rank": str(row.rank),
                    "policy": str(row.policy),
                    "same_as": row.same_as if isinstance(row.same_as, str) else "",
                    "missed": missed,
                    "miss_note": miss_note(float(row.deadline_miss_pct)) if missed else "",
                    "saved": _pct(row.mean_savings_vs_agnostic_pct),
                    "misses": _misses(row),
                    "numbers": [
                        _pct(row.mean_savings_vs_suspend_resume_pct),
                        f"{row.mean_emissions_g:.1f}",
                        f"{row.median_emissions_g:.1f}",
                        f"{row.p5_emissions_g:.1f}–{row.p95_emissions_g:.1f}",
                        f"{row.mean_completion_hours:.1f}",
                        f"{row.server_hours_change_pct:+.1f} %",
                        f"{row.mean_rescales:.1f}",
                        f"{row.mean_replans:.1f}",
                    ],
                }
            )
        scenarios.append(
            {
                "title": _scenario_title(key, group),
                "verdict": _scenario_headline(group) if several else "",
                "rows": rows,
                "note": _equal_note(group),
            }
        )
    return scenarios


def write_html(result: SweepResult, path: str | os.PathLike[str], *, command: str = "") -> None:
    """One self-contained HTML page (figures embedded) to mail to a colleague, rendered from
    ``templates/advisor_report.html.j2``, written to a temporary file, then renamed.

    Raises:
        OutputError: If the file cannot be written.
    """
    import matplotlib.pyplot as plt

    check_output_file(path, "report")
    images = []
    for stem, fig in figures(result).items():
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, dpi=100, format="png")
        finally:
            plt.close(fig)
        images.append(
            {
                "stem": stem,
                "caption": stem.replace("_", " "),
                "png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            }
        )
    spec = result.spec
    page = render(
        "advisor_report.html.j2",
        spec=spec,
        conditions=spec.conditions,
        command=command,
        headline=headline(result),
        ranking_rule=RANKING_RULE,
        columns=_HTML_COLUMNS,
        scenarios=_html_scenarios(result),
        images=images,
        traces=[{"zone": t.zone, "source": t.source} for t in spec.traces],
    )
    atomic_write(path, page, "report")
