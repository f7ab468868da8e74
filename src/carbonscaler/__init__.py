"""CarbonScaler: carbon-aware autoscaling of elastic batch jobs.

The public API is re-exported here; everything else is internal::

    import carbonscaler as cs

    profile = cs.load_profile("nbody100k.csv")
    trace = cs.load_trace("NL_2022_hourly.csv").resample(60)
    job = cs.Job.from_length(profile, length_hours=24, min_servers=1, max_servers=7)
    schedule = cs.plan("carbonscaler", job, trace.window("2022-06-01", 36))
    print(schedule.servers, schedule.emissions_g)
"""

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
