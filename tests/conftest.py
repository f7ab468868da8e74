"""Shared fixtures.

The real traces and measured profiles live in the project's shared data folder, not in the
repository: ``$CARBONSCALER_SHARED`` when set, else ``../shared`` beside the repository (it holds
``traces/`` and ``profiles/``). Tests that need it take the ``shared_dir`` fixture, which skips
them with the reason when the folder is absent. Everything that looks for the folder goes
through :func:`shared_root` (benchmarks/_shared.py follows the same rule).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "CARBONSCALER_SHARED"


def shared_root() -> Path:
    """The shared data folder: ``$CARBONSCALER_SHARED``, else ``../shared`` beside the repo.

    It may not exist; :func:`shared_dir` (the fixture) skips when it does not.
    """
    configured = os.environ.get(SHARED_ENV, "").strip()
    return Path(configured).expanduser().resolve() if configured else REPO.parent / "shared"


SHARED = shared_root()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder (holds ``traces/`` and ``profiles/``); skips the test without it."""
    if not (SHARED / "traces").is_dir():
        pytest.skip(
            f"shared data not found: {SHARED / 'traces'} is missing "
            f"(set ${SHARED_ENV} to the folder that holds traces/ and profiles/)"
        )
    return SHARED
