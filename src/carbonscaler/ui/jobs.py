"""The jobs page's model: the local runtime's runs under ``--runs``, read and never written.

A run folder is a job's ``checkpoint_dir``: the controller's state (``controller.db``, see
:mod:`carbonscaler.control.state`) while and after it runs, and its report (``report.json``,
``report.png``, ``report.html``) once it has finished. A folder with a report alone (``run
--simulate --report-dir``) is shown as a finished run. The state is opened read-only for
each look (:meth:`~carbonscaler.control.state.StateStore.read_only`), so a run is never
disturbed and nothing is written into its folder.

What a look shows: progress against the plan's promise, servers and carbon per slot (seen,
and the plan's forecast for the rest), emissions so far against carbon-agnostic's on the same
carbon (:func:`~carbonscaler.planner.baselines.plan_agnostic` over the intensity seen and the
forecast), the controller's events (re-plans and rescales with their reasons), and the report
once there is one, in the report's own words (:mod:`carbonscaler.control.report`).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonscaler.control.state import STATE_FILE
from carbonscaler.ui.catalog import UnknownNameError

if TYPE_CHECKING:
    from carbonscaler.control.spec import JobSpec
    from carbonscaler.control.state import ControllerState, Event

__all__ = ["STALE_S", "RunRef", "find_run", "list_runs", "run_summary", "run_view"]

REPORT_FILE = "report.json"
REPORT_FILES = ("report.html", "report.png")
"""The report's other files, served as they are (never parsed)."""
STALE_S = 30.0
"""A run whose state has not been saved for this long is no longer running (a live run saves
at least every second)."""


@dataclass(frozen=True)
class RunRef:
    """One run: its folder under ``--runs`` and its name in the folder's state."""

    folder: str
    name: str
    path: Path
    updated: float | None = None
    """When its state was last saved (epoch s); None for a report alone."""

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE


def _folders(runs: Path) -> list[Path]:
    """The run folders: ``runs`` itself and its sub-folders that hold a state or a report,
    none reached through a link that leads out of ``runs``."""
    if not runs.is_dir():
        return []
    root = runs.resolve()
    found = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        real = folder.resolve()
        if not real.is_relative_to(root):
            continue
        if (real / STATE_FILE).is_file() or (real / REPORT_FILE).is_file():
            found.append(real)
    return found


def _report_name(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def list_runs(runs: Path) -> list[RunRef]:
    """Every run under ``runs``, the most recently updated first.

    A state that cannot be read is listed by its folder, so the page can say why.
    """
    from carbonscaler.control.state import StateError, StateStore

    refs: list[RunRef] = []
    root = runs.resolve() if runs.is_dir() else runs
    for folder in _folders(runs):
        label = "." if folder == root else folder.name
        names: list[tuple[str, float | None]] = []
        if (folder / STATE_FILE).is_file():
            try:
                store = StateStore.read_only(folder / STATE_FILE)
                try:
                    names = [(n, u) for n, u in store.runs()]
                finally:
                    store.close()
            except (StateError, sqlite3.Error, OSError):  # e.g. a state being created
                names = [(label, None)]
        if not names:
            name = _report_name(folder / REPORT_FILE)
            names = [(name or label, None)]
        refs += [RunRef(label, name, folder, updated) for name, updated in names]
    refs.sort(key=lambda r: -(r.updated or _mtime(r.report)))
    return refs


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def find_run(runs: Path, folder: str, name: str) -> RunRef:
    """The run ``name`` in ``folder`` (as :func:`list_runs` names them).

    Raises:
        UnknownNameError: if there is no such run under ``runs``.
    """
    for ref in list_runs(runs):
        if ref.folder == folder and ref.name == name:
            return ref
    raise UnknownNameError(f"no run {name!r} in folder {folder!r} under {runs}")


# -- one look ----------------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any, digits: int = 4) -> float | None:
    """A number for JSON (no NaN)."""
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _read_report(path: Path) -> dict[str, Any] | None:
    """The report's fields, or None where there is no readable report."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _report_view(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The report in its own words (:func:`carbonscaler.control.report.headline` and
    :func:`~carbonscaler.control.report.summary_rows`), and which of its files exist."""
    from carbonscaler.control.controller import RunReport
    from carbonscaler.control.report import headline, summary_rows

    known = {f.name for f in fields(RunReport)}
    values = {k: v for k, v in data.items() if k in known}
    values["hours_by_servers"] = {
        int(k): float(v) for k, v in (values.get("hours_by_servers") or {}).items()
    }
    try:
        report = RunReport(**values)
        words: dict[str, Any] = {
            "headline": headline(report),
            "rows": [list(row) for row in summary_rows(report)],
        }
    except (TypeError, ValueError, KeyError) as exc:  # a report of another version
        words = {"headline": f"report.json not readable here ({exc})", "rows": []}
    return {
        **words,
        "met": bool(data.get("completed")) and bool(data.get("deadline_met")),
        "emissions_g": _num(data.get("emissions_g")),
        "agnostic_emissions_g": _num(data.get("agnostic_emissions_g")),
        "savings_pct": _num(data.get("savings_pct")),
        "notes": [str(n) for n in data.get("notes", [])],
        "files": [name for name in REPORT_FILES if (folder / name).is_file()],
    }


def _event_text(event: Event) -> str:
    """An event in words, with its reasons."""
    d = event.detail
    reasons = ", ".join(str(r) for r in d.get("reasons", []))
    if event.kind == "planned":
        servers = d.get("servers")
        if isinstance(servers, list) and servers:  # the whole plan: say what it does
            used = sum(1 for k in servers if k)
            what = f"{servers[0]} servers at arrival, {used} of {len(servers)} slots with servers"
        else:
            what = f"{servers} servers at arrival"
        return f"planned ({d.get('policy', '')}): {what}" + (f" — {reasons}" if reasons else "")
    if event.kind == "replanned":
        return f"re-planned at slot {d.get('slot', '?')}" + (f": {reasons}" if reasons else "")
    if event.kind == "rescaled":
        took = d.get("seconds")
        return f"{d.get('frm', '?')} → {d.get('to', '?')} servers" + (
            f" (took {float(took):.1f} s)" if isinstance(took, int | float) and took else ""
        )
    if event.kind == "done":
        return f"done: {float(d.get('emissions_g', 0.0)):.1f} g"
    if event.kind in {"degraded", "crashed", "behind"}:
        detail = d.get("reason") or d.get("remaining") or d.get("servers")
        return f"{event.kind}: {detail}" if detail is not None else event.kind
    shown = ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, list | dict))
    return f"{event.kind}" + (f": {shown}" if shown else "")


