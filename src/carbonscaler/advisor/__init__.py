"""CarbonAdvisor: what-if simulation of every policy over real carbon traces.

Plans are made for many start times at once and executed against the actual trace, with
forecast error, profile error, rescaling overhead and re-planning, then summarised into tables,
figures and a shareable report.

The names are imported on first use (the report needs matplotlib).
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.advisor.executor import Conditions, Outcome, simulate_policy
    from carbonscaler.advisor.report import (
        RANKING_RULE,
        figures,
        ranked_summary,
        scenario_tables,
        summary_records,
        write_csv,
        write_html,
        write_plots,
        write_summary_csv,
    )
    from carbonscaler.advisor.sweep import (
        Scenario,
        SweepResult,
        SweepSpec,
        default_jobs,
        rank_policies,
        resolve_starts,
        run_sweep,
    )
    from carbonscaler.forecast import FORECAST_MODELS, ForecastModel, ForecastSpec, issue_forecasts
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.advisor.executor": ("Conditions", "Outcome", "simulate_policy"),
            "carbonscaler.advisor.report": (
                "RANKING_RULE",
                "figures",
                "ranked_summary",
                "scenario_tables",
                "summary_records",
                "write_csv",
                "write_html",
                "write_plots",
                "write_summary_csv",
            ),
            "carbonscaler.advisor.sweep": (
                "Scenario",
                "SweepResult",
                "SweepSpec",
                "default_jobs",
                "rank_policies",
                "resolve_starts",
                "run_sweep",
            ),
            "carbonscaler.forecast": (
                "FORECAST_MODELS",
                "ForecastModel",
                "ForecastSpec",
                "issue_forecasts",
            ),
        },
    )

__all__ = [
    "FORECAST_MODELS",
    "RANKING_RULE",
    "Conditions",
    "ForecastModel",
    "ForecastSpec",
    "Outcome",
    "Scenario",
    "SweepResult",
    "SweepSpec",
    "default_jobs",
    "figures",
    "issue_forecasts",
    "rank_policies",
    "ranked_summary",
    "resolve_starts",
    "run_sweep",
    "scenario_tables",
    "simulate_policy",
    "summary_records",
    "write_csv",
    "write_html",
    "write_plots",
    "write_summary_csv",
]
