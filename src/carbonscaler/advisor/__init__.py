"""CarbonAdvisor: what-if simulation of every policy over real carbon traces.

Plans are made for many start times at once and executed against the actual trace, with
forecast error, profile error, rescaling overhead and re-planning, then summarised into tables,
figures and a shareable report.
"""

from carbonscaler.advisor.executor import Conditions, Outcome, simulate_policy
from carbonscaler.advisor.report import (
    figures,
    scenario_tables,
    summary_records,
    write_csv,
    write_html,
    write_plots,
)
from carbonscaler.advisor.sweep import Scenario, SweepResult, SweepSpec, resolve_starts, run_sweep
from carbonscaler.forecast import FORECAST_MODELS, ForecastModel, ForecastSpec, issue_forecasts

__all__ = [
    "FORECAST_MODELS",
    "Conditions",
    "ForecastModel",
    "ForecastSpec",
    "Outcome",
    "Scenario",
    "SweepResult",
    "SweepSpec",
    "figures",
    "issue_forecasts",
    "resolve_starts",
    "run_sweep",
    "scenario_tables",
    "simulate_policy",
    "summary_records",
    "write_csv",
    "write_html",
    "write_plots",
]
