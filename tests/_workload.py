"""Shared helpers for tests that run an example workload as a real process tree."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from carbonscaler.workload import read_progress


def finish(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> tuple[int, str]:
    """Wait for the process; return its exit code and everything it printed."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out + err).decode()


def wait_for_progress(
    run_dir: Path, pct: float, proc: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> None:
    """Block until the run has reported at least ``pct`` percent (and is still running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early: {finish(proc)}"
        row = read_progress(run_dir / "progress.csv")
        reported = None if row is None else row.percent
        if reported is not None and reported >= pct:
            return
        time.sleep(0.005)
    raise AssertionError(f"no {pct} % progress within {timeout_s:g} s")


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (its worker processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def wait_gone(pids: list[int], timeout: float = 3.0) -> None:
    """Block until every pid has exited."""
    deadline = time.monotonic() + timeout
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still alive after {timeout} s: {pids}"
        time.sleep(0.02)
