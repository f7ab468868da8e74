"""A TTL cache in memory and on disk, and a provider wrapper that uses it.

Entries are JSON. The disk layer keeps one file per key, written to a temporary file in the
same folder and renamed over the old one (``os.replace`` is atomic), so a crash leaves the
old entry or the new one, never half of either; unreadable files count as misses. The disk
layer lets a restarted process answer from what it had fetched, and it is where a
:class:`~carbonscaler.providers.chain.FallbackChain` finds its last known values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from carbonscaler.providers.base import (
    CarbonProvider,
    Forecast,
    IntensityReading,
    IntensitySeries,
    to_utc,
)

__all__ = ["CacheEntry", "CachedProvider", "TTLCache"]

_PRUNE_EVERY = 256  # disk writes between sweeps of expired files


@dataclass(frozen=True)
class CacheEntry:
    """A cached JSON value and when it was stored and expires (Unix seconds)."""

    value: Any
    stored_at: float
    expires_at: float

    def fresh(self, now: float) -> bool:
        """Whether the entry has not expired at ``now``."""
        return now < self.expires_at


class TTLCache:
    """Key → JSON value with a time to live, in memory and optionally on disk.

    Args:
        directory: Folder for the disk layer (created if missing); None keeps memory only.
        max_entries: Memory layer size; the least recently used entries are evicted first.
        clock: Unix time source, replaceable in tests.

    Thread-safe: the carbon service calls providers from worker threads.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._clock = clock
        self._memory: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._puts = 0

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if present and not expired (counts a hit or a miss)."""
        entry = self.get_any(key)
        if entry is not None and entry.fresh(self._clock()):
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def get_any(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` whatever its age, or None."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
                return entry
        entry = self._read(key)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def put(self, key: str, value: Any, ttl_s: float) -> None:
        """Store a JSON-serialisable ``value`` for ``ttl_s`` seconds (``inf`` = forever).

        Raises:
            TypeError, ValueError: If ``value`` is not JSON-serialisable.
        """
        now = self._clock()
        entry = CacheEntry(value=value, stored_at=now, expires_at=now + ttl_s)
        if self.directory is not None:
            self._write(key, entry)
            self._puts += 1
            if self._puts % _PRUNE_EVERY == 0:
                self.prune()
        self._remember(key, entry)

    def prune(self) -> int:
        """Delete expired entries from disk (keys change with time windows); returns how many."""
        if self.directory is None:
            return 0
        now, removed = self._clock(), 0
        for path in self.directory.glob("*.json"):
            try:
                expires = json.loads(path.read_text(encoding="utf-8"))["expires_at"]
                if expires is not None and float(expires) <= now:
                    path.unlink()
                    removed += 1
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return removed

    def _remember(self, key: str, entry: CacheEntry) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def _write(self, key: str, entry: CacheEntry) -> None:
        assert self.directory is not None
        expires = entry.expires_at if math.isfinite(entry.expires_at) else None
        payload = {"key": key, "stored_at": entry.stored_at, "expires_at": expires}
        payload["value"] = entry.value
        text = json.dumps(payload, allow_nan=False)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read(self, key: str) -> CacheEntry | None:
        if self.directory is None:
            return None
        try:
            payload = json.loads(self._path(key).read_text(encoding="utf-8"))
            if payload["key"] != key:  # a hash prefix collision: not our entry
                return None
            expires = payload["expires_at"]
            return CacheEntry(
                value=payload["value"],
                stored_at=float(payload["stored_at"]),
                expires_at=math.inf if expires is None else float(expires),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


class CachedProvider(CarbonProvider):
    """A provider whose answers are cached for a time to live per kind of call.

    A fresh cache hit is returned as stored (with its ``stale`` flag); a miss asks the
    wrapped provider and stores the answer. Errors are not cached: they propagate, so a
    :class:`~carbonscaler.providers.chain.FallbackChain` around this can fall back.

    Args:
        provider: The provider to cache.
        cache: Default: a memory-only :class:`TTLCache`.
        current_ttl_s: TTL of current readings.
        forecast_ttl_s: TTL of forecasts.
        history_ttl_s: TTL of history windows.
        zones_ttl_s: TTL of the zone list.
    """

    def __init__(
        self,
        provider: CarbonProvider,
        cache: TTLCache | None = None,
        *,
        current_ttl_s: float = 300.0,
        forecast_ttl_s: float = 900.0,
        history_ttl_s: float = 3600.0,
        zones_ttl_s: float = 86400.0,
    ) -> None:
        super().__init__(provider.zone)
        self.inner = provider
        self.name = provider.name
        self.step_s = provider.step_s
        self.cache = cache if cache is not None else TTLCache()
        self.current_ttl_s = current_ttl_s
        self.forecast_ttl_s = forecast_ttl_s
        self.history_ttl_s = history_ttl_s
        self.zones_ttl_s = zones_ttl_s

    def _key(self, *parts: object) -> str:
        return "|".join([self.inner.name, *(str(p) for p in parts)])

    def current(self, zone: str | None = None) -> IntensityReading:
        key = self._key("current", self._zone(zone))
        entry = self.cache.get(key)
        if entry is not None:
            return IntensityReading.from_json(entry.value)
        reading = self.inner.current(zone)
        self.cache.put(key, reading.to_json(), self.current_ttl_s)
        return reading

    def history(self, start: datetime, end: datetime, zone: str | None = None) -> IntensitySeries:
        key = self._key(
            "history", self._zone(zone), to_utc(start).isoformat(), to_utc(end).isoformat()
        )
        entry = self.cache.get(key)
        if entry is not None:
            return IntensitySeries.from_json(entry.value)
        series = self.inner.history(start, end, zone)
        self.cache.put(key, series.to_json(), self.history_ttl_s)
        return series

    def forecast(self, horizon_slots: int, zone: str | None = None) -> Forecast:
        key = self._key("forecast", self._zone(zone), horizon_slots)
        entry = self.cache.get(key)
        if entry is not None:
            return Forecast.from_json(entry.value)
        forecast = self.inner.forecast(horizon_slots, zone)
        self.cache.put(key, forecast.to_json(), self.forecast_ttl_s)
        return forecast

    def zones(self) -> list[str]:
        key = self._key("zones")
        entry = self.cache.get(key)
        if entry is not None:
            return [str(z) for z in entry.value]
        zones = self.inner.zones()
        self.cache.put(key, zones, self.zones_ttl_s)
        return zones

    def close(self) -> None:
        self.inner.close()
