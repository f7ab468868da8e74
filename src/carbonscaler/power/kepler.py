"""Kepler's per-pod and per-node energy, read from Prometheus.

Kepler exports cumulative joules counters; Prometheus scrapes them every few tens of
seconds. We ask Prometheus's HTTP API (``GET /api/v1/query``, an instant ``vector``) for
``sum(rate(COUNTER{...}[window]))``: ``rate`` turns the joules counter into watts, handles
counter resets (a restarted exporter) and works across scrape times we do not know. Our
reading is that average over the last ``window``, which should span at least two scrapes.

Metric names changed in Kepler 0.10. Each target tries the newer names first and falls
back to the older ones, remembering the first that answers:

- pod, newer: ``kepler_pod_cpu_joules_total{pod_namespace, pod_name, zone="package"}``;
  older: ``kepler_container_joules_total{container_namespace, pod_name}``;
- node, newer: ``kepler_node_cpu_joules_total{node_name, zone="package"}``;
  older: ``kepler_node_package_joules_total{instance}``.

The newer metrics carry a ``zone`` label (package, core, uncore, dram); we keep
``zone="package"`` only, for the reason RAPL does (core and uncore are inside the package).
The older container metric is already Kepler's aggregate over components, summed here
over containers and its ``mode`` (dynamic, idle) label.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from carbonscaler.power.meter import MeterError, Monotonic, PowerReading, _IntervalMeter

__all__ = ["KeplerMeter", "KeplerQuery", "prometheus_vector"]

_DURATION = re.compile(r"^[1-9][0-9]*[smh]$")


def _quote(value: str) -> str:
    """A PromQL string literal (label values come from users)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class KeplerQuery:
    """One way of asking for a target's joules counter."""

    metric: str
    labels: tuple[tuple[str, str], ...]

    def promql(self, window: str) -> str:
        """``sum(rate(metric{labels}[window]))``."""
        selector = ",".join(f"{k}={_quote(v)}" for k, v in self.labels)
        return f"sum(rate({self.metric}{{{selector}}}[{window}]))"


def _queries(pod: str | None, node: str | None) -> list[KeplerQuery]:
    if pod is not None:
        namespace, _, name = pod.partition("/")
        return [
            KeplerQuery(
                "kepler_pod_cpu_joules_total",
                (("pod_namespace", namespace), ("pod_name", name), ("zone", "package")),
            ),
            KeplerQuery(
                "kepler_container_joules_total",
                (("container_namespace", namespace), ("pod_name", name)),
            ),
        ]
    assert node is not None
    return [
        KeplerQuery("kepler_node_cpu_joules_total", (("node_name", node), ("zone", "package"))),
        KeplerQuery("kepler_node_package_joules_total", (("instance", node),)),
    ]


def prometheus_vector(body: Any) -> list[tuple[dict[str, str], float, float]]:
    """The ``(labels, unix time, value)`` samples of an instant-query answer.

    Raises:
        MeterError: If the body is a Prometheus error or not an instant vector.
    """
    if not isinstance(body, dict):
        raise MeterError("Prometheus answered something other than a JSON object")
    if body.get("status") != "success":
        raise MeterError(
            f"Prometheus refused the query: {body.get('errorType', '?')}: {body.get('error', '')}"
        )
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise MeterError("Prometheus answered without a vector result (data.resultType)")
    samples: list[tuple[dict[str, str], float, float]] = []
    for item in data.get("result") or []:
        try:
            t, value = item["value"]
            samples.append((dict(item.get("metric") or {}), float(t), float(value)))
        except (KeyError, TypeError, ValueError):
            raise MeterError(f"Prometheus sample {str(item)[:80]} is not [time, value]") from None
    return samples


class KeplerMeter(_IntervalMeter):
    """Power of one pod (``namespace/name``) or one node as Kepler attributes it.

    Args:
        prometheus_url: Base URL of the Prometheus server that scrapes Kepler.
        pod: ``namespace/name`` of the pod; give this or ``node``.
        node: Node name; give this or ``pod``.
        window: ``rate`` window, a Prometheus duration such as ``1m`` (at least two
            scrape intervals).
        timeout_s: Timeout of each HTTP request.
        client: An httpx client to use (its base URL is ignored); default a new one.
        monotonic: Clock for the intervals, replaceable in tests.

    Raises:
        ValueError: If neither or both targets are given, or the window is not a duration.
    """

    source = "measured:kepler"

    def __init__(
        self,
        prometheus_url: str,
        *,
        pod: str | None = None,
        node: str | None = None,
        window: str = "1m",
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        if (pod is None) == (node is None):
            raise ValueError("give exactly one of pod ('namespace/name') or node")
        if pod is not None and (pod.count("/") != 1 or not all(pod.split("/"))):
            raise ValueError(f"pod must be 'namespace/name', not {pod!r}")
        if not _DURATION.match(window):
            raise ValueError(f"window must be a Prometheus duration such as 1m, not {window!r}")
        super().__init__(monotonic)
        self.url = prometheus_url.rstrip("/") + "/api/v1/query"
        self.target = f"pod {pod}" if pod is not None else f"node {node}"
        self.window = window
        self.queries = _queries(pod, node)
        self._working: KeplerQuery | None = None
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(trust_env=False)
        self._timeout = httpx.Timeout(timeout_s)

    def _ask(self, query: KeplerQuery) -> tuple[float, float] | None:
        try:
            response = self._client.get(
                self.url, params={"query": query.promql(self.window)}, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise MeterError(f"Prometheus at {self.url} unreachable: {exc!r}") from None
        if response.status_code >= 500:
            raise MeterError(f"Prometheus at {self.url} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise MeterError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}, not JSON"
            ) from None
        samples = prometheus_vector(body)
        if not samples:
            return None
        t, watts = samples[0][1], samples[0][2]
        if not (math.isfinite(watts) and watts >= 0):
            raise MeterError(f"Kepler rate for {self.target} is {watts}, not a power")
        return t, watts

    def read(self) -> PowerReading:
        candidates = [self._working] if self._working is not None else self.queries
        for query in candidates:
            assert query is not None
            answer = self._ask(query)
            if answer is not None:
                self._working = query
                t, watts = answer
                return PowerReading(
                    watts, self._interval_s(), self.source, datetime.fromtimestamp(t, UTC)
                )
        if self._working is not None:
            self._working = None  # the series vanished (Kepler upgraded?): rediscover
        names = ", ".join(q.metric for q in self.queries)
        raise MeterError(
            f"Prometheus has no Kepler series for {self.target} ({names}); is Kepler scraped,"
            f" and has the target run for at least {self.window}?"
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
