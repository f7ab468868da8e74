"""How the command line is reached: ``--version``, ``python -m carbonscaler``, completion.

Each stays as light as ``--help`` (tests/test_cli_startup.py): no heavy module is imported to
print the version or to complete a word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

import carbonscaler
from carbonscaler.cli import app

runner = CliRunner()
HEAVY = ("numpy", "pandas", "scipy", "numba", "matplotlib", "fastapi", "httpx", "rich.table")


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run ``code`` with ``args`` in a fresh interpreter: its output, and the modules loaded."""
    script = (
        "import json, sys\n"
        "try:\n"
        f"    {code}\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "sys.stdout.flush()\n"
        "print('\\n' + json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output, modules = done.stdout.rstrip().rsplit("\n", 1)
    return output, json.loads(modules)


def _heavy(modules: list[str]) -> list[str]:
    return [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)]


MAIN = "sys.argv = ['carbonscaler', *sys.argv[1:]]; from carbonscaler.cli import main; main()"


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"carbonscaler {carbonscaler.__version__}\n"


def test_version_loads_no_heavy_module() -> None:
    output, modules = _run(MAIN, "--version")
    assert output.strip() == f"carbonscaler {carbonscaler.__version__}"
    assert _heavy(modules) == []


def test_python_dash_m_carbonscaler() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "carbonscaler", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"carbonscaler {carbonscaler.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "carbonscaler", "plan", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "--csv" in done.stdout


def test_root_help_offers_version_and_completion() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in result.stdout


def test_completion_completes_commands_and_options_lightly() -> None:
    # The protocol the installed bash script speaks (typer/click shell completion).
    env = {"_CARBONSCALER_COMPLETE": "complete_bash", "COMP_WORDS": "carbonscaler pl"}
    output, modules = _run(MAIN, env={**env, "COMP_CWORD": "1"})
    assert output.split() == ["plan"]
    assert _heavy(modules) == []
    env["COMP_WORDS"] = "carbonscaler plan --pro"
    output, _ = _run(MAIN, env={**env, "COMP_CWORD": "2"})
    assert output.split() == ["--profile"]


def test_show_completion_prints_a_script() -> None:
    env = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    output, modules = _run(MAIN, "--show-completion", "bash", env=env)
    assert "complete" in output and "_CARBONSCALER_COMPLETE" in output.upper()
    assert _heavy(modules) == []
