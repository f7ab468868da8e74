"""What the dashboard offers: carbon traces and scaling profiles, by name only.

A query names a trace or a profile; it never gives a path. Traces are the offline dataset's
zone-years (``DE:2020``) and the CSV files found in the ``--traces`` folders (named by file
stem, e.g. ``NL_2022_hourly``; by their path in the folder where two stems coincide). Profiles
are parametric shapes (``amdahl:0.05,servers=8,power=200``), the CSV files found in the
``--profiles`` folders (by stem), or a CSV the user uploaded, carried in the query itself
(``csv:1,1,60;2,1.9,120``) so that a link reproduces it. A name that is none of these is
refused: no other file on the server can be reached from a query.

Traces are read as ``carbonscaler advise`` reads them with its defaults
(:func:`carbonscaler.cli._common.open_trace`: a file with gaps of up to
:data:`~carbonscaler.trace.DEFAULT_MAX_GAP` values filled and noted, naive times taken as UTC
and noted; the dataset with every repair noted) and kept in a small cache keyed by the file's
size and modification time.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carbonscaler.profile import ScalingProfile
    from carbonscaler.trace import CarbonTrace

__all__ = [
    "INLINE_PREFIX",
    "MAX_INLINE_PROFILE_CHARS",
    "PROFILE_PRESETS",
    "Catalog",
    "ProfileChoice",
    "TraceChoice",
    "UnknownNameError",
    "inline_profile",
]

DATASET_GROUP = "offline dataset (ENTSO-E)"
INLINE_PREFIX = "csv:"
"""An uploaded profile carried in the query: ``csv:`` then ``nodes,throughput,power`` rows
joined by ``;``."""
MAX_INLINE_PROFILE_CHARS = 4096
"""Longest inline profile: with URL encoding it keeps a link well under the 16 KiB that
servers accept in a request line (about 150 server counts)."""

PROFILE_PRESETS: tuple[tuple[str, str], ...] = (
    ("amdahl:0.05", "Amdahl, 5 % serial, 60 W per server"),
    ("linear", "linear scaling, 60 W per server"),
    ("amdahl:0.2", "Amdahl, 20 % serial (scales poorly), 60 W per server"),
    ("powerlaw:0.8", "power law k^0.8, 60 W per server"),
    ("amdahl:0.05,power=210", "Amdahl, 5 % serial, 210 W per server (GPU)"),
)
"""Parametric shapes offered in the form (any other shape can be typed)."""

_TRACE_CACHE_SIZE = 12  # year-long hourly traces are ~100 kB each


class UnknownNameError(LookupError):
    """A query named a trace, profile or run the dashboard does not offer."""


@dataclass(frozen=True)
class TraceChoice:
    """A trace the dashboard offers."""

    name: str
    """What a query says: ``NL_2022_hourly`` or ``DE:2020``."""
    group: str
    """Where it comes from: the ``--traces`` folder's name, or the offline dataset."""
    path: Path | None = None
    """The file, or None for the offline dataset."""
    zone: str | None = None
    year: int | None = None


@dataclass(frozen=True)
class ProfileChoice:
    """A profile file the dashboard offers."""

    name: str
    path: Path


def _csv_files(folder: Path) -> list[tuple[str, Path]]:
    """``(path in the folder without .csv, file)`` of every CSV file under ``folder``,
    leaving out links that lead outside it (a query must not reach beyond the folder)."""
    root = folder.resolve()
    found = []
    for file in sorted(root.rglob("*.csv")):
        real = file.resolve()
        if real.is_file() and real.is_relative_to(root):
            found.append((file.relative_to(root).with_suffix("").as_posix(), real))
    return found


def _by_stem(files: list[tuple[str, Path, str]]) -> dict[str, tuple[Path, str]]:
    """Files named by stem; where stems coincide, those files by their relative path."""
    stems: dict[str, int] = {}
    for relative, _, _ in files:
        stem = relative.rsplit("/", 1)[-1]
        stems[stem] = stems.get(stem, 0) + 1
    named: dict[str, tuple[Path, str]] = {}
    for relative, path, group in files:
        stem = relative.rsplit("/", 1)[-1]
        named[stem if stems[stem] == 1 else relative] = (path, group)
    return named


def _number(value: float) -> str:
    """``value`` exactly and briefly: ``60`` for 60.0, ``1.9`` for 1.9."""
    text = repr(float(value))
    return text.removesuffix(".0")


def inline_profile(profile: ScalingProfile) -> str:
    """The query form of a profile (:data:`INLINE_PREFIX`): its rows, exactly."""
    rows = [
        f"{k},{_number(profile.throughput[k])},{_number(profile.power_w[k])}"
        for k in range(1, profile.max_servers + 1)
    ]
    return INLINE_PREFIX + ";".join(rows)


