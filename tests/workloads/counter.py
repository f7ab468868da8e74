"""A tiny elastic workload for controller tests: counts steps, sleeping between them.

It follows the runtime's workload contract (WORKERS, CHECKPOINT_DIR, PROGRESS_FILE; ``step,
percent`` progress lines; atomic JSON checkpoint; SIGTERM → checkpoint and exit 0; DONE marker)
but sleeps instead of computing, so its speed is exact and independent of machine load:
``WORKERS ** SCALING`` steps every ``STEP_S`` seconds. ``FAIL_AT_STEP`` makes the first run
that reaches that step exit with code 3 (a crash), once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

workers = int(os.environ["WORKERS"])
checkpoint_dir = Path(os.environ["CHECKPOINT_DIR"])
progress_file = Path(os.environ["PROGRESS_FILE"])
total = int(os.environ.get("TOTAL_STEPS", "100"))
step_s = float(os.environ.get("STEP_S", "0.01"))
scaling = float(os.environ.get("SCALING", "1.0"))
fail_at = int(os.environ.get("FAIL_AT_STEP", "-1"))

checkpoint_dir.mkdir(parents=True, exist_ok=True)
state_file = checkpoint_dir / "state.json"
step = json.loads(state_file.read_text())["step"] if state_file.exists() else 0.0
stop = False


def on_term(signum: int, frame: object) -> None:
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def save() -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step}))
    os.replace(tmp, state_file)


new = not progress_file.exists()
with progress_file.open("a") as progress:
    if new:
        progress.write("step,percent\n")
    rate = workers**scaling
    while step < total and not stop:
        time.sleep(step_s)
        step = min(step + rate, float(total))
        crash_now = fail_at >= 0 and step >= fail_at and not stop
        if crash_now and not (checkpoint_dir / "failed").exists():
            (checkpoint_dir / "failed").touch()
            sys.exit(3)
        save()
        progress.write(f"{step},{100.0 * step / total}\n")
        progress.flush()
if step >= total:
    (checkpoint_dir / "DONE").touch()
