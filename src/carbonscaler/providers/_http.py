"""Shared HTTP plumbing of the live providers: timeouts, retries, backoff, error mapping.

Retries follow the one policy of :mod:`carbonscaler._retry` (tenacity; exponential backoff
with jitter, ``Retry-After`` honoured up to ``max_wait_s``): timeouts, connection errors, 429
and 5xx are retried, and nothing else.

Synchronous by design: the controller that consumes providers is synchronous, a provider is
asked at most a few times per update interval, and the async carbon service runs provider
calls in a worker thread. One flavour means one code path to test against real servers.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from carbonscaler._retry import Backoff, retrying
from carbonscaler.providers.base import (
    CarbonProvider,
    IntensityReading,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailable,
    UnknownZoneError,
    to_utc,
    utc_now,
)

USER_AGENT = "carbonscaler/0.1 (+https://github.com/carbonscaler)"


class _Retryable(Exception):
    """A failed attempt worth another (timeout, connection error, 429, 5xx).

    Args:
        failure: The error to raise if no attempt is left.
        retry_after_s: The wait the API asked for, if it did (a floor for the next wait).
    """

    def __init__(self, failure: ProviderError, retry_after_s: float | None = None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.retry_after_s = retry_after_s


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utc_now())).total_seconds())


def error_detail(response: httpx.Response) -> str:
    """The API's own words for an error, from the usual JSON shapes or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("code") or value
            if value:
                return str(value)[:200]
    return str(body)[:200]


