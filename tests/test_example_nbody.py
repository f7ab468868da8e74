"""The elastic N-body example honours the workload contract, with real processes and signals.

Every test runs ``python -m carbonscaler.examples.nbody`` (the module that ships with the
package; ``examples/nbody`` holds its job spec and README) as a subprocess, the way the local
runtime does (own process group, configuration in the environment), and checks the contract:
progress lines, graceful stop on SIGTERM, resume at another worker count with a bit-identical
result, a prompt non-zero exit when a worker is killed, no orphans when the launcher is killed,
and an immediate exit once done. Sizes are chosen so that a run lasts about a second on one
core: long enough to be interrupted part-way, short enough to keep the file well under a minute.
"""

from __future__ import annotations

import importlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from _workload import children, finish, wait_for_progress, wait_gone

MODULE = "carbonscaler.examples.nbody"
COMMAND = [sys.executable, "-m", MODULE]
BODIES = 600
ITERATIONS = 400
STOP_TIMEOUT_S = 2.0  # the contract: exit within ~2 s of SIGTERM

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="uses /proc to find the worker processes"
    ),
]


# -- helpers -----------------------------------------------------------------------------


def launch(run_dir: Path, workers: int, **extra: str) -> subprocess.Popen[bytes]:
    """Start the workload as the runtime does: own session, settings in the environment."""
    env = {
        **os.environ,
        "WORKERS": str(workers),
        "BODIES": str(BODIES),
        "ITERATIONS": str(ITERATIONS),
        "SEED": "7",
        "LOGS_FOLDER": str(run_dir),
        **extra,
    }
    return subprocess.Popen(
        COMMAND,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def progress_rows(run_dir: Path) -> list[tuple[int, float]]:
    """The ``(step, percent)`` rows of the progress file, header excluded."""
    lines = (run_dir / "progress.csv").read_text().splitlines()
    assert lines[0] == "step,percent"
    return [(int(s), float(p)) for s, p in (line.split(",") for line in lines[1:])]


def stop(proc: subprocess.Popen[bytes], *, group: bool) -> float:
    """SIGTERM the launcher (or its whole group, as the runtime does); return the stop time."""
    started = time.monotonic()
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    code, output = finish(proc)
    assert code == 0, output
    return time.monotonic() - started


def result(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoint" / "result.npz") as data:
        return {key: data[key] for key in data.files}


def assert_same_result(run_dir: Path, reference: dict[str, np.ndarray]) -> None:
    got = result(run_dir)
    assert got.keys() == reference.keys()
    for key, value in reference.items():
        assert np.array_equal(got[key], value), f"{key} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """(a) The result of an uninterrupted run on one worker."""
    run_dir = tmp_path_factory.mktemp("reference")
    code, output = finish(launch(run_dir, workers=1))
    assert code == 0, output
    assert (run_dir / "checkpoint" / "DONE").exists()
    return result(run_dir)


@pytest.fixture(scope="module")
def nbody() -> ModuleType:
    """The workload module imported, for testing its numerical kernel directly."""
    # Importing sets BLAS thread variables for the workload's own process; keep them out of ours.
    with pytest.MonkeyPatch.context() as patch:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            patch.setenv(var, "1")
        return importlib.import_module(MODULE)


# -- tests -------------------------------------------------------------------------------


def test_reference_run_completes(reference: dict[str, np.ndarray]) -> None:
    assert reference["positions"].shape == (BODIES, 3)
    assert reference["velocities"].shape == (BODIES, 3)
    assert np.isfinite(reference["positions"]).all()


@pytest.mark.parametrize("bodies", [1, 31, 97, 300])
def test_accelerations_do_not_depend_on_the_slicing(nbody: ModuleType, bodies: int) -> None:
    """Any split into slices (odd sizes, tile remainders, single rows) gives identical bits."""
    pos, _, mass = nbody.initial_conditions(bodies, seed=3)
    scratch = np.empty((5, nbody.TILE_ROWS, bodies))
    whole = np.empty((3, bodies))
    nbody.accelerations(pos, mass, 0, bodies, whole, scratch)
    for workers in (2, 3, 7):
        bounds = [k * bodies // workers for k in range(workers + 1)]
        sliced = np.full((3, bodies), np.nan)
        for lo, hi in itertools.pairwise(bounds):
            nbody.accelerations(pos, mass, lo, hi, sliced, scratch)
        assert np.array_equal(sliced, whole), f"{workers} slices"
    single_rows = np.full((3, bodies), np.nan)
    for i in range(bodies):
        nbody.accelerations(pos, mass, i, i + 1, single_rows, scratch)
    assert np.array_equal(single_rows, whole)
    # Momentum is conserved: the pairwise forces cancel up to rounding.
    assert np.allclose((mass * whole).sum(axis=1), 0.0, atol=1e-12)


def test_stop_and_rescale_is_bit_identical(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """(b) + (d): 2 workers → SIGTERM → 1 worker → SIGTERM → 3 workers to the end."""
    checkpoint = tmp_path / "checkpoint" / "checkpoint.npz"

    proc = launch(tmp_path, workers=2)
    wait_for_progress(tmp_path, 10.0, proc)
    assert stop(proc, group=True) < STOP_TIMEOUT_S
    assert checkpoint.exists()
    assert not (tmp_path / "checkpoint" / "DONE").exists()
    first_stop = progress_rows(tmp_path)[-1]
    assert 0 < first_stop[1] < 100
    with np.load(checkpoint) as data:
        assert int(data["step"]) == first_stop[0], "the checkpoint is the last reported step"

    proc = launch(tmp_path, workers=1)
    wait_for_progress(tmp_path, first_stop[1] + 10.0, proc)
    assert stop(proc, group=False) < STOP_TIMEOUT_S

    code, output = finish(launch(tmp_path, workers=3))
    assert code == 0, output
    assert (tmp_path / "checkpoint" / "DONE").exists()
    assert_same_result(tmp_path, reference)

    # (d) the progress file: one header, percent never goes back, ends at 100.
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert lines.count("step,percent") == 1
    rows = progress_rows(tmp_path)
    percents = [pct for _, pct in rows]
    assert percents == sorted(percents)
    assert rows[-1] == (ITERATIONS, 100.0)
    assert {step for step, _ in rows} == set(range(ITERATIONS + 1)), "every step reported"


def test_killed_worker_fails_fast_and_resume_is_exact(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """(c) SIGKILL of one worker: prompt non-zero exit, good checkpoint kept, exact resume."""
    proc = launch(tmp_path, workers=2, CHECKPOINT_INTERVAL="0.05")
    wait_for_progress(tmp_path, 20.0, proc)
    workers = children(proc.pid)
    assert len(workers) == 2
    killed_at = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    code, output = finish(proc, timeout=10.0)
    assert time.monotonic() - killed_at < 5.0
    assert code != 0
    assert "worker died" in output
    wait_gone(workers)

    reported = progress_rows(tmp_path)[-1][0]
    with np.load(tmp_path / "checkpoint" / "checkpoint.npz") as data:
        assert 0 < int(data["step"]) <= reported
        assert np.isfinite(data["pos"]).all()
    code, output = finish(launch(tmp_path, workers=2))
    assert code == 0, output
    assert_same_result(tmp_path, reference)


def test_killed_launcher_leaves_no_orphans(tmp_path: Path) -> None:
    """(e) SIGKILL of the launcher alone takes its workers down with it."""
    proc = launch(tmp_path, workers=2)
    wait_for_progress(tmp_path, 5.0, proc)
    workers = children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    wait_gone(workers)


def test_restart_after_done_exits_at_once(tmp_path: Path) -> None:
    """(f) Once DONE is written, a restart exits 0 at once and reports nothing new."""
    code, output = finish(launch(tmp_path, workers=2, ITERATIONS="5"))
    assert code == 0, output
    before = (tmp_path / "progress.csv").read_text()
    started = time.monotonic()
    code, output = finish(launch(tmp_path, workers=1, ITERATIONS="5"))
    assert code == 0, output
    assert time.monotonic() - started < 2.0
    assert "already complete" in output
    assert (tmp_path / "progress.csv").read_text() == before


def test_checkpoint_of_another_simulation_is_refused(tmp_path: Path) -> None:
    proc = launch(tmp_path, workers=1)
    wait_for_progress(tmp_path, 5.0, proc)
    stop(proc, group=False)
    code, output = finish(launch(tmp_path, workers=1, BODIES=str(BODIES + 1)))
    assert code == 2
    assert "was written for" in output


def test_flags_override_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "BODIES": "oops", "WORKERS": "0", "LOGS_FOLDER": str(tmp_path / "no")}
    args = ["--bodies", "50", "--iterations", "3", "--workers", "2", "--logs-folder"]
    done = subprocess.run(
        [*COMMAND, *args, str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert progress_rows(tmp_path)[-1] == (3, 100.0)
    assert not (tmp_path / "no").exists()
