"""CarbonScaler: carbon-aware autoscaling of elastic batch jobs.

The public API is re-exported here; everything else is internal::

    import carbonscaler as cs
    from carbonscaler import datasets

    profile = cs.amdahl_profile(8, 0.05)  # or cs.load_profile("profile.csv")
    trace = datasets.load("DE", 2020).resample(60)  # or cs.load_trace("my-trace.csv")
    job = cs.Job.from_length(profile, length_hours=24, min_servers=1, max_servers=8)
    schedule = cs.plan("carbonscaler", job, trace.window("2020-06-01", 36))
    print(schedule.servers, schedule.emissions_g)

The names are imported on first use, so ``import carbonscaler`` (and the command line)
stays light: numpy, scipy and pandas load only when a name that needs them is used.
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.planner import (
        DEADLINE_AWARE,
        POLICIES,
        InfeasibleError,
        Job,
        PlanningError,
        Schedule,
        compare,
        plan,
        replan,
        savings_pct,
    )
    from carbonscaler.profile import (
        ProfileError,
        ProfileWarning,
        ScalingProfile,
        amdahl_profile,
        linear_profile,
        load_profile,
        parse_profile_spec,
        power_law_profile,
    )
    from carbonscaler.trace import CarbonTrace, TraceError, TraceWarning, from_values, load_trace
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.planner": (
                "DEADLINE_AWARE",
                "POLICIES",
                "InfeasibleError",
                "Job",
                "PlanningError",
                "Schedule",
                "compare",
                "plan",
                "replan",
                "savings_pct",
            ),
            "carbonscaler.profile": (
                "ProfileError",
                "ProfileWarning",
                "ScalingProfile",
                "amdahl_profile",
                "linear_profile",
                "load_profile",
                "parse_profile_spec",
                "power_law_profile",
            ),
            "carbonscaler.trace": (
                "CarbonTrace",
                "TraceError",
                "TraceWarning",
                "from_values",
                "load_trace",
            ),
        },
    )

__version__ = "0.1.0"

__all__ = [
    "DEADLINE_AWARE",
    "POLICIES",
    "CarbonTrace",
    "InfeasibleError",
    "Job",
    "PlanningError",
    "ProfileError",
    "ProfileWarning",
    "ScalingProfile",
    "Schedule",
    "TraceError",
    "TraceWarning",
    "amdahl_profile",
    "compare",
    "from_values",
    "linear_profile",
    "load_profile",
    "load_trace",
    "parse_profile_spec",
    "plan",
    "power_law_profile",
    "replan",
    "savings_pct",
]
