"""Running jobs for real: the job spec, the engine-agnostic controller, its persisted state,
the backend interface, carbon feeds and the profiler."""

from carbonscaler.control.backend import Backend, BackendError, WorkloadState
from carbonscaler.control.carbon import CarbonFeed, CarbonUnavailable, ProviderFeed, ReplayFeed
from carbonscaler.control.controller import Controller, RunReport
from carbonscaler.control.spec import JobSpec, SpecError, load_job_spec
from carbonscaler.control.state import ControllerState, Event, StateStore

__all__ = [
    "Backend",
    "BackendError",
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
    "WorkloadState",
    "load_job_spec",
]
