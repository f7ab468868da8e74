"""The command line answers at once (issue #14): ``carbonscaler --help`` and every command's
``--help`` import no heavy module.

Every command module is imported to build the command line, so each keeps numpy, pandas, the
planner, the services... inside its functions (see :mod:`carbonscaler.cli`). This checks which
modules get loaded, in a fresh interpreter per case, not how long it takes (for that, see
benchmarks/bench_startup.py). The commands are read from the command line itself, so a new
command is checked without being listed here.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from carbonscaler.cli import app
from carbonscaler.cli._common import USER_ERRORS

SRC = Path(__file__).resolve().parents[1] / "src" / "carbonscaler"

# What help must not wait for. asyncio is here for its ~10 ms: a third of what the CLI's own
# imports may cost within the target (3x `import numpy`); the rich modules are those of
# typer's rich help (markdown) and of the commands' output (tables, progress bars).
HEAVY = (
    "numpy",
    "pandas",
    "scipy",
    "numba",
    "matplotlib",
    "pyarrow",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "aiohttp",
    "kopf",
    "kubernetes",
    "prometheus_client",
    "yaml",
    "asyncio",
    "markdown_it",
    "rich.markdown",
    "rich.table",
    "rich.progress",
    "rich.live",
)
# `import carbonscaler` (the public API) loads its names on first use.
HEAVY_FOR_THE_API = ("scipy", "numba", "matplotlib", "pandas", "fastapi")


def _loaded_after(code: str, *args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; the modules it left loaded, and the process."""
    script = f"{code}\nimport json, sys\nprint('\\n' + json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.rstrip().rsplit("\n", 1)[-1])
    return modules, done


def _heavy(modules: list[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(h for h in heavy if any(m == h or m.startswith(h + ".") for m in modules))


def _command_paths() -> list[tuple[str, ...]]:
    """The root and every command and sub-command, as the words that name them."""
    paths: list[tuple[str, ...]] = [()]

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append((*prefix, name))
            walk(sub, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return paths


COMMANDS = _command_paths()


def test_every_command_is_checked() -> None:
    # The walk sees the commands and the groups' sub-commands (guards the walk itself).
    assert {(), ("plan",), ("run",), ("traces", "show"), ("forecast", "evaluate")} <= set(COMMANDS)


def test_importing_the_command_line_loads_no_heavy_module() -> None:
    modules, _ = _loaded_after("import carbonscaler.cli")
    assert _heavy(modules) == []


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "carbonscaler")
def test_help_loads_no_heavy_module(path: tuple[str, ...]) -> None:
    # As the console script does: main() reads sys.argv.
    code = (
        "import sys\n"
        "from carbonscaler.cli import main\n"
        "sys.argv = ['carbonscaler', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code"
    )
    modules, done = _loaded_after(code, *path, "--help")
    assert "Usage:" in done.stdout
    assert "╭" not in done.stdout, "help is plain click help (rich_markup_mode=None)"
    assert _heavy(modules) == [], f"`carbonscaler {' '.join(path)} --help` imports these"


def test_importing_the_package_loads_no_heavy_module() -> None:
    modules, _ = _loaded_after("import carbonscaler; assert carbonscaler.__version__")
    assert _heavy(modules, HEAVY_FOR_THE_API) == []
    modules, _ = _loaded_after("import carbonscaler.planner")
    assert "scipy" not in modules


def _lazy_packages() -> list[Path]:
    return sorted(p for p in SRC.rglob("__init__.py") if "lazy_exports(" in p.read_text())


def _type_checking_imports(path: Path) -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` in a package's __init__."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module
                found.update({alias.name: statement.module for alias in statement.names})
    return found


@pytest.mark.parametrize("path", _lazy_packages(), ids=lambda p: p.parent.name)
def test_lazy_package_gives_the_names_mypy_sees(path: Path) -> None:
    """Each lazily exported name resolves to the object the TYPE_CHECKING import names (what
    mypy and IDEs see), and they are the names of ``__all__``."""
    name = ".".join(["carbonscaler", *path.parent.relative_to(SRC).parts])
    package = importlib.import_module(name)
    static = _type_checking_imports(path)
    assert set(static) == set(package.__all__) - {"__version__"}
    # A submodule of the same name would shadow the export once imported (as
    # `carbonscaler.operator.reconcile` would: that package imports its names eagerly).
    shadowed = [
        a for a in static if (path.parent / f"{a}.py").exists() or (path.parent / a).is_dir()
    ]
    assert shadowed == []
    for attribute, module in static.items():
        assert attribute in dir(package)
        assert getattr(package, attribute) is getattr(importlib.import_module(module), attribute)
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


@pytest.mark.parametrize(("module", "name"), USER_ERRORS)
def test_user_errors_name_real_exceptions(module: str, name: str) -> None:
    error = getattr(importlib.import_module(module), name)
    assert isinstance(error, type) and issubclass(error, Exception)
