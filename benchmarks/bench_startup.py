"""Start-up time of the command line: ``carbonscaler --help`` and every command's ``--help``.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--repeat 10]`` (about half a minute).

Each command is run in a fresh process; the figure is the best wall time of ``--repeat`` runs
(the runs of all commands are interleaved, so a busy moment does not fall on one command only).
The yardstick is ``python -c "import numpy"`` on the same machine in the same run, and the
target (issue #14) is at most 3 times that: help must not wait for numpy, pandas, scipy,
matplotlib or the web stack, which only the commands themselves import when they run
(tests/test_cli_startup.py checks which modules a ``--help`` loads; this measures the time).
The commands are read from the command line itself, so new ones are measured too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer.main

from carbonscaler.cli import app

TARGET_RATIO = 3.0


def cli_prefix() -> list[str]:
    """How to start the command line: the installed ``carbonscaler`` script beside this Python,
    else ``python -m carbonscaler.cli``."""
    script = Path(sys.executable).with_name("carbonscaler")
    if script.is_file():
        return [str(script)]
    found = shutil.which("carbonscaler")
    return [found] if found else [sys.executable, "-m", "carbonscaler.cli"]


def command_paths() -> list[list[str]]:
    """The root, then every command and sub-command, as the words that name them."""
    paths: list[list[str]] = [[]]

    def walk(command: object, prefix: list[str]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def best_times(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """The best wall time (s) of each command over ``repeat`` interleaved runs (after one
    warm-up run each)."""
    best = dict.fromkeys(commands, float("inf"))
    for round_ in range(repeat + 1):
        for label, argv in commands.items():
            began = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            elapsed = time.perf_counter() - began
            if round_:  # round 0 warms the file cache and the bytecode
                best[label] = min(best[label], elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load[0]:.2f}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    prefix = cli_prefix()
    yardstick = 'python -c "import numpy"'
    commands = {yardstick: [sys.executable, "-c", "import numpy"]}
    for path in command_paths():
        commands[" ".join(["carbonscaler", *path, "--help"])] = [*prefix, *path, "--help"]
    print(f"cli: {' '.join(prefix)}; best of {args.repeat} runs each, wall time")
    print()
    best = best_times(commands, args.repeat)
    base = best[yardstick]
    width = max(map(len, commands))
    header = f"{'':<{width}} {'ms':>7} {'x numpy':>8}  target <= {TARGET_RATIO:g}x"
    print(header)
    print("-" * len(header))
    over = []
    for label, seconds in best.items():
        ratio = seconds / base
        verdict = "" if label == yardstick else ("ok" if ratio <= TARGET_RATIO else "OVER")
        if verdict == "OVER":
            over.append(label)
        print(f"{label:<{width}} {seconds * 1e3:>7.1f} {ratio:>7.2f}x  {verdict}")
    print()
    slowest = max((label for label in best if label != yardstick), key=best.__getitem__)
    print(
        f"slowest: {slowest} at {best[slowest] / base:.2f}x the numpy import; "
        + ("all within the target" if not over else f"{len(over)} over the target")
    )


if __name__ == "__main__":
    main()
