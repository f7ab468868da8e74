"""The Kubernetes backend: Kubeflow training jobs through the official ``kubernetes`` client.

Two layers:

* :class:`KubeflowApi` — the few API calls CarbonScaler makes (read, create, merge-patch and
  delete a Kubeflow job; patch a CarbonScaler resource's status; post an Event; read a profile
  ConfigMap; create and read a job's progress ConfigMap). The operator's handlers execute
  :mod:`carbonscaler.operator.reconcile`'s decisions (the operations of
  :mod:`carbonscaler.kube.operations`) through it. Every call has a request timeout (connect,
  read), so a half-open connection fails the call instead of wedging the pass.
* :class:`KubernetesBackend` — the controller's :class:`~carbonscaler.backends.base.Backend`
  over one Kubeflow job, so the engine-agnostic controller can drive a job on a cluster
  without the operator (its state then lives in the controller's SQLite file).

Errors of the API server become :class:`~carbonscaler.backends.base.BackendError` with the
server's message and what to check (RBAC, the training operator being installed); a refusal of
a Kubeflow job that retrying cannot fix (:func:`permanent_refusal`) is a :class:`ChildRejected`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from carbonscaler.backends.base import Backend, BackendError, WorkloadState
from carbonscaler.kube.crd import GROUP, KUBEFLOW_GROUP, KUBEFLOW_VERSION, MPI, VERSION, JobKind
from carbonscaler.kube.operations import (
    ChildError,
    ChildState,
    CreateChild,
    DeleteChild,
    EventNote,
    Operation,
    PatchChild,
)
from carbonscaler.kube.resources import (
    PROGRESS_KEY,
    child_body,
    event_body,
    progress_configmap_body,
    progress_configmap_name,
    replicas_patch,
)
from carbonscaler.profile import ScalingProfile, load_profile

__all__ = [
    "REQUEST_TIMEOUT",
    "ChildRejected",
    "KubeflowApi",
    "KubernetesBackend",
    "ProfileUnavailable",
    "api_client",
    "permanent_refusal",
]

REQUEST_TIMEOUT: tuple[float, float] = (10.0, 30.0)
"""Seconds to connect and to wait for each read of an API call (the client's
``_request_timeout``)."""

# 4xx that a later attempt may pass: missing (404), conflict (409), throttled (429),
# unauthenticated (401), timed out (408); a 403 is one too unless it is an admission denial
# (RBAC and quota are fixed outside the job).
_RETRYABLE_4XX = frozenset({401, 403, 404, 408, 409, 429})


class ProfileUnavailable(RuntimeError):
    """The profile ConfigMap is missing or not a valid profile; the message says which."""


class ChildRejected(BackendError):
    """The API server refused an operation on a Kubeflow job for good (see
    :func:`permanent_refusal`); ``error`` holds the code and the server's message."""

    def __init__(self, message: str, error: ChildError) -> None:
        super().__init__(message)
        self.error = error