def _per_slot(mapping: dict[str, float], slots: int) -> list[float | None]:
    return [_num(mapping[str(i)]) if str(i) in mapping else None for i in range(slots)]


def _agnostic_by_slot(spec: JobSpec, state: ControllerState) -> list[float] | None:
    """Carbon-agnostic's emissions per slot for this run, as its report computes them
    (:func:`~carbonscaler.control.controller.agnostic_by_slot`), on the intensity the run was
    charged (the plan's forecast where it has not run yet); None where the state lacks what
    it needs."""
    import numpy as np

    from carbonscaler.control.controller import agnostic_by_slot
    from carbonscaler.planner.model import Job, PlanningError
    from carbonscaler.profile import ProfileError, ScalingProfile

    if not state.profile_throughput or not state.profile_power_w:
        return None
    forecast = list(state.plan.get("forecast", []))

    def carbon(i: int) -> float:
        return state.carbon_by_slot.get(str(i), forecast[i] if i < len(forecast) else math.nan)

    try:
        profile = ScalingProfile(
            np.array(state.profile_throughput), np.array(state.profile_power_w), name="saved"
        )
        job = Job(
            profile,
            state.work_required,
            spec.min_replicas,
            min(spec.max_replicas, profile.max_servers),
            spec.slot_hours,
        )
        by_slot = agnostic_by_slot(job, profile, state, carbon)
    except (PlanningError, ProfileError):
        return None
    return by_slot if all(math.isfinite(x) for x in by_slot) else None


