"""Runtimes the controller drives: local process groups (and, later, Kubernetes)."""

from carbonscaler.backends.local import LocalBackend, read_progress, read_progress_pct

__all__ = ["LocalBackend", "read_progress", "read_progress_pct"]
