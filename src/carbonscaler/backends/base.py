"""The backend interface: what the controller needs from a runtime (local, Kubernetes)."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["Backend", "BackendError", "ExitRecord", "WorkloadState"]


class BackendError(RuntimeError):
    """The runtime could not do what was asked (start, stop, rescale)."""


class WorkloadState(enum.Enum):
    """What the workload is doing, as far as the backend can tell."""

    STOPPED = "stopped"  # not running, not finished (suspended, or never started)
    RUNNING = "running"
    DONE = "done"  # finished its work
    CRASHED = "crashed"  # exited abnormally; restart from the last checkpoint


@dataclass(frozen=True)
class ExitRecord:
    """A workload's own record of how far it ran.

    Attributes:
        finished: whether it completed its work (not merely stopped or crashed).
        at_s: when it last recorded anything (completion, or its last progress), epoch seconds.
    """

    finished: bool
    at_s: float


class Backend(ABC):
    """Runs one elastic workload at a chosen number of workers.

    Implementations keep enough state outside the process (pids, names) that a controller
    restarted after a crash can :meth:`attach` to a workload that kept running.
    """

    @property
    @abstractmethod
    def workers(self) -> int:
        """Workers running now (0 when stopped)."""

    @abstractmethod
    def start(self, workers: int) -> None:
        """Start the workload at ``workers`` workers, resuming from its last checkpoint.

        Raises:
            BackendError: if it cannot be started.
        """

    @abstractmethod
    def stop(self) -> None:
        """Stop gracefully (the workload checkpoints), forcefully after a timeout."""

    @abstractmethod
    def poll(self) -> WorkloadState:
        """The workload's state now."""

    @abstractmethod
    def progress_pct(self) -> float | None:
        """Percent of the work done (0-100) as the workload last reported, if any."""

    @abstractmethod
    def handle(self) -> dict[str, object]:
        """What a restarted controller needs to re-attach (persisted with its state)."""

    @abstractmethod
    def attach(self, handle: dict[str, object]) -> bool:
        """Re-attach to a workload started by an earlier controller; False if it is gone."""

    def rescale(self, workers: int) -> None:
        """Change the worker count: checkpoint, stop, start at the new size.

        Scaling to 0 stops (suspends) the workload; from 0 it starts (resumes) it.
        """
        if workers == self.workers:
            return
        if self.workers > 0:
            self.stop()
        if workers > 0:
            self.start(workers)

    def exit_record(self) -> ExitRecord | None:
        """What the workload left behind about its end — for a controller restarted after it
        exited — or None if the backend keeps no such record."""
        return None

    def eta_s(self) -> float | None:
        """Seconds until the workload finishes at its current size, where the backend can
        know it (a simulation); None otherwise."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the workload is left as it is."""
