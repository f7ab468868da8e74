"""Pure planning maths: the model, the greedy, the exact optimum and the baselines.

Arrays in, schedule out; nothing here reads files or talks to the network.
"""

from carbonscaler.planner.baselines import (
    plan_agnostic,
    plan_static,
    plan_static_best,
    plan_suspend_resume,
    plan_threshold,
)
from carbonscaler.planner.exact import plan_exact
from carbonscaler.planner.greedy import plan_greedy
from carbonscaler.planner.model import InfeasibleError, Job, Ladder, PlanningError, Schedule
from carbonscaler.planner.policies import (
    DEADLINE_AWARE,
    POLICIES,
    compare,
    plan,
    replan,
    savings_pct,
)

__all__ = [
    "DEADLINE_AWARE",
    "POLICIES",
    "InfeasibleError",
    "Job",
    "Ladder",
    "PlanningError",
    "Schedule",
    "compare",
    "plan",
    "plan_agnostic",
    "plan_exact",
    "plan_greedy",
    "plan_static",
    "plan_static_best",
    "plan_suspend_resume",
    "plan_threshold",
    "replan",
    "savings_pct",
]
