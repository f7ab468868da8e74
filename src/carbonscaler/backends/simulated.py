"""A simulated workload: progress follows the job's scaling profile, no processes.

``carbonscaler run --simulate`` runs the real controller on a virtual clock against this
backend, to ask "what will my job do over the next days?" before starting it; tests use it to
check the controller decision by decision with exact assertions.

The world it models is CarbonAdvisor's (:mod:`carbonscaler.advisor.executor`): at ``k`` workers
the job does ``R(k)`` work units per job hour (times an optional ``rate_factor``); every start
after the first — a rescale or a resume — first loses ``restart_overhead_s`` seconds of work
(checkpoint, stop, restart) while the workers draw power.
"""

from __future__ import annotations

from carbonscaler.backends.base import Backend, BackendError, WorkloadState
from carbonscaler.clock import ControlClock
from carbonscaler.profile import ScalingProfile

__all__ = ["SimulatedBackend"]

_DONE_SHARE = 1 - 1e-12


class SimulatedBackend(Backend):
    """A workload whose progress is the profile's throughput over (virtual) time.

    Args:
        profile: throughput per worker count (work units per job hour).
        work: the job's work in the profile's units.
        clock: the controller's clock.
        seconds_per_slot: clock seconds per slot (the spec's time scale).
        slot_hours: job hours per slot.
        restart_overhead_s: clock seconds of work lost at every start after the first.
        rate_factor: the real throughput over the profile's (1 = the profile is right).
    """

    def __init__(
        self,
        profile: ScalingProfile,
        work: float,
        clock: ControlClock,
        *,
        seconds_per_slot: float,
        slot_hours: float,
        restart_overhead_s: float = 0.0,
        rate_factor: float = 1.0,
    ) -> None:
        if work <= 0 or seconds_per_slot <= 0 or slot_hours <= 0 or rate_factor <= 0:
            raise ValueError("work, slot lengths and the rate factor must be positive")
        self.profile = profile
        self.work = work
        self.clock = clock
        self.overhead_s = restart_overhead_s
        # Work units per clock second at one unit of profile throughput.
        self._per_s = slot_hours / seconds_per_slot * rate_factor
        self._workers = 0
        self._ever_started = False
        self._done = 0.0
        self._at = clock.now()
        self._productive_from = self._at

    def _advance(self) -> None:
        now = self.clock.now()
        if self._workers > 0:
            productive = max(now - max(self._at, self._productive_from), 0.0)
            rate = float(self.profile.throughput[self._workers]) * self._per_s
            self._done = min(self._done + rate * productive, self.work)
        self._at = now

    @property
    def workers(self) -> int:
        return self._workers

    def start(self, workers: int) -> None:
        if not 1 <= workers <= self.profile.max_servers:
            raise BackendError(
                f"the profile describes 1..{self.profile.max_servers} workers, not {workers}"
            )
        self._advance()
        if self._ever_started:
            self._productive_from = self._at + self.overhead_s
        else:
            self._productive_from = self._at
        self._ever_started = True
        self._workers = workers

    def stop(self) -> None:
        self._advance()
        self._workers = 0

    def poll(self) -> WorkloadState:
        self._advance()
        if self._done >= self.work * _DONE_SHARE:
            return WorkloadState.DONE
        return WorkloadState.RUNNING if self._workers else WorkloadState.STOPPED

    def progress_pct(self) -> float | None:
        self._advance()
        return 100.0 * self._done / self.work

    def eta_s(self) -> float | None:
        self._advance()
        if self._workers == 0:
            return None
        rate = float(self.profile.throughput[self._workers]) * self._per_s
        if rate <= 0:
            return None
        waiting = max(self._productive_from - self._at, 0.0)
        return waiting + (self.work - self._done) / rate

    def handle(self) -> dict[str, object]:
        return {"simulated": True}

    def attach(self, handle: dict[str, object]) -> bool:
        return False  # a simulation lives only as long as its controller
