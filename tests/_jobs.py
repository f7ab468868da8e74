"""A job spec on the shared data, for tests that run the controller on a virtual clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carbonscaler.control import JobSpec

NL = "electricitymaps-fedstale/NL_2022_hourly.csv"


def spec_for(shared: Path, tmp_path: Path, **over: Any) -> JobSpec:
    """The N-body 10k profile (1..7 workers), 24 h at one, deadline 36 h, on NL 2022 from
    1 March; ``over`` replaces fields (a dict value is merged into the field's dict)."""
    data: dict[str, Any] = {
        "name": "sim",
        "workload": {"command": "true"},
        "profile": str(shared / "profiles" / "nbody10k.csv"),
        "minReplicas": 1,
        "maxReplicas": 7,
        "length_hours": 24,
        "slack": 1.5,
        "carbon": {"trace": str(shared / "traces" / NL), "start": "2022-03-01T00:00Z"},
        "checkpoint_dir": str(tmp_path / "run"),
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return JobSpec.model_validate(data)
