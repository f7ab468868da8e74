"""The local backend: the workload as a process group on this machine.

The workload is launched from its command template with ``WORKERS``, ``CHECKPOINT_DIR`` and
``PROGRESS_FILE`` in its environment (and ``mpirun -np N`` in front when MPI is asked for and
installed). It runs in its own session, so a controller that dies does not take it along and a
restarted controller can re-attach to it by pid (checked against the process start time, so a
reused pid is never mistaken for it). Stopping sends SIGTERM to the whole group — the workload
checkpoints and exits — and SIGKILL after the timeout.

The workload contract (see ``examples/nbody``): append ``step,percent`` lines to the progress
file; checkpoint atomically; exit 0 on SIGTERM after checkpointing; on completion write a
``DONE`` file in the checkpoint directory; exit non-zero if a worker dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from carbonscaler.backends.base import Backend, BackendError, ExitRecord, WorkloadState
from carbonscaler.workload import ProgressError, read_progress

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)


def _process_start(pid: int) -> float | None:
    """When the process started (Unix time), to tell it from a later one given the same pid;
    None if it is gone or has finished (a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class LocalBackend(Backend):
    """Run a workload command as a process group.

    Args:
        command: template; ``{python}``, ``{workers}``, ``{checkpoint_dir}``,
            ``{progress_file}`` are filled in.
        checkpoint_dir: the workload's checkpoint folder (created).
        env: extra environment variables.
        cwd: working directory for the workload.
        launcher: ``plain``, ``mpi`` (``mpirun -np N`` in front) or ``auto`` (mpi if
            ``mpirun`` is installed).
        stop_timeout_s: how long a graceful stop may take before SIGKILL.

    Raises:
        BackendError: if ``launcher`` is ``mpi`` and ``mpirun`` is not installed.
    """

    def __init__(
        self,
        command: str,
        checkpoint_dir: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        launcher: str = "plain",
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.command = command
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.progress_file = self.checkpoint_dir / "progress.csv"
        self.log_file = self.checkpoint_dir / "workload.log"
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else None
        self.stop_timeout_s = stop_timeout_s
        mpirun = shutil.which("mpirun")
        if launcher == "mpi" and mpirun is None:
            raise BackendError(
                "launcher 'mpi' needs mpirun on PATH (apt-get install openmpi-bin); "
                "use launcher 'plain' or 'auto'"
            )
        self.mpirun = mpirun if launcher in ("mpi", "auto") else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._started_at: float | None = None
        self._workers = 0
        self._stopping = False

    # -- launching ---------------------------------------------------------------------

    def argv(self, workers: int) -> list[str]:
        """The command line for ``workers`` workers."""
        text = self.command.format(
            python=shlex.quote(sys.executable),
            workers=workers,
            checkpoint_dir=shlex.quote(str(self.checkpoint_dir)),
            progress_file=shlex.quote(str(self.progress_file)),
        )
        args = shlex.split(text)
        if self.mpirun is not None:
            args = [self.mpirun, "-np", str(workers), *args]
        return args

    def environment(self, workers: int) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.update(
            WORKERS=str(workers),
            CHECKPOINT_DIR=str(self.checkpoint_dir),
            PROGRESS_FILE=str(self.progress_file),
        )
        env.setdefault("LOGS_FOLDER", str(self.checkpoint_dir))
        return env

    @property
    def workers(self) -> int:
        return self._workers if self._alive() else 0

    def start(self, workers: int) -> None:
        if workers < 1:
            raise BackendError(f"cannot start with {workers} workers")
        if self._alive():
            raise BackendError("the workload is already running; stop it or rescale")
        with self.log_file.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv(workers),
                    cwd=self.cwd,
                    env=self.environment(workers),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BackendError(
                    f"cannot start the workload ({exc}); check workload.command"
                ) from exc
        self._pid = self._proc.pid
        self._started_at = _process_start(self._pid)
        self._workers = workers
        self._stopping = False

    def stop(self) -> None:
        if not self._alive() or self._pid is None:
            self._workers = 0
            return
        self._stopping = True
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive():
            self._signal(signal.SIGKILL)
            while self._alive():
                time.sleep(0.02)
        else:
            # The launcher is gone; make sure none of its group lingers.
            self._signal(signal.SIGKILL)
        self._workers = 0

    def kill(self) -> None:
        """SIGKILL the whole group at once (used on shutdown and in tests)."""
        self._signal(signal.SIGKILL)
        while self._alive():
            time.sleep(0.02)
        self._workers = 0

    def _signal(self, sig: signal.Signals) -> None:
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    def _alive(self) -> bool:
        if self._pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        started = _process_start(self._pid)
        return started is not None and started == self._started_at

    # -- observing ---------------------------------------------------------------------

    @property
    def done_marker(self) -> Path:
        return self.checkpoint_dir / "DONE"

    def poll(self) -> WorkloadState:
        if self.done_marker.exists() and not self._alive():
            return WorkloadState.DONE
        if self._alive():
            return WorkloadState.RUNNING
        if self._pid is None or self._stopping:
            return WorkloadState.STOPPED
        code = self._proc.returncode if self._proc is not None else None
        if code == 0 and not self.done_marker.exists():
            return WorkloadState.STOPPED
        return WorkloadState.CRASHED

    def progress_pct(self) -> float | None:
        """The workload's last report; a malformed one is logged and reads as no news (the
        controller keeps its last reading)."""
        try:
            row = read_progress(self.progress_file)
        except ProgressError as exc:
            log.warning("%s", exc)
            return None
        return None if row is None else row.percent

    def exit_record(self) -> ExitRecord | None:
        """The completion marker's time, else the progress file's last write."""
        for marker, finished in ((self.done_marker, True), (self.progress_file, False)):
            try:
                return ExitRecord(finished, marker.stat().st_mtime)
            except FileNotFoundError:
                continue
        return None

    def pids(self) -> list[int]:
        """Processes of the workload's group (launcher and workers)."""
        if self._pid is None:
            return []
        found = []
        for process in psutil.process_iter(["status"]):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(process.pid) == self._pid:  # same process group
                    found.append(process.pid)
        return sorted(found)

    # -- surviving a controller restart ------------------------------------------------

    def handle(self) -> dict[str, object]:
        return {"pid": self._pid, "started_at": self._started_at, "workers": self._workers}

    def attach(self, handle: dict[str, object]) -> bool:
        pid, started, workers = handle.get("pid"), handle.get("started_at"), handle.get("workers")
        if not isinstance(pid, int) or not isinstance(workers, int):
            return False
        if not isinstance(started, float) or _process_start(pid) != started:
            return False
        self._proc = None
        self._pid = pid
        self._started_at = started
        self._workers = workers
        return True
