"""The sampling loop: every few seconds, each tracked job's energy and emissions.

One scheduler samples all jobs in rounds. A round takes one ``now`` for every job, so
jobs sampled together share their interval ``[last end, now]``: the carbon feed is asked
once per distinct interval, and each power server once per round however many jobs list
it (each question with its own timeout, so a dead node delays nobody beyond it). All the
round's samples are committed in one transaction; the ledger refuses a sample that does
not continue its job, so a replayed round cannot double count, and after a restart each
job's next interval starts where its last committed sample ended.

A job's power is the sum over its nodes (power servers) and pods (Kepler). What a node
or pod cannot report is estimated — its share of P(k) from the job's profile, or the
stated watts per server — and labelled ``estimated:...``; it is never counted as zero
and never as measured. A job with neither nodes nor pods is estimated throughout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from carbonscaler.accounting.feeds import CarbonUnavailable, IntensityFeed
from carbonscaler.accounting.integrate import IntensitySegment, interval_emissions
from carbonscaler.accounting.ledger import JobRecord, Ledger, LedgerError, SampleRecord
from carbonscaler.accounting.progress import (
    ApiProgress,
    CsvProgress,
    ProgressError,
    ProgressSource,
    RefusedProgress,
    check_progress_path,
)
from carbonscaler.power.client import NodeAnswer, NodeEnergy, PowerServerClient
from carbonscaler.power.kepler import KeplerMeter
from carbonscaler.power.meter import MeterError, ProfileMeter, is_measured
from carbonscaler.profile import ProfileError, ProfileWarning, ScalingProfile, load_profile
from carbonscaler.security.netguard import DestinationPolicy, DestinationRefused

__all__ = [
    "JobExistsError",
    "JobStatus",
    "TrackedJob",
    "Tracker",
    "TrackerConfig",
    "TrackerError",
    "UnknownJobError",
]

log = logging.getLogger("carbonscaler.accounting")

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
POD_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$"
NODE_PATTERN = r"^https?://[A-Za-z0-9._~\[\]:-]+(/[A-Za-z0-9._~/-]*)?$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_POD = re.compile(POD_PATTERN)
_NODE = re.compile(NODE_PATTERN)
MAX_SERVERS = 100_000
_MAX_PROFILE_BYTES = 1 << 20


class TrackerError(ValueError):
    """A request the tracker cannot honour (unknown job, bad registration); says why."""


class UnknownJobError(TrackerError):
    """No tracked job has this id."""


class JobExistsError(TrackerError):
    """A job with this id is already in the ledger."""


@dataclass(frozen=True)
class TrackedJob:
    """A job to account for.

    Args:
        job_id: Unique id (letters, digits, ``._-``; up to 128).
        nodes: Base URLs of the power servers of the nodes the job runs on.
        pods: ``namespace/name`` of the job's pods, read from Kepler.
        servers: Current server count k; default the number of nodes or pods (or 1).
        profile_path: The job's scaling profile CSV; gaps are estimated as P(k).
        watts_per_server: Instead of a profile: a stated draw per server, W.
        progress_path: The job's ``progress.csv``; without it, progress is posted to the API.

    Raises:
        TrackerError: If a field is malformed, or neither a profile nor a per-server
            wattage is given (gaps could not be estimated).
    """

    job_id: str
    nodes: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    servers: int | None = None
    profile_path: str | None = None
    watts_per_server: float | None = None
    progress_path: str | None = None

    def __post_init__(self) -> None:
        if not _JOB_ID.match(self.job_id):
            raise TrackerError(
                f"job id {self.job_id[:40]!r} must be 1-128 letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        for node in self.nodes:
            if not _NODE.match(node):
                raise TrackerError(
                    f"node {node[:80]!r} must be a power server's base URL, e.g. http://node1:8000"
                )
        for pod in self.pods:
            if not _POD.match(pod):
                raise TrackerError(f"pod {pod[:80]!r} must be 'namespace/name' (lower case)")
        if len(set(self.nodes)) != len(self.nodes) or len(set(self.pods)) != len(self.pods):
            raise TrackerError("a node or pod is listed twice; it would be counted twice")
        if self.servers is not None and not 0 <= self.servers <= MAX_SERVERS:
            raise TrackerError(f"servers must be 0..{MAX_SERVERS}, not {self.servers}")
        if self.profile_path is None and self.watts_per_server is None:
            raise TrackerError(
                "give profile_path (the job's scaling profile) or watts_per_server, so that"
                " power no node reports can be estimated rather than counted as zero"
            )
        if self.watts_per_server is not None and not (
            math.isfinite(self.watts_per_server) and 0 < self.watts_per_server <= 1e6
        ):
            raise TrackerError(f"watts_per_server must be in (0, 1e6], not {self.watts_per_server}")

    @property
    def initial_servers(self) -> int:
        """``servers`` or its default."""
        if self.servers is not None:
            return self.servers
        return max(1, len(self.nodes) + len(self.pods))

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly view (lists for tuples)."""
        data = asdict(self)
        data["nodes"], data["pods"] = list(self.nodes), list(self.pods)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackedJob:
        """Inverse of :meth:`to_json`.

        Raises:
            TrackerError: If the data is not a valid registration.
        """
        try:
            return cls(
                job_id=str(data["job_id"]),
                nodes=tuple(data.get("nodes") or ()),
                pods=tuple(data.get("pods") or ()),
                servers=data.get("servers"),
                profile_path=data.get("profile_path"),
                watts_per_server=data.get("watts_per_server"),
                progress_path=data.get("progress_path"),
            )
        except (KeyError, TypeError) as exc:
            raise TrackerError(f"not a job registration: {exc}") from None


