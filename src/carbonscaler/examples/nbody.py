"""Elastic gravitational N-body simulation: the reference workload for CarbonScaler.

``BODIES`` bodies under softened Newtonian gravity (G = 1, equal masses) are advanced
``ITERATIONS`` fixed time steps with velocity Verlet (kick-drift-kick leapfrog). Each step's
O(N²) accelerations are split by body slices across ``WORKERS`` forked worker processes that
share the positions and the accelerations through anonymous shared memory; the launcher does the
O(N) integration itself.

Run it as ``python -m carbonscaler.examples.nbody`` (it ships with the package, so it runs from
any folder). It follows the workload contract of ``carbonscaler``'s local runtime (see
``examples/nbody/README.md`` in the repository): it appends ``step,percent`` lines to the
progress file, checkpoints atomically at least every ``CHECKPOINT_INTERVAL`` seconds, resumes
from the checkpoint at any worker count, stops gracefully on SIGTERM/SIGINT (finish the step,
checkpoint, exit 0), writes ``result.npz`` and a ``DONE`` marker when complete, and exits
non-zero without touching the checkpoint when a worker dies.

The final state is bit-for-bit the same whatever the worker count and however often the run was
stopped and rescaled: every body's acceleration is computed by the same floating-point operations
in the same order whichever slice it falls in (element-wise arithmetic, then one per-row
reduction over all N bodies; no BLAS, whose blocking depends on the shapes), and checkpoints keep
the full state in binary.

Configuration comes from the environment (``WORKERS``, ``BODIES``, ``ITERATIONS``, ``SEED``,
``LOGS_FOLDER``, ``CHECKPOINT_DIR``, ``PROGRESS_FILE``, ``CHECKPOINT_INTERVAL``); each has a
command-line flag that overrides it. Exit codes: 0 stopped or done, 1 a worker died, 2 bad
configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import mmap
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import BinaryIO

# The workers are the parallelism; BLAS threads would only sit idle or oversubscribe the cores,
# and forking a threaded process is unsafe (Python >= 3.12 warns). BLAS reads these variables
# when numpy is first imported, hence before that import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from carbonscaler.workload import (  # noqa: E402
    ProgressLog,
    non_negative_int,
    positive_float,
    positive_int,
    remove_stale_temporaries,
    write_atomically,
)

FloatArray = NDArray[np.float64]

DT = 1e-3  # time step (N-body units: G = 1, total mass 1, initial radius ~1)
SOFTENING = 0.05  # Plummer softening length; keeps close encounters finite with a fixed step
TILE_ROWS = 32  # rows per tile: (TILE_ROWS, N) temporaries stay in cache (measured best)
PARENT_CHECK_S = 0.5  # how often an idle worker checks that its launcher still exists
CHECKPOINT_NAME = "checkpoint.npz"
RESULT_NAME = "result.npz"
DONE_NAME = "DONE"

EXIT_WORKER_DIED = 1
EXIT_BAD_CONFIG = 2


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What to simulate, with how many workers, and where to keep state."""

    bodies: int
    iterations: int
    seed: int
    workers: int
    checkpoint_dir: Path
    progress_file: Path
    checkpoint_interval: float


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Config:
    """Read the configuration: flags first, then the environment, then defaults.

    argparse converts string defaults with the flag's type, so a bad environment value is
    reported like a bad flag (exit code 2).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=positive_int, default=environ.get("BODIES", "2000"))
    parser.add_argument(
        "--iterations", type=positive_int, default=environ.get("ITERATIONS", "1000")
    )
    parser.add_argument("--seed", type=non_negative_int, default=environ.get("SEED", "0"))
    parser.add_argument("--workers", type=positive_int, default=environ.get("WORKERS", "1"))
    parser.add_argument(
        "--logs-folder",
        type=Path,
        default=environ.get("LOGS_FOLDER", "nbody-run"),
        help="default home of the progress file and the checkpoint folder",
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=environ.get("CHECKPOINT_DIR"))
    parser.add_argument("--progress-file", type=Path, default=environ.get("PROGRESS_FILE"))
    parser.add_argument(
        "--checkpoint-interval",
        type=positive_float,
        default=environ.get("CHECKPOINT_INTERVAL", "1.0"),
        help="seconds of work between checkpoints",
    )
    args = parser.parse_args(argv)
    logs: Path = args.logs_folder
    return Config(
        bodies=args.bodies,
        iterations=args.iterations,
        seed=args.seed,
        # Every worker needs at least one body.
        workers=min(args.workers, args.bodies),
        checkpoint_dir=args.checkpoint_dir or logs / "checkpoint",
        progress_file=args.progress_file or logs / "progress.csv",
        checkpoint_interval=args.checkpoint_interval,
    )


# -- physics -----------------------------------------------------------------------------


@dataclass
class State:
    """The full simulation state; arrays are (3, N) coordinate-major, ``mass`` is (N,)."""

    pos: FloatArray
    vel: FloatArray
    acc: FloatArray  # the acceleration at ``pos``, so a step needs one force evaluation
    mass: FloatArray
    step: int


def initial_conditions(bodies: int, seed: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Positions, velocities and masses of a cold, slowly rotating uniform sphere.

    Returns:
        ``(pos, vel, mass)`` with total mass 1, radius 1 and zero total momentum.
    """
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal((3, bodies))
    direction /= np.linalg.norm(direction, axis=0)
    pos = direction * rng.random(bodies) ** (1.0 / 3.0)
    # Solid-body rotation about z plus a little random motion: a bound system that neither
    # flies apart nor collapses at once, so the run stays physically meaningful for long.
    vel = 0.3 * np.stack([-pos[1], pos[0], np.zeros(bodies)])
    vel += 0.05 * rng.standard_normal((3, bodies))
    vel -= vel.mean(axis=1, keepdims=True)
    mass = np.full(bodies, 1.0 / bodies)
    return pos, vel, mass