def _server_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status body, else the raw body (shortened)."""
    raw = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    if not isinstance(raw, str):
        return str(exc.reason or "")
    try:
        status = json.loads(raw)
    except ValueError:
        return raw[:500]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return raw[:500]


def permanent_refusal(code: int, message: str) -> bool:
    """Whether an API error on creating or patching a Kubeflow job is permanent: a 4xx other
    than 401/404/408/409/429, and a 403 only when it is an admission webhook's or policy's
    denial (``... denied the request ...``), not RBAC or a quota."""
    if not 400 <= code < 500:
        return False
    if code == 403:
        return "denied" in message and "request" in message
    return code not in _RETRYABLE_4XX


def api_client(context: str | None = None) -> client.ApiClient:
    """An API client from the in-cluster service account, else the kubeconfig.

    Raises:
        BackendError: if neither is available.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config(context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (config.ConfigException, FileNotFoundError, OSError) as exc:
            raise BackendError(
                "no Kubernetes credentials: run inside a pod with a service account, or set "
                f"KUBECONFIG / ~/.kube/config ({exc})"
            ) from None
    return client.ApiClient(configuration)


def _explain(exc: ApiException, what: str) -> BackendError:
    hint = ""
    if exc.status == 403:
        hint = " — the service account lacks a permission; apply deploy/operator/rbac.yaml"
    elif exc.status == 404 and "kubeflow" in what:
        hint = (
            " — is the Kubeflow training operator installed? "
            "(kubectl get crd mpijobs.kubeflow.org pytorchjobs.kubeflow.org)"
        )
    body = (exc.body or "")[:300] if isinstance(exc.body, str) else ""
    return BackendError(f"{what}: HTTP {exc.status} {exc.reason}{hint} {body}".rstrip())


def _unreachable(exc: urllib3.exceptions.HTTPError, what: str) -> BackendError:
    return BackendError(
        f"{what}: the API server did not answer ({type(exc).__name__}: {exc}); "
        "retrying on the next pass"
    )


class KubeflowApi:
    """The API calls of CarbonScaler, over an official-client :class:`ApiClient`.

    Args:
        api: the client (see :func:`api_client`); tests point one at a recording server.
        instance: this process's name in the Events it posts.
        timeout: seconds to connect and to wait for each read, on every call.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        instance: str = "carbonscaler",
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.instance = instance
        self.timeout = timeout

    # -- Kubeflow jobs

    def get_child(self, kind: JobKind, namespace: str, name: str) -> dict[str, Any] | None:
        """The Kubeflow job, or None if there is none.

        Raises:
            BackendError: on any other API error.
        """
        what = f"reading kubeflow {kind.child_kind} {namespace}/{name}"
        try:
            found = self.custom.get_namespaced_custom_object(
                KUBEFLOW_GROUP,
                KUBEFLOW_VERSION,
                namespace,
                kind.child_plural,
                name,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, what) from None
        return dict(found) if isinstance(found, dict) else None

    def child_state(
        self, kind: JobKind, namespace: str, name: str, owner_uid: str
    ) -> ChildState | None:
        body = self.get_child(kind, namespace, name)
        return None if body is None else ChildState.from_body(kind, body, owner_uid)

    def apply(self, kind: JobKind, namespace: str, operation: Operation) -> None:
        """Perform one decided operation; creating what exists or deleting what is gone is
        not an error (a repeated pass after a lost status write does the same again).

        Raises:
            ChildRejected: if the API server refused a creation or a patch for good
                (:func:`permanent_refusal`): retrying the same request cannot pass.
            BackendError: on any other API error, or no answer in time.
        """
        what = f"{type(operation).__name__} on kubeflow {kind.child_kind} in {namespace}"
        try:
            if isinstance(operation, CreateChild):
                self.custom.create_namespaced_custom_object(
                    KUBEFLOW_GROUP,
                    KUBEFLOW_VERSION,
                    namespace,
                    kind.child_plural,
                    operation.body,
                    _request_timeout=self.timeout,
                )
            elif isinstance(operation, PatchChild):
                self.custom.patch_namespaced_custom_object(
                    KUBEFLOW_GROUP,
                    KUBEFLOW_VERSION,
                    namespace,
                    kind.child_plural,
                    operation.name,
                    operation.patch,
                    _request_timeout=self.timeout,
                )
            else:
                self.custom.delete_namespaced_custom_object(
                    KUBEFLOW_GROUP,
                    KUBEFLOW_VERSION,
                    namespace,
                    kind.child_plural,
                    operation.name,
                    body=client.V1DeleteOptions(propagation_policy=operation.propagation),
                    _request_timeout=self.timeout,
                )
        except ApiException as exc:
            if (isinstance(operation, CreateChild) and exc.status == 409) or (
                isinstance(operation, DeleteChild) and exc.status == 404
            ):
                return
            message = _server_message(exc)
            if not isinstance(operation, DeleteChild) and permanent_refusal(
                int(exc.status or 0), message
            ):
                error = ChildError(type(operation).__name__, int(exc.status), message)
                raise ChildRejected(
                    f"{what}: HTTP {exc.status} {exc.reason}: {message}", error
                ) from None
            raise _explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, what) from None

    # -- CarbonScaler resources

    def patch_status(
        self, kind: JobKind, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch the resource's ``status`` subresource.

        Raises:
            BackendError: on an API error.
        """
        what = f"patching the status of {kind.kind} {namespace}/{name}"
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                kind.plural,
                name,
                {"status": status},
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise _explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, what) from None

    def post_event(self, owner: dict[str, Any], note: EventNote, now: float) -> None:
        """Post an Event about ``owner``; a failure is not worth failing the pass for.

        Raises:
            BackendError: only on a permission error (so the missing RBAC rule is reported).
        """
        body = event_body(
            owner,
            type_=note.type,
            reason=note.reason,
            message=note.message,
            now=datetime.fromtimestamp(now, UTC),
            instance=self.instance,
        )
        try:
            self.core.create_namespaced_event(
                owner["metadata"]["namespace"],
                body,  # type: ignore[arg-type]
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 403:
                raise _explain(exc, "posting an Event") from None
        except urllib3.exceptions.HTTPError:
            pass  # an Event is not worth the pass; the status carries the same news

    def read_profile(self, namespace: str, name: str) -> ScalingProfile:
        """The scaling profile in ConfigMap ``name``: its key ``profile.csv``, or its only key
        (reference CSV ``nodes,throughput,power``).

        Raises:
            ProfileUnavailable: if it is missing or malformed, saying what to fix.
        """
        try:
            cm = self.core.read_namespaced_config_map(
                name, namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ProfileUnavailable(
                    f"profile ConfigMap {namespace}/{name} not found; create it with "
                    f"`kubectl create configmap {name} --from-file=profile.csv=PATH.csv`"
                ) from None
            raise ProfileUnavailable(str(_explain(exc, f"reading ConfigMap {name}"))) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ProfileUnavailable(str(_unreachable(exc, f"reading ConfigMap {name}"))) from None
        data = dict(cm.data or {})
        text = data.get("profile.csv")
        if text is None and len(data) == 1:
            text = next(iter(data.values()))
        if text is None:
            raise ProfileUnavailable(
                f"ConfigMap {namespace}/{name} has keys {sorted(data)}; put the profile CSV "
                "under the key profile.csv"
            )
        return profile_from_csv(name, text)

    # -- progress reports

    def ensure_progress_channel(self, kind: JobKind, owner: dict[str, Any]) -> None:
        """Create the job's progress ConfigMap (owned by the job) unless it exists.

        Raises:
            BackendError: on an API error other than "already exists".
        """
        body = progress_configmap_body(kind, owner)
        namespace = owner["metadata"]["namespace"]
        what = f"creating ConfigMap {namespace}/{body['metadata']['name']}"
        try:
            self.core.create_namespaced_config_map(
                namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status != 409:
                raise _explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, what) from None

    def read_progress(self, kind: JobKind, namespace: str, name: str) -> float | None:
        """The percent done that job ``name``'s pods reported in its progress ConfigMap, or
        None if there is none yet (no ConfigMap, no report, or not a number in 0..100).

        Raises:
            BackendError: on an API error other than "not found".
        """
        cm_name = progress_configmap_name(kind, name)
        what = f"reading ConfigMap {namespace}/{cm_name}"
        try:
            cm = self.core.read_namespaced_config_map(
                cm_name, namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc, what) from None
        raw = (cm.data or {}).get(PROGRESS_KEY)
        try:
            pct = float(str(raw).strip())
        except ValueError:
            return None
        return pct if math.isfinite(pct) and 0.0 <= pct <= 100.0 else None


def profile_from_csv(name: str, text: str) -> ScalingProfile:
    """A profile from CSV text, with the same checks and messages as a profile file.

    Raises:
        ProfileUnavailable: if the CSV is not a valid profile.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        try:
            return load_profile(path)
        except ValueError as exc:
            raise ProfileUnavailable(
                f"ConfigMap {name}: {str(exc).replace(str(path), 'profile.csv')}"
            ) from None


class KubernetesBackend(Backend):
    """One Kubeflow job as the controller's workload.

    A start creates the job at ``k`` workers; a stop deletes it in the foreground and waits
    until it is gone (its pods stop, the workload checkpoints). MPI rescales by stop and start
    (:meth:`Backend.rescale`); an elastic PyTorchJob is patched in place.

    Args:
        api: the API calls.
        kind: which Kubeflow kind (``MPI`` or ``PYTORCH`` from :mod:`carbonscaler.kube.crd`).
        namespace: where the job runs.
        name: the Kubeflow job's name.
        spec: its spec (MPIJobSpec or PyTorchJobSpec); worker replicas are set per start.
        progress: reads the workload's percent done (e.g. from its progress file on a shared
            volume); None if the workload reports none.
        stop_timeout_s: how long a stop may take before it is an error.
        poll_s: how often a stop checks whether the job is gone.
    """

    def __init__(
        self,
        api: KubeflowApi,
        kind: JobKind,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        progress: Callable[[], float | None] | None = None,
        stop_timeout_s: float = 300.0,
        poll_s: float = 1.0,
    ) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self._progress = progress
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self._workers = 0

    @property
    def workers(self) -> int:
        return self._workers

    def _apply(self, operation: Operation) -> None:
        self.api.apply(self.kind, self.namespace, operation)

    def start(self, workers: int) -> None:
        if workers < 1:
            raise BackendError(f"cannot start {self.name} at {workers} workers")
        body = child_body(
            self.kind,
            name=self.name,
            namespace=self.namespace,
            spec=self.spec,
            workers=workers,
        )
        self._apply(CreateChild(body))
        self._workers = workers

    def stop(self) -> None:
        self._apply(DeleteChild(self.name))
        deadline = time.monotonic() + self.stop_timeout_s
        while self.api.get_child(self.kind, self.namespace, self.name) is not None:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.kind.child_kind} {self.namespace}/{self.name} still exists "
                    f"{self.stop_timeout_s:g} s after its deletion; check its pods' "
                    "finalizers and terminationGracePeriodSeconds"
                )
            time.sleep(self.poll_s)
        self._workers = 0

    def rescale(self, workers: int) -> None:
        if self.kind is not MPI and workers > 0 and self._workers > 0:
            self._apply(PatchChild(self.name, replicas_patch(self.kind, workers)))
            self._workers = workers
            return
        super().rescale(workers)

    def poll(self) -> WorkloadState:
        body = self.api.get_child(self.kind, self.namespace, self.name)
        if body is None:
            return WorkloadState.STOPPED
        state = ChildState.from_body(self.kind, body, owner_uid="")
        if state.succeeded:
            return WorkloadState.DONE
        if state.failed:
            return WorkloadState.CRASHED
        return WorkloadState.STOPPED if state.deleting else WorkloadState.RUNNING

    def progress_pct(self) -> float | None:
        return None if self._progress is None else self._progress()

    def handle(self) -> dict[str, object]:
        return {
            "kind": self.kind.kind,
            "namespace": self.namespace,
            "name": self.name,
            "workers": self._workers,
        }

    def attach(self, handle: dict[str, object]) -> bool:
        if handle.get("name") != self.name or handle.get("namespace") != self.namespace:
            return False
        body = self.api.get_child(self.kind, self.namespace, self.name)
        if body is None:
            return False
        self._workers = ChildState.from_body(self.kind, body, owner_uid="").workers
        return True
