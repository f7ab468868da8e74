"""The progress reporter: raises a CarbonScaler resource's ``carbonScalerSpec.progress``.

Run beside a workload that follows the workload contract (``step,percent`` lines in its
progress file, a ``DONE`` marker when complete), as a second container of the launcher (MPI) or
master/worker-0 pod, sharing the job's volume::

    python -m carbonscaler.operator.progress --kind CarbonScalerMPIJob --name nbody \\
        --file /data/nbody/progress.csv --done /data/nbody/checkpoint/DONE

It merge-patches the resource each time the percent rose by at least ``--step`` points and
exits 0 once the ``DONE`` marker exists and 100 % is reported (so the pod can complete). The
namespace defaults to the pod's own; the pod's service account needs ``patch`` on the kind
(deploy/examples/progress-rbac.yaml).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from carbonscaler.backends.kubernetes import api_client
from carbonscaler.backends.local import read_progress_pct
from carbonscaler.kube.crd import GROUP, KINDS, VERSION, JobKind

__all__ = ["ProgressReporter", "main"]

log = logging.getLogger("carbonscaler.progress")
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ProgressReporter:
    """Reports one job's progress file to its CarbonScaler resource.

    Args:
        api: the custom-objects API (official client).
        kind: the resource's kind.
        namespace: its namespace.
        name: its name.
        progress_file: the workload's ``step,percent`` file.
        done_file: the workload's completion marker.
        step: report when the percent rose by at least this many points.
    """

    def __init__(
        self,
        api: CustomObjectsApi,
        kind: JobKind,
        namespace: str,
        name: str,
        progress_file: Path,
        done_file: Path,
        *,
        step: float = 1.0,
    ) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.progress_file = progress_file
        self.done_file = done_file
        self.step = step
        self.reported: float | None = None

    def once(self) -> bool:
        """Report if there is news; True once the job is done and 100 % was reported."""
        done = self.done_file.exists()
        pct = 100.0 if done else read_progress_pct(self.progress_file)
        if pct is None:
            return False
        if (
            self.reported is None
            or pct >= self.reported + self.step
            or (done and pct > self.reported)
        ):
            try:
                self.api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    self.kind.plural,
                    self.name,
                    {"carbonScalerSpec": {"progress": round(pct, 2)}},
                )
            except ApiException as exc:
                log.warning("reporting %.1f %% failed: HTTP %s %s", pct, exc.status, exc.reason)
                return False
            self.reported = pct
        return done

    def run(self, interval_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Report every ``interval_s`` until the job is done."""
        while not self.once():
            sleep(interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (exit 0 when the job is done)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--name", required=True, help="the CarbonScaler resource's name")
    parser.add_argument("--namespace", help="default: the pod's namespace")
    parser.add_argument("--file", type=Path, required=True, help="the progress file")
    parser.add_argument("--done", type=Path, required=True, help="the DONE marker")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    parser.add_argument("--step", type=float, default=1.0, help="percent points per report")
    args = parser.parse_args(argv)
    namespace = args.namespace
    if namespace is None:
        if not _NAMESPACE_FILE.exists():
            parser.error("--namespace is required outside a pod")
        namespace = _NAMESPACE_FILE.read_text().strip()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    reporter = ProgressReporter(
        CustomObjectsApi(api_client()),
        KINDS[args.kind],
        namespace,
        args.name,
        args.file,
        args.done,
        step=args.step,
    )
    reporter.run(args.interval)
    return 0


if __name__ == "__main__":  # pragma: no cover - the container entry point
    raise SystemExit(main())
