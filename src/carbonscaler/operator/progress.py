"""The progress reporter: writes a job's percent done into its progress ConfigMap.

Run beside a workload that follows the workload contract (``step,percent`` lines in its
progress file, a ``DONE`` marker when complete), as a second container of the launcher (MPI) or
master/worker-0 pod, sharing the job's volume::

    python -m carbonscaler.operator.progress --kind CarbonScalerMPIJob --name nbody \\
        --file /data/nbody/progress.csv --done /data/nbody/checkpoint/DONE

The operator creates one ConfigMap per job, ``<job>-<short kind>-progress`` (e.g.
``nbody-csmpi-progress``), owned by the job; the reporter merge-patches its ``data.progress``
each time the percent rose by at least ``--step`` points, and the operator reads it on every
pass. That ConfigMap is the only thing the job's pods may write: their Role grants ``patch`` on
that one ``resourceName`` (deploy/examples/progress-rbac.yaml), not on the CarbonScaler job
(whose pod templates they could otherwise rewrite).

A failed report is retried with exponential back-off (``--backoff`` seconds, doubling, at most
``--max-backoff``, with jitter: the shared policy of :mod:`carbonscaler._retry`); after
``--max-failures`` failures in a row the reporter logs why and what to check, and exits 0 (so
it never fails the job's pod; the operator then estimates progress from the profile). It
exits 0 too once the ``DONE`` marker exists and 100 % is reported (so the pod can complete).
The namespace defaults to the pod's own.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import urllib3
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from carbonscaler._retry import Backoff
from carbonscaler.backends.kubernetes import REQUEST_TIMEOUT, api_client
from carbonscaler.kube.crd import KINDS, JobKind
from carbonscaler.kube.resources import PROGRESS_KEY, progress_configmap_name
from carbonscaler.workload import ProgressError, read_progress

__all__ = ["ProgressReporter", "main"]

log = logging.getLogger("carbonscaler.progress")
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ProgressReporter:
    """Reports one job's progress file to its progress ConfigMap.

    Args:
        api: the core API (official client).
        kind: the job's kind.
        namespace: its namespace.
        name: its name (the ConfigMap is named after it).
        progress_file: the workload's ``step,percent`` file.
        done_file: the workload's completion marker.
        step: report when the percent rose by at least this many points.
        max_failures: give up after this many failed reports in a row.
        backoff_s: the wait after the first failure; it doubles with each further one.
        max_backoff_s: the longest wait between attempts.
        timeout: seconds to connect and to wait for the answer, per request.
        jitter: the largest fraction of a wait taken off at random (0: exact waits).
        rng: the jitter's random source in [0, 1), replaceable in tests.

    Raises:
        ValueError: if a wait is negative or ``jitter`` is outside [0, 1].
    """

    def __init__(
        self,
        api: CoreV1Api,
        kind: JobKind,
        namespace: str,
        name: str,
        progress_file: Path,
        done_file: Path,
        *,
        step: float = 1.0,
        max_failures: int = 8,
        backoff_s: float = 2.0,
        max_backoff_s: float = 120.0,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.configmap = progress_configmap_name(kind, name)
        self.progress_file = progress_file
        self.done_file = done_file
        self.step = step
        self.max_failures = max_failures
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._backoff = Backoff(backoff_s, max_backoff_s, jitter=jitter, rng=rng)
        self.timeout = timeout
        self.reported: float | None = None
        self.failures = 0  # failed reports in a row
        self.last_error = ""

    def once(self) -> bool:
        """Report if there is news; True once the job is done and 100 % was reported. A
        failure is counted in :attr:`failures` (and reset by the next success)."""
        done = self.done_file.exists()
        if done:
            pct: float | None = 100.0
        else:
            try:
                row = read_progress(self.progress_file)
            except ProgressError as exc:  # the job's report is malformed: report nothing new
                log.warning("%s", exc)
                return False
            pct = None if row is None else row.percent
        if pct is None:
            return False
        if (
            self.reported is not None
            and pct < self.reported + self.step
            and not (done and pct > self.reported)
        ):
            return done
        try:
            self.api.patch_namespaced_config_map(
                self.configmap,
                self.namespace,
                {"data": {PROGRESS_KEY: f"{round(pct, 2):g}"}},
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            self._failed(pct, f"HTTP {exc.status} {exc.reason}", exc.status)
            return False
        except urllib3.exceptions.HTTPError as exc:
            self._failed(pct, f"no answer ({type(exc).__name__})", None)
            return False
        self.failures = 0
        self.reported = pct
        return done

    def _failed(self, pct: float, why: str, status: int | None) -> None:
        self.failures += 1
        hint = ""
        if status == 403:
            hint = (
                f" — the pod's service account may not patch ConfigMap {self.configmap} (see "
                "deploy/examples/progress-rbac.yaml: a Role granting patch on that resourceName)"
            )
        elif status == 404:
            hint = (
                f" — ConfigMap {self.namespace}/{self.configmap} does not exist yet; the operator "
                f"creates it for {self.kind.kind} {self.name} (is the operator running, and is "
                "the name right?)"
            )
        self.last_error = f"{why}{hint}"
        log.warning(
            "reporting %.1f %% failed (%d/%d): %s",
            pct,
            self.failures,
            self.max_failures,
            self.last_error,
        )

    def delay_s(self) -> float:
        """The wait before the next attempt after :attr:`failures` failures in a row."""
        if self.failures == 0:
            return 0.0
        return self._backoff.delay(self.failures)

    def run(self, interval_s: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Report every ``interval_s`` (backing off after failures) until the job is done
        (True) or :attr:`max_failures` reports failed in a row (False, logged as an error)."""
        while not self.once():
            if self.failures >= self.max_failures:
                log.error(
                    "giving up after %d failed reports in a row (last: %s); the operator "
                    "estimates %s %s/%s's progress from its profile instead",
                    self.failures,
                    self.last_error,
                    self.kind.kind,
                    self.namespace,
                    self.name,
                )
                return False
            sleep(max(interval_s, self.delay_s()))
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (exit 0 when the job is done, and when reporting gave up)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--name", required=True, help="the CarbonScaler resource's name")
    parser.add_argument("--namespace", help="default: the pod's namespace")
    parser.add_argument("--file", type=Path, required=True, help="the progress file")
    parser.add_argument("--done", type=Path, required=True, help="the DONE marker")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    parser.add_argument("--step", type=float, default=1.0, help="percent points per report")
    parser.add_argument(
        "--max-failures", type=int, default=8, help="give up after this many failures in a row"
    )
    parser.add_argument(
        "--backoff", type=float, default=2.0, help="seconds to wait after a first failure"
    )
    parser.add_argument(
        "--max-backoff", type=float, default=120.0, help="longest wait between attempts"
    )
    args = parser.parse_args(argv)
    namespace = args.namespace
    if namespace is None:
        if not _NAMESPACE_FILE.exists():
            parser.error("--namespace is required outside a pod")
        namespace = _NAMESPACE_FILE.read_text().strip()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    reporter = ProgressReporter(
        CoreV1Api(api_client()),
        KINDS[args.kind],
        namespace,
        args.name,
        args.file,
        args.done,
        step=args.step,
        max_failures=args.max_failures,
        backoff_s=args.backoff,
        max_backoff_s=args.max_backoff,
    )
    reporter.run(args.interval)
    return 0


if __name__ == "__main__":  # pragma: no cover - the container entry point
    raise SystemExit(main())