def accelerations(
    pos: FloatArray, mass: FloatArray, lo: int, hi: int, out: FloatArray, scratch: FloatArray
) -> None:
    """Write the accelerations of bodies ``lo:hi`` into ``out[:, lo:hi]``.

    Every row goes through the same element-wise operations and one contiguous ``np.sum`` over
    all N bodies, so a body's result does not depend on the slice or tile it is computed in.
    The self term is zero (its separation is zero and the softening keeps the division finite).

    Args:
        scratch: a (5, TILE_ROWS, N) buffer, reused so that no step allocates.
    """
    eps2 = SOFTENING * SOFTENING
    for i0 in range(lo, hi, TILE_ROWS):
        i1 = min(i0 + TILE_ROWS, hi)
        dx, dy, dz, r2, w = scratch[:, : i1 - i0]
        np.subtract(pos[0], pos[0, i0:i1, None], out=dx)
        np.subtract(pos[1], pos[1, i0:i1, None], out=dy)
        np.subtract(pos[2], pos[2, i0:i1, None], out=dz)
        np.multiply(dx, dx, out=r2)
        np.multiply(dy, dy, out=w)
        r2 += w
        np.multiply(dz, dz, out=w)
        r2 += w
        r2 += eps2
        # m_j / (r² + ε²)^{3/2} as sqrt and products: correctly rounded everywhere, unlike pow.
        np.sqrt(r2, out=w)
        w *= r2
        np.divide(mass, w, out=w)
        for axis, d in enumerate((dx, dy, dz)):
            d *= w
            np.sum(d, axis=1, out=out[axis, i0:i1])


# -- workers -----------------------------------------------------------------------------


class WorkerDied(RuntimeError):
    """A worker process exited while the launcher still needed it."""


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    # The parent may have died before prctl took effect; then we are already an orphan.
    if os.getppid() != parent_pid:
        os._exit(0)