class Catalog:
    """The traces and profiles a dashboard offers, and the only way to load them.

    Args:
        trace_folders: folders searched (recursively) for trace CSV files.
        profile_folders: folders searched for profile CSV files.
        dataset: offer the offline dataset's zone-years.
    """

    def __init__(
        self,
        trace_folders: Sequence[Path] = (),
        profile_folders: Sequence[Path] = (),
        *,
        dataset: bool = True,
    ) -> None:
        self.trace_folders = [Path(f) for f in trace_folders]
        self.profile_folders = [Path(f) for f in profile_folders]
        self.dataset = dataset
        self._lock = threading.Lock()
        self._traces: OrderedDict[tuple[str, int, int], CarbonTrace] = OrderedDict()

    # -- traces ----------------------------------------------------------------------------

    def traces(self) -> list[TraceChoice]:
        """Every trace offered: the files first (by folder), then the dataset's zone-years.

        The folders are read again on every call, so files added while the dashboard runs
        are offered at once.
        """
        files = [
            (relative, path, folder.name or str(folder))
            for folder in self.trace_folders
            if folder.is_dir()
            for relative, path in _csv_files(folder)
        ]
        choices = [
            TraceChoice(name, group, path=path) for name, (path, group) in _by_stem(files).items()
        ]
        choices.sort(key=lambda c: (c.group, c.name))
        if self.dataset:
            from carbonscaler import datasets

            if datasets.available():
                choices += [
                    TraceChoice(f"{e.zone}:{e.year}", DATASET_GROUP, zone=e.zone, year=e.year)
                    for e in datasets.catalogue()
                ]
        return choices

    def trace(self, name: str) -> TraceChoice:
        """The trace called ``name``.

        Raises:
            UnknownNameError: if no trace has that name (the message lists a few that do).
        """
        choices = self.traces()
        for choice in choices:
            if choice.name == name:
                return choice
        shown = ", ".join(c.name for c in choices[:8])
        more = f" and {len(choices) - 8} more" if len(choices) > 8 else ""
        raise UnknownNameError(
            f"unknown trace {name!r}; the dashboard offers {shown}{more}"
            if choices
            else f"unknown trace {name!r}: no traces are offered (start with --traces DIR)"
        )

    def default_trace(self) -> str | None:
        """The trace a fresh page starts with: the first file, else the dataset's latest DE
        year, else the first offered."""
        choices = self.traces()
        files = [c for c in choices if c.path is not None]
        if files:
            return files[0].name
        german = [c for c in choices if c.zone == "DE"]
        if german:
            return german[-1].name
        return choices[0].name if choices else None

    def load_trace(self, name: str) -> CarbonTrace:
        """The trace called ``name``, read as ``carbonscaler advise`` reads it.

        What loading repaired or assumed is in the trace's ``notes``.

        Raises:
            UnknownNameError: if no trace has that name.
            TraceError, DatasetError: if it cannot be read.
        """
        from carbonscaler import datasets
        from carbonscaler.trace import DEFAULT_MAX_GAP, load_trace

        choice = self.trace(name)
        if choice.path is None:
            stat_key = (name, 0, 0)
        else:
            stat = choice.path.stat()
            stat_key = (str(choice.path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._traces.get(stat_key)
            if cached is not None:
                self._traces.move_to_end(stat_key)
                return cached
        with warnings.catch_warnings():
            # The notes stay in the trace, and the page shows them.
            warnings.simplefilter("ignore")
            # open_trace's defaults, called directly: the command line sits above this package.
            if choice.path is None:
                assert choice.zone is not None
                trace = datasets.load(choice.zone, choice.year)
            else:
                trace = load_trace(choice.path, max_gap=DEFAULT_MAX_GAP)
        with self._lock:
            self._traces[stat_key] = trace
            while len(self._traces) > _TRACE_CACHE_SIZE:
                self._traces.popitem(last=False)
        return trace

    # -- profiles --------------------------------------------------------------------------

    def profiles(self) -> list[ProfileChoice]:
        """Every profile file offered, by stem (by path where stems coincide)."""
        files = [
            (relative, path, folder.name)
            for folder in self.profile_folders
            if folder.is_dir()
            for relative, path in _csv_files(folder)
        ]
        return sorted(
            (ProfileChoice(name, path) for name, (path, _) in _by_stem(files).items()),
            key=lambda c: c.name,
        )

    def load_profile(self, spec: str, *, default_servers: int) -> ScalingProfile:
        """The profile a query names: a profile file offered, an inline upload, or a
        parametric shape. Never a path.

        Args:
            spec: the query's ``profile``.
            default_servers: servers of a parametric shape that names none (the form's max).

        Raises:
            ProfileError: if the spec is none of the three, or malformed.
        """
        from carbonscaler.profile import (
            ProfileError,
            load_profile,
            parse_parametric_spec,
            parse_profile_csv,
        )

        spec = spec.strip()
        for choice in self.profiles():
            if choice.name == spec:
                return load_profile(choice.path)
        if spec.startswith(INLINE_PREFIX):
            if len(spec) > MAX_INLINE_PROFILE_CHARS:
                raise ProfileError(
                    f"the uploaded profile is {len(spec):,} characters in the link, more than"
                    f" the {MAX_INLINE_PROFILE_CHARS:,} a link can carry"
                )
            rows = spec[len(INLINE_PREFIX) :].replace(";", "\n")
            return parse_profile_csv(
                f"nodes,throughput,power\n{rows}\n", name="uploaded", where="uploaded profile"
            )
        if "/" in spec or "\\" in spec or spec.endswith(".csv"):
            offered = ", ".join(c.name for c in self.profiles()) or "none"
            raise ProfileError(
                f"profile {spec!r} is not offered: give a shape such as amdahl:0.05, upload a"
                f" CSV, or name a profile file offered (--profiles): {offered}"
            )
        return parse_parametric_spec(spec, default_servers=default_servers)
