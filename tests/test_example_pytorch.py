"""The elastic PyTorch example honours the workload contract, with real processes and signals.

``examples/pytorch/train.py`` runs as a subprocess, the way the local runtime starts it (own
process group, configuration in the environment). Every start pays for importing torch and
torch._dynamo (several seconds), so independent runs are started side by side to keep the file
within about 40 s on two cores; the tests wait on progress, never on fixed delays, so the
contention only slows them down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _workload import children, finish, wait_for_progress, wait_gone
from carbonscaler.workload import read_progress

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "pytorch" / "train.py"
STEPS = 100
STOP_TIMEOUT_S = 2.0  # the contract: exit within ~2 s of SIGTERM

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="uses /proc to find the worker processes"
    ),
]


def launch(run_dir: Path, workers: int) -> subprocess.Popen[bytes]:
    """Start the workload as the runtime does: own session, settings in the environment."""
    env = {
        **os.environ,
        "WORKERS": str(workers),
        "STEPS": str(STEPS),
        "SEED": "3",
        "LOGS_FOLDER": str(run_dir),
    }
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def result(run_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(run_dir / "checkpoint" / "model.pt", weights_only=True)
    return loaded


def first_logged_loss(output: str) -> float:
    return next(float(line.split()[-1]) for line in output.splitlines() if " loss " in line)


def test_stop_at_two_workers_resume_at_one(tmp_path: Path) -> None:
    """SIGTERM at 2 workers → checkpoint, exit 0; resume at 1 → done, close to uninterrupted."""
    reference_dir, elastic_dir = tmp_path / "reference", tmp_path / "elastic"
    reference = launch(reference_dir, workers=1)
    elastic = launch(elastic_dir, workers=2)

    wait_for_progress(elastic_dir, 20.0, elastic)
    stop_started = time.monotonic()
    os.killpg(elastic.pid, signal.SIGTERM)  # the whole group, as the runtime stops it
    code, first_output = finish(elastic)
    assert code == 0, first_output
    assert time.monotonic() - stop_started < STOP_TIMEOUT_S
    assert (elastic_dir / "checkpoint" / "checkpoint.pt").exists()
    assert not (elastic_dir / "checkpoint" / "DONE").exists()
    stopped = read_progress(elastic_dir / "progress.csv")
    stopped_at = None if stopped is None else stopped.percent
    assert stopped_at is not None and 0 < stopped_at < 100

    code, output = finish(launch(elastic_dir, workers=1))
    assert code == 0, output
    assert "resuming" in output
    assert (elastic_dir / "checkpoint" / "DONE").exists()
    code, reference_output = finish(reference)
    assert code == 0, reference_output

    resumed, uninterrupted = result(elastic_dir), result(reference_dir)
    assert resumed["step"] == uninterrupted["step"] == STEPS
    # The loss went down a lot, and the rescaled run ends where the uninterrupted one does
    # (same batches, same maths; only summation order differs with the worker count).
    assert uninterrupted["eval_loss"] < 0.5 * first_logged_loss(reference_output)
    assert resumed["eval_loss"] < 0.5 * first_logged_loss(first_output)
    assert resumed["eval_loss"] == pytest.approx(uninterrupted["eval_loss"], abs=0.01)

    lines = (elastic_dir / "progress.csv").read_text().splitlines()
    assert lines.count("step,percent") == 1
    percents = [float(line.split(",")[1]) for line in lines[1:]]
    assert percents == sorted(percents)
    assert percents[-1] == 100.0

    started = time.monotonic()
    code, output = finish(launch(elastic_dir, workers=2))
    assert code == 0, output
    assert "already complete" in output
    assert time.monotonic() - started < 2.0, "a finished job must not even import torch"


def test_dead_worker_fails_fast_and_killed_launcher_leaves_no_orphans(tmp_path: Path) -> None:
    """SIGKILL of a worker: prompt non-zero exit; SIGKILL of the launcher: workers die too."""
    crash_dir, orphan_dir = tmp_path / "crash", tmp_path / "orphan"
    crash = launch(crash_dir, workers=2)
    orphan = launch(orphan_dir, workers=2)

    wait_for_progress(crash_dir, 10.0, crash)
    workers = children(crash.pid)
    assert len(workers) == 2
    killed_at = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)
    code, output = finish(crash, timeout=10.0)
    assert time.monotonic() - killed_at < 5.0
    assert code != 0
    assert "failed" in output
    wait_gone(workers)
    assert not (crash_dir / "checkpoint" / "DONE").exists()
    checkpoint = crash_dir / "checkpoint" / "checkpoint.pt"
    if checkpoint.exists():  # written at least a second into training: a complete, good one
        assert 0 < torch.load(checkpoint, weights_only=True)["step"] < STEPS

    wait_for_progress(orphan_dir, 10.0, orphan)
    workers = children(orphan.pid)
    assert len(workers) == 2
    orphan.kill()
    orphan.wait()
    wait_gone(workers)


def test_stop_while_loading_exits_at_once(tmp_path: Path) -> None:
    """A stop before the workers exist needs no checkpoint: exit 0 without waiting for torch."""
    proc = launch(tmp_path, workers=2)
    time.sleep(0.5)  # the launcher is importing torch, which takes seconds
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert not (tmp_path / "checkpoint" / "checkpoint.pt").exists()