def _state_view(spec: JobSpec, state: ControllerState, events: list[Event]) -> dict[str, Any]:
    """What the state says: progress against the plan, the per-slot record, the events."""
    import numpy as np

    slot_h = spec.slot_hours
    now_h = state.completion_hours if state.completed else state.accounted_hours
    now_h = float(now_h or 0.0)
    seen = max([int(k) + 1 for k in state.servers_by_slot] + [0])
    slots = max(state.deadline_slots, seen)
    planned = list(state.plan.get("plannedDone", []))
    planned_pct = [
        _num(100.0 * w / state.work_required, 2) if state.work_required else None for w in planned
    ]
    planned_now = None
    if planned and state.work_required:
        grid = np.arange(len(planned)) * slot_h
        planned_now = float(np.interp(now_h, grid, np.asarray(planned, dtype=float)))
        planned_now = min(100.0, 100.0 * planned_now / state.work_required)
    emitted = [state.emissions_by_slot.get(str(i), 0.0) for i in range(seen)]
    agnostic = _agnostic_by_slot(spec, state)
    agnostic_so_far = None
    if agnostic is not None:
        # Up to the same job hour: whole slots, and the share of the slot under way.
        whole = math.floor(now_h / slot_h)
        part = now_h / slot_h - whole
        agnostic_so_far = sum(agnostic[:whole]) + (
            agnostic[whole] * part if whole < len(agnostic) else 0.0
        )
    return {
        "now_hours": _num(now_h),
        "progress_pct": _num(state.progress_pct, 2),
        "planned_pct_now": _num(planned_now, 2),
        "servers_now": state.servers,
        "emissions_g": _num(state.emissions_g),
        "energy_kwh": _num(state.energy_kwh, 6),
        "agnostic_so_far_g": _num(agnostic_so_far),
        "agnostic_total_g": _num(sum(agnostic)) if agnostic is not None else None,
        "replans": state.replans,
        "rescales": state.rescales,
        "restarts": state.restarts,
        "degraded": state.degraded,
        "completed": state.completed,
        "completion_hours": _num(state.completion_hours),
        "power_source": state.power_source,
        "profile_source": state.profile_source,
        "notes": list(state.notes),
        "chart": {
            "slot_hours": slot_h,
            "deadline_hours": state.deadline_slots * slot_h,
            "now_hours": _num(now_h),
            "completion_hours": _num(state.completion_hours),
            "servers": [_num(x) for x in _per_slot(state.servers_by_slot, slots)],
            "planned": [int(x) for x in state.plan.get("servers", [])],
            "carbon": _per_slot(state.carbon_by_slot, slots),
            "forecast": [_num(x) for x in state.plan.get("forecast", [])],
            "planned_pct": planned_pct,
            "emitted_cum": [_num(x) for x in np.cumsum(emitted)],
            "agnostic_cum": [_num(x) for x in np.cumsum(agnostic)] if agnostic else None,
            "max_servers": spec.max_replicas,
        },
        "events": [
            {"hours": _num(e.job_hours, 3), "kind": e.kind, "text": _event_text(e)} for e in events
        ],
    }


def _carbon_source(spec: JobSpec) -> str:
    carbon = spec.carbon
    if carbon.trace:
        return f"trace {Path(carbon.trace).name} from {carbon.start}"
    if carbon.dataset_zone:
        return f"offline dataset {carbon.dataset_zone} from {carbon.start}"
    if carbon.provider:
        return f"{carbon.provider} {carbon.zone}"
    return f"carbon service {carbon.service_url}"


def run_view(ref: RunRef, now: float | None = None) -> dict[str, Any]:
    """Everything the run's page shows, as JSON-ready data (the page polls it).

    Args:
        ref: the run.
        now: the time to judge staleness against (default: now).
    """
    from pydantic import ValidationError

    from carbonscaler.control.spec import JobSpec
    from carbonscaler.control.state import StateError, StateStore

    now = time.time() if now is None else now
    view: dict[str, Any] = {
        "folder": ref.folder,
        "name": ref.name,
        "updated": None,
        "state": None,
        "report": None,
        "problem": None,
    }
    report = _read_report(ref.report)
    if report is not None and report.get("name") in (None, ref.name):
        view["report"] = _report_view(report, ref.path)
    loaded = None
    updated = ref.updated
    if ref.state.is_file():
        try:
            store = StateStore.read_only(ref.state)
            try:
                updated = dict(store.runs()).get(ref.name, updated)
                loaded = store.load(ref.name)
                events = store.events(ref.name) if loaded is not None else []
            finally:
                store.close()
        except (StateError, sqlite3.Error, OSError, ValueError, TypeError) as exc:
            view["problem"] = f"the run's state cannot be read: {exc}"
    if loaded is not None:
        spec_data, state = loaded
        try:
            spec = JobSpec.model_validate(spec_data)
        except ValidationError as exc:
            view["problem"] = f"the run's saved spec is not readable by this version: {exc}"
        else:
            view.update(
                policy=spec.policy_name,
                servers=f"{spec.min_replicas}..{spec.max_replicas}",
                carbon=_carbon_source(spec),
                state=_state_view(spec, state, events),
            )
    completed = bool(view["state"] and view["state"]["completed"]) or view["report"] is not None
    if completed:
        status = "finished"
    elif view["state"] is None:
        status = "unreadable" if view["problem"] else "no state"
    elif updated is not None and now - updated <= STALE_S:
        status = "running"
    else:
        status = "stopped"
    view["status"] = status
    view["updated"] = _iso(updated)
    # A finished run's report follows its last save by a moment: watch for it while recent.
    recent = updated is not None and now - updated <= STALE_S
    view["live"] = status == "running" or (status == "finished" and not view["report"] and recent)
    return view


def run_summary(ref: RunRef, now: float | None = None) -> dict[str, Any]:
    """A run's line in the list of runs."""
    view = run_view(ref, now)
    state = view["state"] or {}
    report = view["report"] or {}
    return {
        "folder": ref.folder,
        "name": ref.name,
        "status": view["status"],
        "updated": view["updated"],
        "policy": view.get("policy", ""),
        "progress_pct": state.get("progress_pct"),
        "emissions_g": report.get("emissions_g", state.get("emissions_g")),
        "savings_pct": report.get("savings_pct"),
        "met": report.get("met"),
        "headline": report.get("headline", ""),
    }
