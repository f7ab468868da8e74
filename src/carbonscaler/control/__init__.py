"""Running jobs for real: the job spec, the engine-agnostic controller, its persisted state,
carbon feeds and run reports. The backend interface it drives is
:mod:`carbonscaler.backends.base`; the command line assembles runs (``cli._runner``).

The names are imported on first use (the controller needs the planner, hence scipy).
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable, ProviderFeed, ReplayFeed
    from carbonscaler.control.controller import Controller, RunReport
    from carbonscaler.control.spec import JobSpec, SpecError, load_job_spec
    from carbonscaler.control.state import ControllerState, Event, StateStore
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.control.carbon": (
                "CarbonFeed",
                "CarbonUnavailable",
                "ProviderFeed",
                "ReplayFeed",
            ),
            "carbonscaler.control.controller": ("Controller", "RunReport"),
            "carbonscaler.control.spec": ("JobSpec", "SpecError", "load_job_spec"),
            "carbonscaler.control.state": ("ControllerState", "Event", "StateStore"),
        },
    )

__all__ = [
    "CarbonFeed",
    "CarbonUnavailable",
    "Controller",
    "ControllerState",
    "Event",
    "JobSpec",
    "ProviderFeed",
    "ReplayFeed",
    "RunReport",
    "SpecError",
    "StateStore",
    "load_job_spec",
]
