"""Running jobs for real: the job spec, the engine-agnostic controller, its persisted state,
carbon feeds and run reports. The backend interface it drives is
:mod:`carbonscaler.backends.base`; the command line assembles runs (``cli._runner``)."""

from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable, ProviderFeed, ReplayFeed
from carbonscaler.control.controller import Controller, RunReport
from carbonscaler.control.spec import JobSpec, SpecError, load_job_spec
from carbonscaler.control.state import ControllerState, Event, StateStore

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
