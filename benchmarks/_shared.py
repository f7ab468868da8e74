"""Where the benchmarks find the project's shared data (real traces and measured profiles).

``$CARBONSCALER_SHARED`` when set, else ``../shared`` beside the repository: the folder that
holds ``traces/`` and ``profiles/``. The tests use the same rule (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared data folder (it may not exist: callers check what they need)."""
    configured = os.environ.get("CARBONSCALER_SHARED", "").strip()
    return Path(configured).expanduser().resolve() if configured else REPO.parent / "shared"