def _worker_main(
    conn: Connection, shared: mmap.mmap, bodies: int, lo: int, hi: int, parent_pid: int
) -> None:
    """Compute accelerations of bodies ``lo:hi`` each time the launcher says so."""
    _die_with_parent(parent_pid)
    # A stop is the launcher's business: a SIGTERM/SIGINT sent to the whole process group must
    # not kill a worker mid-step, or the launcher would take the stop for a crash.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pos, acc, mass = _views(shared, bodies)
    scratch = np.empty((5, min(TILE_ROWS, hi - lo), bodies))
    while True:
        # Poll with a timeout so that, where there is no PDEATHSIG, an orphan still notices.
        if not conn.poll(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                return
            continue
        if conn.recv_bytes() == b"quit":
            return
        accelerations(pos, mass, lo, hi, acc, scratch)
        conn.send_bytes(b"ok")


def _views(shared: mmap.mmap, bodies: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Positions (3, N), accelerations (3, N) and masses (N,) laid out in the shared buffer."""
    flat = np.frombuffer(shared, dtype=np.float64)
    return (
        flat[: 3 * bodies].reshape(3, bodies),
        flat[3 * bodies : 6 * bodies].reshape(3, bodies),
        flat[6 * bodies : 7 * bodies],
    )


class WorkerPool:
    """Forked workers that compute the accelerations of their body slices in shared memory.

    Anonymous shared memory inherited through fork needs no names, so nothing is left behind
    in /dev/shm when the launcher is killed. Workers ignore SIGTERM/SIGINT, leave when told
    to, and die with their launcher.

    Attributes:
        pos, acc, mass: the shared arrays; the launcher writes ``pos`` and ``mass`` and reads
            ``acc`` only between calls to :meth:`compute`.
    """

    def __init__(self, bodies: int, workers: int) -> None:
        self._shared = mmap.mmap(-1, 7 * bodies * np.dtype(np.float64).itemsize)
        self.pos, self.acc, self.mass = _views(self._shared, bodies)
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        context = mp.get_context("fork")
        bounds = [k * bodies // workers for k in range(workers + 1)]
        for lo, hi in itertools.pairwise(bounds):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(theirs, self._shared, bodies, lo, hi, os.getpid()),
                name=f"nbody-worker-{lo}-{hi}",
            )
            proc.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(proc)

    def compute(self) -> None:
        """Fill ``acc`` from ``pos``; raise :class:`WorkerDied` as soon as any worker dies."""
        try:
            for conn in self._conns:
                conn.send_bytes(b"go")
        except OSError as exc:
            raise WorkerDied(self._casualties()) from exc
        pending = set(self._conns)
        sentinels = {proc.sentinel for proc in self._procs}
        while pending:
            for ready in wait([*pending, *sentinels]):
                if ready in sentinels:
                    raise WorkerDied(self._casualties())
                assert isinstance(ready, Connection)
                try:
                    ready.recv_bytes()
                except (EOFError, OSError) as exc:  # closed or reset pipe: the worker is gone
                    raise WorkerDied(self._casualties()) from exc
                pending.discard(ready)

    def _casualties(self) -> str:
        dead = [
            f"{proc.name} (pid {proc.pid}, exit code {proc.exitcode})"
            for proc in self._procs
            if not proc.is_alive()
        ]
        return "worker died: " + (", ".join(dead) if dead else "a worker closed its pipe")

    def close(self) -> None:
        """Tell the workers to leave; kill any that does not within a second."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send_bytes(b"quit")
            conn.close()
        deadline = time.monotonic() + 1.0
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- files -------------------------------------------------------------------------------


def save_checkpoint(cfg: Config, state: State) -> None:
    """Store the full state, and what it was computed for, in ``checkpoint.npz``."""

    def write(fh: BinaryIO) -> None:
        np.savez(
            fh,
            pos=state.pos,
            vel=state.vel,
            acc=state.acc,
            mass=state.mass,
            step=np.int64(state.step),
            bodies=np.int64(cfg.bodies),
            iterations=np.int64(cfg.iterations),
            seed=np.int64(cfg.seed),
        )

    write_atomically(cfg.checkpoint_dir / CHECKPOINT_NAME, write)


def load_checkpoint(cfg: Config) -> State | None:
    """The checkpointed state, or None if there is none.

    Raises:
        ValueError: if the checkpoint belongs to a different simulation.
    """
    path = cfg.checkpoint_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    with np.load(path) as data:
        saved = {key: int(data[key]) for key in ("bodies", "iterations", "seed")}
        wanted = {"bodies": cfg.bodies, "iterations": cfg.iterations, "seed": cfg.seed}
        if saved != wanted:
            raise ValueError(
                f"{path} was written for {saved}, but this run asks for {wanted}; "
                "use another checkpoint directory or the same settings"
            )
        return State(
            pos=data["pos"],
            vel=data["vel"],
            acc=data["acc"],
            mass=data["mass"],
            step=int(data["step"]),
        )


# -- the run -----------------------------------------------------------------------------


class StopRequest:
    """Signal handler that asks the main loop to stop after the current step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def finish(cfg: Config, state: State, progress: ProgressLog) -> None:
    """Publish the result, then 100 %, then the DONE marker, in that order.

    A reader that sees 100 % or DONE can rely on ``result.npz`` being complete; if the launcher
    is killed part-way, the next start (from the final checkpoint) repeats this.
    """

    def write(fh: BinaryIO) -> None:
        np.savez(fh, positions=state.pos.T, velocities=state.vel.T, masses=state.mass)

    write_atomically(cfg.checkpoint_dir / RESULT_NAME, write)
    progress.record(state.step)
    write_atomically(cfg.checkpoint_dir / DONE_NAME, lambda fh: None)


def simulate(cfg: Config, state: State, fresh: bool, stop: StopRequest) -> int:
    """Advance ``state`` to the last iteration or until a stop is asked; return the exit code."""
    progress = ProgressLog(cfg.progress_file, cfg.iterations)
    try:
        if state.step >= cfg.iterations:  # killed while finishing: publish the result again
            finish(cfg, state, progress)
            return 0
        progress.record(state.step)  # shows where this run (re)starts, e.g. after a crash
        with WorkerPool(cfg.bodies, cfg.workers) as pool:
            # From here on the state's positions and accelerations live in shared memory.
            pool.pos[:] = state.pos
            pool.mass[:] = state.mass
            state.pos, state.mass = pool.pos, pool.mass
            if fresh:
                pool.compute()
            else:
                pool.acc[:] = state.acc
            state.acc = pool.acc
            half_dt = 0.5 * DT
            first_step, started = state.step, time.monotonic()
            last_checkpoint = started
            while state.step < cfg.iterations:
                if stop.requested:
                    save_checkpoint(cfg, state)
                    _report("stopped", cfg, state.step - first_step, started)
                    return 0
                state.vel += half_dt * state.acc
                state.pos += DT * state.vel
                pool.compute()
                state.vel += half_dt * state.acc
                state.step += 1
                if state.step < cfg.iterations:  # 100 % is written by finish(), last
                    progress.record(state.step)
                if time.monotonic() - last_checkpoint >= cfg.checkpoint_interval:
                    save_checkpoint(cfg, state)
                    last_checkpoint = time.monotonic()
            save_checkpoint(cfg, state)
            _report("done", cfg, state.step - first_step, started)
        finish(cfg, state, progress)
        return 0
    except WorkerDied as exc:
        # The state in memory may be half-updated: leave the last good checkpoint as it is.
        print(f"nbody: {exc}; exiting, last checkpoint kept", file=sys.stderr, flush=True)
        return EXIT_WORKER_DIED
    finally:
        progress.close()


def _report(what: str, cfg: Config, steps: int, started: float) -> None:
    elapsed = time.monotonic() - started
    rate = steps / elapsed if elapsed > 0 else 0.0
    print(
        f"nbody: {what} after {steps} steps in {elapsed:.2f} s "
        f"({rate:.1f} steps/s, {1000.0 / rate if rate else 0.0:.1f} ms/step) "
        f"with {cfg.workers} worker(s)",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the simulation; see the module docstring for the contract."""
    cfg = parse_config(argv, os.environ)
    # Installed before the workers are forked, so a signal in the instant before a worker
    # ignores it only sets the worker's copy of the flag.
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if (cfg.checkpoint_dir / DONE_NAME).exists():
        print(f"nbody: already complete ({cfg.checkpoint_dir / DONE_NAME})", flush=True)
        return 0
    remove_stale_temporaries(cfg.checkpoint_dir)
    try:
        state = load_checkpoint(cfg)
    except ValueError as exc:
        print(f"nbody: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    fresh = state is None
    if state is None:
        pos, vel, mass = initial_conditions(cfg.bodies, cfg.seed)
        state = State(pos=pos, vel=vel, acc=np.zeros_like(pos), mass=mass, step=0)
    print(
        f"nbody: {'starting' if fresh else 'resuming'} at step {state.step}/{cfg.iterations}, "
        f"{cfg.bodies} bodies, {cfg.workers} worker(s)",
        flush=True,
    )
    return simulate(cfg, state, fresh, stop)


if __name__ == "__main__":
    sys.exit(main())
