"""Pure planning maths: the model, the greedy, the exact optimum and the baselines.

Arrays in, schedule out; nothing here reads files or talks to the network.

The names below are imported on first use (the exact solver needs scipy), so importing
:mod:`carbonscaler.planner.names` alone stays light.
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
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
    from carbonscaler.planner.names import DEADLINE_AWARE, POLICIES
    from carbonscaler.planner.policies import compare, plan, replan, savings_pct
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.planner.baselines": (
                "plan_agnostic",
                "plan_static",
                "plan_static_best",
                "plan_suspend_resume",
                "plan_threshold",
            ),
            "carbonscaler.planner.exact": ("plan_exact",),
            "carbonscaler.planner.greedy": ("plan_greedy",),
            "carbonscaler.planner.model": (
                "InfeasibleError",
                "Job",
                "Ladder",
                "PlanningError",
                "Schedule",
            ),
            "carbonscaler.planner.names": ("DEADLINE_AWARE", "POLICIES"),
            "carbonscaler.planner.policies": ("compare", "plan", "replan", "savings_pct"),
        },
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