class HttpProvider(CarbonProvider):
    """Base of the providers that call a JSON API.

    Args:
        zone: Default zone.
        base_url: API root; tests point it at a local server.
        timeout_s: Timeout of every request (connect, read, write and pool).
        max_retries: Retries after a timeout, connection error, 429 or 5xx.
        backoff_s: First retry delay (before jitter); doubles on each retry.
        max_wait_s: Longest single wait. A 429 asking for longer is not waited out: the
            provider fails fast with :class:`ProviderRateLimited` until that time has passed,
            so a fallback can answer instead.
        stale_after_s: A value whose slot started longer ago than this is flagged stale.
        client: An ``httpx.Client`` to use instead of a new one (e.g. with a proxy).
        sleep: Sleep function, replaceable in tests.
        jitter: Largest fraction of a retry delay taken off at random (0: exact delays).
        rng: Random source in [0, 1) of the jitter, replaceable in tests.

    Raises:
        ValueError: If ``timeout_s`` is not positive, ``max_retries`` is negative, a wait
            is negative or ``jitter`` is outside [0, 1].
    """

    credential_hint = ""
    """What to check when the API refuses the credentials (named env vars)."""

    def __init__(
        self,
        zone: str,
        *,
        base_url: str,
        timeout_s: float = 10.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        stale_after_s: float = 2 * 3600.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(zone)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.stale_after_s = stale_after_s
        self._sleep = sleep
        self._backoff = Backoff(backoff_s, max_wait_s, jitter=jitter, rng=rng)
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers={"User-Agent": USER_AGENT}
        )
        self._blocked_until = 0.0  # time.monotonic() before which a 429 told us to stay away

    def close(self) -> None:
        self._client.close()

    def _get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> Any:
        """GET ``base_url + path`` and return the decoded JSON body.

        Timeouts, connection errors, 429 and 5xx are retried (``max_retries`` times) by the
        shared policy (:mod:`carbonscaler._retry`); everything else fails at once.

        Raises:
            ProviderAuthError: On 401/403 (not retried).
            UnknownZoneError: On 404.
            ProviderRateLimited: On a 429 that asks for a longer wait than ``max_wait_s``,
                or while an earlier such wait is still running.
            ProviderUnavailable: On timeouts, connection errors, 429 and 5xx after retries.
            ProviderRequestError: On other 4xx.
            ProviderResponseError: On a 2xx body that is not JSON.
        """
        url = f"{self.base_url}{path}"
        retry = retrying(
            self._backoff, retries=self.max_retries, retry_on=_Retryable, sleep=self._sleep
        )
        try:
            return retry(self._get_once, url, path, params, headers, auth)
        except _Retryable as exc:
            failure = exc.failure
        if isinstance(failure, ProviderRateLimited):
            raise ProviderUnavailable(self.name, f"{failure} (after {self.max_retries} retries)")
        raise failure

    def _get_once(
        self,
        url: str,
        path: str,
        params: Mapping[str, str | int | float] | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None,
    ) -> Any:
        """One attempt of :meth:`_get_json`.

        Raises:
            _Retryable: On a timeout, connection error, 429 (asking for at most
                ``max_wait_s``) or 5xx, carrying the error to raise if no retry is left.
            ProviderError: On the failures not worth another attempt (see :meth:`_get_json`).
        """
        blocked_s = self._blocked_until - time.monotonic()
        if blocked_s > 0:
            raise ProviderRateLimited(
                self.name,
                f"rate limited; not calling again for {blocked_s:.0f} s",
                retry_after_s=blocked_s,
            )
        try:
            response = self._client.get(url, params=params, headers=headers, auth=auth)
        except httpx.TimeoutException:
            raise _Retryable(
                ProviderUnavailable(self.name, f"GET {url} timed out after {self.timeout_s:g} s")
            ) from None
        except httpx.HTTPError as exc:
            raise _Retryable(ProviderUnavailable(self.name, f"cannot reach {url}: {exc}")) from None
        status = response.status_code
        if 200 <= status < 300:
            return self._decode(response)
        detail = error_detail(response)
        if status in (401, 403):
            raise ProviderAuthError(
                self.name,
                f"HTTP {status} from {path}: {detail}. {self.credential_hint}".strip(),
            )
        if status == 404:
            raise UnknownZoneError(
                self.name, f"HTTP 404 from {path}: {detail}; check the zone name"
            )
        if status == 429:
            asked_s = retry_after_s(response.headers.get("Retry-After"))
            if asked_s is not None and asked_s > self.max_wait_s:
                self._blocked_until = time.monotonic() + asked_s
                raise ProviderRateLimited(
                    self.name,
                    f"HTTP 429 from {path}: asked to wait {asked_s:.0f} s",
                    retry_after_s=asked_s,
                )
            raise _Retryable(
                ProviderRateLimited(
                    self.name, f"HTTP 429 from {path}: {detail}", retry_after_s=asked_s
                ),
                retry_after_s=asked_s,
            )
        if status >= 500:
            raise _Retryable(ProviderUnavailable(self.name, f"HTTP {status} from {path}: {detail}"))
        raise ProviderRequestError(self.name, f"HTTP {status} from {path}: {detail}")

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            snippet = response.text[:80]
            raise ProviderResponseError(
                self.name, f"answered {response.status_code} with a non-JSON body: {snippet!r}"
            ) from None

    def _reading(self, zone: str, value: Any, timestamp: Any) -> IntensityReading:
        """A reading from raw JSON fields, validated and flagged stale when old.

        Raises:
            ProviderResponseError: If the value or timestamp is missing or malformed.
        """
        ts = self._time(timestamp)
        number = self._number(value)
        now = utc_now()
        return IntensityReading(
            zone=zone,
            value_g_per_kwh=number,
            timestamp=ts,
            source=self.name,
            stale=(now - ts).total_seconds() > self.stale_after_s,
            fetched_at=now,
        )

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProviderResponseError(self.name, f"expected a number, got {value!r}")
        number = float(value)
        if not (number >= 0 and number != float("inf")):
            raise ProviderResponseError(self.name, f"impossible carbon intensity {value!r}")
        return number

    def _time(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise ProviderResponseError(self.name, f"expected an ISO 8601 time, got {value!r}")
        try:
            return to_utc(value)
        except ValueError:
            raise ProviderResponseError(
                self.name, f"expected an ISO 8601 time, got {value!r}"
            ) from None

    def _field(self, body: Any, *keys: str | int) -> Any:
        """``body[k0][k1]...``, or a clear :class:`ProviderResponseError`."""
        value = body
        for key in keys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                path = "".join(f"[{k!r}]" for k in keys)
                raise ProviderResponseError(
                    self.name, f"unexpected response: no {path} in {str(body)[:120]}"
                ) from None
        return value
