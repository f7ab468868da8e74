"""Runtimes the controller drives: the backend interface (``base``), local process groups
(``local``), Kubeflow jobs (``kubernetes``, imported only on use: it needs the kubernetes
client), and the profiler that measures a workload by running it locally (``profiler``)."""

from carbonscaler.backends.base import Backend, BackendError, WorkloadState
from carbonscaler.backends.local import LocalBackend

__all__ = [
    "Backend",
    "BackendError",
    "LocalBackend",
    "WorkloadState",
]