@dataclass
class TrackerConfig:
    """How the tracker samples.

    Args:
        sample_interval_s: Seconds between rounds.
        request_timeout_s: Timeout of each power-server or Prometheus request.
        job_timeout_s: Longest one job's sampling may take in a round.
        kepler_url: Prometheus server scraping Kepler, needed for jobs with pods.
        kepler_window: ``rate`` window for Kepler counters.
        allowed_hosts: If set, node URLs must point to one of these hosts (the API makes
            the service send requests to the URLs it is given).
        node_policy: Where node requests may go: never link-local or cloud-metadata
            addresses; only the ``allow`` networks when given (``--allow-node-net``).
            Every request connects to the address just checked.
        progress_root: The folder progress files must be in (``--progress-root``); None
            refuses every ``progress_path`` (jobs post their progress instead).

    Raises:
        ValueError: If a number is not positive.
    """

    sample_interval_s: float = 5.0
    request_timeout_s: float = 2.0
    job_timeout_s: float = 10.0
    kepler_url: str | None = None
    kepler_window: str = "1m"
    allowed_hosts: frozenset[str] | None = None
    node_policy: DestinationPolicy = field(
        default_factory=lambda: DestinationPolicy(what="node URL")
    )
    progress_root: Path | None = None

    def __post_init__(self) -> None:
        for name in ("sample_interval_s", "request_timeout_s", "job_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")


def _read_profile(job_id: str, path: str) -> ScalingProfile:
    """A job's profile, read as a file a caller named: a regular file of bounded size
    (never a FIFO or a device), and errors that do not quote it.

    Raises:
        TrackerError: If it cannot be read or is not a profile.
    """
    where = f"job {job_id}: cannot use its profile {path}"
    try:
        info = os.stat(path)
    except OSError as exc:
        raise TrackerError(f"{where}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TrackerError(f"{where}: not a regular file")
    if info.st_size > _MAX_PROFILE_BYTES:
        raise TrackerError(f"{where}: larger than {_MAX_PROFILE_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            # Concavity matters to the planner, not to a power estimate.
            warnings.simplefilter("ignore", ProfileWarning)
            return load_profile(path)
    except OSError as exc:
        raise TrackerError(f"{where}: {exc.strerror or exc}") from None
    except ProfileError:
        # Not the parser's message: it quotes the file, which may be anything readable here.
        raise TrackerError(
            f"{where}: not a scaling profile (a CSV with the header nodes,throughput,power and"
            " one row per server count)"
        ) from None


@dataclass
class JobStatus:
    """A job as the tracker holds it: registration, totals, what went wrong last."""

    spec: TrackedJob
    record: JobRecord
    profile: ScalingProfile | None
    progress: ProgressSource
    kepler: dict[str, KeplerMeter] = field(default_factory=dict)
    last_error: str | None = None
    last_power_source: str | None = None
    last_note: str = ""

    @property
    def servers(self) -> int:
        """Current server count."""
        return self.record.servers


@dataclass(frozen=True)
class _Power:
    energy_j: float
    measured_j: float
    source: str
    note: str


class Tracker:
    """Samples every active job's power and carbon into the ledger.

    Args:
        ledger: Where samples and totals go; jobs in it are resumed.
        feed: Carbon intensity over intervals.
        config: Sampling settings.
        clock: Wall time in Unix seconds, replaceable in tests.
        power_client: Client for the power servers; default a new one.

    Raises:
        TrackerError: If a stored job's profile can no longer be read.
    """

    def __init__(
        self,
        ledger: Ledger,
        feed: IntensityFeed,
        config: TrackerConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        power_client: PowerServerClient | None = None,
    ) -> None:
        self.ledger = ledger
        self.feed = feed
        self.config = config if config is not None else TrackerConfig()
        self.clock = clock
        self._owns_client = power_client is None
        self.power = (
            power_client
            if power_client is not None
            else PowerServerClient(
                timeout_s=self.config.request_timeout_s, policy=self.config.node_policy
            )
        )
        self.jobs: dict[str, JobStatus] = {}
        self.rounds = 0
        self.last_round_s: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._node_asks: dict[tuple[str, float, float], asyncio.Future[NodeAnswer]] = {}
        for record in ledger.jobs(active_only=True):
            spec = TrackedJob.from_json(record.spec)
            try:
                self.jobs[record.job_id] = self._status(spec, record)
            except TrackerError as exc:
                # A restart must resume every job: keep accounting with what is left (the
                # last known power stands in for a lost profile) and show why.
                log.error("job %s resumes degraded: %s", record.job_id, exc)
                status = JobStatus(spec, record, None, ApiProgress(record.progress_pct))
                status.last_error = str(exc)
                self.jobs[record.job_id] = status

    # -- registration ---------------------------------------------------------------------

    def check_nodes(self, nodes: Iterable[str]) -> None:
        """Refuse node URLs off ``allowed_hosts`` or refused by ``node_policy`` (what it
        can tell without resolving; requests resolve, check and pin again).

        Raises:
            TrackerError: If a node URL is refused, saying why.
        """
        allowed = self.config.allowed_hosts
        for node in nodes:
            try:  # first: it also refuses what does not parse as a URL
                self.config.node_policy.check_url(node)
            except DestinationRefused as exc:
                raise TrackerError(str(exc)) from None
            host = urlsplit(node).hostname
            if allowed is not None and host not in allowed:
                raise TrackerError(
                    f"node {node[:80]!r}: host {host!r} is not allowed here; nodes must be on"
                    f" {', '.join(sorted(allowed))}"
                )

    def _status(self, spec: TrackedJob, record: JobRecord) -> JobStatus:
        profile = None
        if spec.profile_path is not None:
            profile = _read_profile(spec.job_id, spec.profile_path)
        progress: ProgressSource
        if spec.progress_path is None:
            progress = ApiProgress(record.progress_pct)
        elif self.config.progress_root is None:  # a job resumed after a restart without it
            progress = RefusedProgress(
                f"{spec.progress_path}: not read, the service has no --progress-root"
            )
        else:
            progress = CsvProgress(spec.progress_path, root=self.config.progress_root)
        status = JobStatus(spec, record, profile, progress)
        if spec.pods:
            if self.config.kepler_url is None:
                raise TrackerError(
                    f"job {spec.job_id} lists pods, but no Prometheus is configured for Kepler;"
                    " start the accounting with --kepler-url"
                )
            status.kepler = {
                pod: KeplerMeter(
                    self.config.kepler_url,
                    pod=pod,
                    window=self.config.kepler_window,
                    timeout_s=self.config.request_timeout_s,
                )
                for pod in spec.pods
            }
        return status

    def register(self, spec: TrackedJob) -> JobStatus:
        """Start accounting a job from now.

        Raises:
            TrackerError: If the id is taken, the profile unreadable, or pods lack Kepler.
        """
        if spec.progress_path is not None:
            if not Path(spec.progress_path).is_absolute():
                raise TrackerError(f"progress_path must be absolute, not {spec.progress_path!r}")
            if self.config.progress_root is None:
                raise TrackerError(
                    "progress_path is refused: this service reads progress files only under a"
                    " folder given with --progress-root; post progress to"
                    " /v1/jobs/{id}/progress instead"
                )
            try:
                check_progress_path(spec.progress_path, self.config.progress_root)
            except ProgressError as exc:
                raise TrackerError(str(exc)) from None
        self.check_nodes(spec.nodes)
        if self.ledger.job(spec.job_id) is not None:
            raise JobExistsError(f"job {spec.job_id!r} exists; choose another id")
        probe = JobRecord(
            spec.job_id, spec.to_json(), 0, True, spec.initial_servers,
            None, None, None, 0, 0, 0, 0, 0, 0, None, None,
        )  # fmt: skip
        status = self._status(spec, probe)
        if status.profile is not None and spec.initial_servers > status.profile.max_servers:
            raise TrackerError(
                f"job {spec.job_id}: {spec.initial_servers} servers, but its profile covers"
                f" 1..{status.profile.max_servers}"
            )
        try:
            status.record = self.ledger.add_job(
                spec.job_id, spec.to_json(), servers=spec.initial_servers, start_s=self.clock()
            )
        except LedgerError as exc:
            raise JobExistsError(str(exc)) from None
        self.jobs[spec.job_id] = status
        log.info(
            "tracking job %s on %d nodes, %d pods", spec.job_id, len(spec.nodes), len(spec.pods)
        )
        return status

    def get(self, job_id: str) -> JobStatus:
        """The tracked job.

        Raises:
            TrackerError: If no active job has this id.
        """
        status = self.jobs.get(job_id)
        if status is None:
            raise UnknownJobError(f"no tracked job {job_id!r}; list them at GET /v1/jobs")
        return status

    async def update(
        self,
        job_id: str,
        *,
        servers: int | None = None,
        nodes: list[str] | None = None,
        pods: list[str] | None = None,
    ) -> JobStatus:
        """Record a rescale: new server count and/or nodes and pods, from now on.

        The interval up to now is accounted first, at the old count and on the old nodes.

        Raises:
            TrackerError: If the job is unknown or the change is invalid.
        """
        self.get(job_id)
        await self.sample_round(only=[job_id])
        status = self.get(job_id)
        data = status.spec.to_json()
        if nodes is not None:
            data["nodes"] = nodes
        if pods is not None:
            data["pods"] = pods
        if servers is not None:
            data["servers"] = servers
        new_spec = TrackedJob.from_json(data)
        self.check_nodes(new_spec.nodes)
        if status.profile is not None and new_spec.initial_servers > status.profile.max_servers:
            raise TrackerError(
                f"{new_spec.initial_servers} servers is beyond the job's profile"
                f" (1..{status.profile.max_servers})"
            )
        new_status = self._status(new_spec, status.record)
        self.ledger.update_job(job_id, servers=new_spec.initial_servers, spec=new_spec.to_json())
        record = self.ledger.job(job_id)
        assert record is not None
        new_status.record = record
        new_status.progress = status.progress
        for meter in status.kepler.values():
            meter.close()
        self.jobs[job_id] = new_status
        return new_status

    async def stop_tracking(self, job_id: str) -> None:
        """Account a job up to now, then stop sampling it; its records stay in the ledger.

        Raises:
            TrackerError: If the job is unknown.
        """
        self.get(job_id)
        await self.sample_round(only=[job_id])
        status = self.get(job_id)
        self.ledger.update_job(job_id, active=False)
        for meter in status.kepler.values():
            meter.close()
        del self.jobs[job_id]

    def post_progress(self, job_id: str, percent: object) -> float:
        """Progress posted for a job without a progress file.

        Raises:
            TrackerError: If the job is unknown or reads its progress from a file.
            ProgressError: If the value is not a percentage.
        """
        status = self.get(job_id)
        if not isinstance(status.progress, ApiProgress):
            raise TrackerError(
                f"job {job_id} reads progress from {status.spec.progress_path}; post to a job"
                " registered without progress_path"
            )
        value = status.progress.post(percent)
        self.ledger.set_progress(job_id, value, self.clock())
        status.record = self._reload(job_id)
        return value

    def _reload(self, job_id: str) -> JobRecord:
        record = self.ledger.job(job_id)
        if record is None:
            raise UnknownJobError(f"no job {job_id!r}")
        return record

    # -- sampling -------------------------------------------------------------------------

    def estimate_w(self, status: JobStatus) -> tuple[float, str]:
        """The job's estimated power at its current server count, and the label.

        Raises:
            TrackerError: If there is nothing to estimate from (a lost profile and no
                sample yet); the job waits, its interval growing, until there is.
        """
        k = status.servers
        if status.profile is not None:
            meter = ProfileMeter(status.profile, min(k, status.profile.max_servers))
            return meter.watts(), meter.source
        if status.spec.watts_per_server is not None:
            return status.spec.watts_per_server * k, "estimated:nominal"
        if status.record.last_watts is not None:
            return status.record.last_watts, "estimated:last-known"
        raise TrackerError(f"job {status.spec.job_id}: no profile and no power known yet")

    async def _node(
        self, node: str, start_s: float, end_s: float, estimate_w: float, source: str
    ) -> NodeEnergy:
        """One node's energy, asked once per round however many jobs list the node."""
        key = (node, start_s, end_s)
        task = self._node_asks.get(key)
        if task is None:
            task = asyncio.ensure_future(self.power.energy(node, start_s, end_s))
            self._node_asks[key] = task
        # Shielded: a job that times out must not cancel the answer other jobs await.
        return await self.power.energy_or_estimate(
            node, start_s, end_s, estimate_w, source, answer=asyncio.shield(task)
        )

    async def _power(self, status: JobStatus, start_s: float, end_s: float) -> _Power:
        spec = status.spec
        interval_s = end_s - start_s
        total_w, est_source = self.estimate_w(status)
        units = len(spec.nodes) + len(spec.pods)
        if units == 0:
            return _Power(total_w * interval_s, 0.0, est_source, "no nodes or pods: estimated")
        share_w = total_w / units
        parts: list[NodeEnergy] = list(
            await asyncio.gather(
                *(self._node(node, start_s, end_s, share_w, est_source) for node in spec.nodes)
            )
        )
        for pod in spec.pods:
            meter = status.kepler.get(pod)
            if meter is None:
                note = f"pod {pod}: no Kepler configured (--kepler-url)"
                parts.append(NodeEnergy(pod, share_w * interval_s, 0.0, est_source, note))
                continue
            try:
                reading = await asyncio.to_thread(meter.read)
                energy = reading.watts * interval_s
                parts.append(NodeEnergy(pod, energy, energy, reading.source))
            except MeterError as exc:
                parts.append(NodeEnergy(pod, share_w * interval_s, 0.0, est_source, str(exc)))
        energy_j = sum(p.energy_j for p in parts)
        measured_j = sum(p.measured_j for p in parts)
        by_source: dict[str, float] = {}
        for p in parts:
            by_source[p.source] = by_source.get(p.source, 0.0) + p.energy_j
        sources = sorted(by_source, key=lambda s: (not is_measured(s), s))
        note = "; ".join(p.note for p in parts if p.note)
        return _Power(energy_j, measured_j, "+".join(sources), note)

    def _progress(self, status: JobStatus, now_s: float) -> float | None:
        """The percent done read now (committed with the sample), or None."""
        try:
            return status.progress.read()
        except ProgressError as exc:
            if status.record.progress_error != str(exc):
                log.warning("job %s: %s", status.spec.job_id, exc)
                self.ledger.set_progress(status.spec.job_id, None, now_s, str(exc))
            return None

    async def _sample(
        self, status: JobStatus, end_s: float, segments: list[IntensitySegment]
    ) -> SampleRecord:
        record = status.record
        start_s = record.last_end_s
        power = await self._power(status, start_s, end_s)
        carbon = interval_emissions(start_s, end_s, power.energy_j, segments)
        status.last_power_source, status.last_note = power.source, power.note
        return SampleRecord(
            job_id=record.job_id,
            seq=record.samples + 1,
            start_s=start_s,
            end_s=end_s,
            watts=power.energy_j / (end_s - start_s),
            energy_j=power.energy_j,
            measured_j=power.measured_j,
            emissions_g=carbon.emissions_g,
            intensity_g_per_kwh=carbon.intensity_g_per_kwh,
            carbon_stale=carbon.stale,
            servers=status.servers,
            progress_pct=self._progress(status, end_s),
            power_source=power.source,
            carbon_source=self.feed.source,
            note=power.note,
        )

    async def sample_round(
        self, now_s: float | None = None, *, only: Iterable[str] | None = None
    ) -> list[SampleRecord]:
        """Sample every active job (or the ``only`` ones) up to ``now_s`` and commit.

        Jobs whose interval is empty, or for which no carbon intensity is known yet, wait
        for the next round (their interval grows; nothing is lost). A job sampled twice at
        once (a rescale during a round) is safe: the ledger keeps only the first sample
        that continues it.

        Args:
            now_s: End of the intervals, Unix seconds; default the clock.
            only: Job ids to sample; default all active jobs.

        Returns:
            The samples committed.
        """
        end_s = self.clock() if now_s is None else now_s
        chosen = self.jobs.values() if only is None else [self.jobs[j] for j in only]
        due = [s for s in chosen if end_s > s.record.last_end_s]
        segments: dict[float, list[IntensitySegment]] = {}
        for start_s in {s.record.last_end_s for s in due}:
            try:
                segments[start_s] = await asyncio.to_thread(self.feed.segments, start_s, end_s)
            except CarbonUnavailable as exc:
                log.warning("waiting for carbon intensity: %s", exc)
        ready = [s for s in due if s.record.last_end_s in segments]
        results = await asyncio.gather(
            *(
                asyncio.wait_for(
                    self._sample(s, end_s, segments[s.record.last_end_s]),
                    self.config.job_timeout_s,
                )
                for s in ready
            ),
            return_exceptions=True,
        )
        samples: list[SampleRecord] = []
        for status, result in zip(ready, results, strict=True):
            if isinstance(result, SampleRecord):
                samples.append(result)
                status.last_error = None
            elif isinstance(result, Exception):
                status.last_error = f"{type(result).__name__}: {result}"
                log.error("job %s not sampled: %s", status.spec.job_id, status.last_error)
            else:
                raise result
        self._node_asks.clear()
        if samples:
            await asyncio.to_thread(self.ledger.record, samples)
        for status in ready:
            status.record = self._reload(status.spec.job_id)
        if only is None:
            self.rounds += 1
            self.last_round_s = end_s
        return samples

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample forever, one round per interval (a slow round delays the next one)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.config.sample_interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self.sample_round()
            except Exception:  # keep accounting: one bad round must not end the service
                log.exception("sampling round failed")
            next_at = max(next_at, loop.time() - self.config.sample_interval_s)

    async def start(self) -> None:
        """Start the sampling loop as a task."""
        self._task = asyncio.create_task(self.run(), name="accounting-rounds")

    async def stop(self) -> None:
        """Stop the loop, close the clients and meters (the ledger stays open)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._owns_client:
            await self.power.aclose()
        for status in self.jobs.values():
            for meter in status.kepler.values():
                meter.close()
