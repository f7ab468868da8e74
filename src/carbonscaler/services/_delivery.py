"""Per-subscriber delivery of the carbon service's updates: a slow subscriber costs itself.

Each subscriber has a mailbox holding at most one update, the newest (latest value wins: an
update that has not gone out yet is replaced by the next one, which makes it obsolete) and
at most one push in flight; every push goes through one
:class:`~carbonscaler.services._push.PushClient` (answers parsed by httptools, one pool
of keep-alive connections per origin, no limit of its own on the pushes in flight: there is at
most one per subscriber). A push that fails or times out puts its subscriber into back-off
(``backoff_s``, doubling per consecutive failure up to ``max_backoff_s``, with jitter: the
shared policy of :mod:`carbonscaler._retry`); during back-off newer updates replace the
waiting one, and when it ends the newest is sent. After ``max_failures`` failures in a row
the mailbox stops trying; the service deactivates the subscriber in its store (persisted,
shown in its listing) until it registers again.

Why not one fan-out with a shared limit on pushes in flight: hanging subscribers fill the
limit's slots for a whole timeout each, and healthy ones queue behind them; with 10 % of
1,000 subscribers hanging, healthy ones received 6-10 of ~30 updates. Here the shared limit
(``max_sending``) bounds the sending of requests: a subscriber whose last push failed (or
that has not answered yet) gives its slot back as soon as its request is written and waits
for the answer on its own; one that answered last time keeps it while it answers, at most
0.25 s, so a fan-out to healthy subscribers is paced like a pool of connections. A hanging
subscriber thus holds a socket and a coroutine, nothing anyone else waits for (one that
starts hanging holds a slot for 0.25 s once); one whose host does not even accept
connections holds a slot for at most one timeout per attempt, and back-off makes its
attempts rare.

Everything runs on an event loop in a thread of its own, so pushing to many subscribers
does not hold up the API's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from carbonscaler._retry import Backoff
from carbonscaler.security.netguard import DestinationPolicy
from carbonscaler.services._push import PushClient, PushResult

__all__ = ["Deliveries"]

log = logging.getLogger("carbonscaler.carbon_service")

_HOLD_S = 0.25  # longest a sending slot waits for an answer from a subscriber that answers
_KEEPALIVE_S = 120.0  # an idle connection is kept this long between updates
_OPEN_FILES_WANTED = 65536  # one socket per subscriber waiting for an answer, and then some


@dataclass
class _Round:
    """One update on its way to every subscriber that was active when it was computed."""

    started: float
    remaining: int
    on_done: Callable[[float], None]

    def done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.on_done(time.perf_counter() - self.started)


@dataclass
class _Mailbox:
    sub_id: int
    address: str
    pending: bytes | None = None
    round: _Round | None = None
    task: asyncio.Task[None] | None = None
    failures: int = 0
    retry_at: float = 0.0
    answered: bool = False
    """Whether its last push succeeded (new subscribers have not)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Deliveries:
    """Latest-value-wins delivery to every subscriber, each on its own.

    Args:
        timeout_s: Timeout of one push (connect, send, response), and of each of its phases.
        backoff_s: Wait after a failed push (before jitter); doubles per consecutive failure.
        max_backoff_s: Longest wait between two pushes to a failing subscriber.
        max_failures: Consecutive failures after which a subscriber is no longer tried
            (until :meth:`reset`, e.g. when it registers again).
        max_sending: Requests being sent (connect, TLS, write) at once; bounds the bursts
            of work a fan-out makes, not the pushes waiting for answers (at most one per
            subscriber, each with a socket: the open-files limit is raised if it can be).
        on_result: Called (in the delivery thread) with every push's outcome.
        on_round: Called (in the delivery thread) with the seconds one update took to reach,
            fail or be superseded at every subscriber it was for.
        on_superseded: Called (in the delivery thread) when an update is replaced before it
            went out.
        policy: Where pushes may go (see :class:`~carbonscaler.services._push.PushClient`).
        jitter: Largest fraction of a back-off taken off at random (0: exact back-offs).
        rng: Random source in [0, 1) of the jitter, replaceable in tests.

    Raises:
        ValueError: If a timeout or back-off is negative, or ``jitter`` outside [0, 1].
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        max_failures: int,
        max_sending: int,
        on_result: Callable[[PushResult], None],
        on_round: Callable[[float], None] | None = None,
        on_superseded: Callable[[], None] | None = None,
        policy: DestinationPolicy | None = None,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_failures = max_failures
        self.max_sending = max_sending
        _raise_open_files_limit()
        self._on_result = on_result
        self._on_round = on_round or (lambda _: None)
        self._on_superseded = on_superseded or (lambda: None)
        self._backoff = Backoff(backoff_s, max_backoff_s, jitter=jitter, rng=rng)
        # One client for every subscriber: its connections are made on the delivery loop,
        # at the first push; a cancelled push (a forgotten subscriber) closes its own.
        self._client = PushClient(
            timeout_s=timeout_s,
            max_connections=None,  # one push in flight per subscriber; sending is bounded below
            keepalive_s=_KEEPALIVE_S,
            policy=policy,
        )
        self._boxes: dict[int, _Mailbox] = {}
        self._loop = asyncio.new_event_loop()
        self._slots: asyncio.Semaphore | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="carbon-pushes", daemon=True
        )
        self._thread.start()

    # -- called from any thread -------------------------------------------------------------

    def submit(self, body: bytes, targets: list[tuple[int, str]]) -> None:
        """Deliver ``body`` to every (id, address) in ``targets``, replacing what is still
        waiting for each; subscribers not in ``targets`` are dropped (deleted, inactive)."""
        self._call(self._submit, body, list(targets), time.perf_counter())

    def reset(self, sub_id: int) -> None:
        """Forget a subscriber's failures and back-off (it registered again)."""
        self._call(self._reset, sub_id)

    def forget(self, sub_id: int) -> None:
        """Stop delivering to a subscriber (deleted); a push in flight is cancelled."""
        self._call(self._forget, sub_id)

    def close(self) -> None:
        """Cancel every push, close the connections and stop the thread."""
        if not self._loop.is_running():
            return
        closing = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            closing.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, func: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # closed: nothing to deliver any more
            self._loop.call_soon_threadsafe(func, *args)

    # -- on the delivery loop ---------------------------------------------------------------

    def _submit(self, body: bytes, targets: list[tuple[int, str]], started: float) -> None:
        wanted = dict(targets)
        for sub_id in [i for i in self._boxes if i not in wanted]:
            self._forget(sub_id)
        round_ = _Round(started, 0, self._on_round)
        for sub_id, address in wanted.items():
            box = self._boxes.get(sub_id)
            if box is None or box.address != address:
                if box is not None:
                    self._forget(sub_id)
                box = self._boxes[sub_id] = _Mailbox(sub_id, address)
            if box.failures >= self.max_failures:
                continue  # given up on; the store deactivates it
            if box.round is not None:
                box.round.done()
            if box.pending is not None:
                self._on_superseded()
            box.pending, box.round = body, round_
            round_.remaining += 1
            if box.task is None:
                box.task = self._loop.create_task(self._deliver(box))
        if round_.remaining == 0:
            round_.remaining = 1
            round_.done()

    def _reset(self, sub_id: int) -> None:
        box = self._boxes.get(sub_id)
        if box is not None:
            box.failures, box.retry_at = 0, 0.0
            box.wake.set()

    def _forget(self, sub_id: int) -> None:
        box = self._boxes.pop(sub_id, None)
        if box is None:
            return
        if box.round is not None:
            box.round.done()
        box.pending = box.round = None
        if box.task is not None:
            box.task.cancel()

    async def _deliver(self, box: _Mailbox) -> None:
        """Push the newest waiting update until none waits (one task per subscriber)."""
        loop = self._loop
        round_: _Round | None = None
        try:
            while box.pending is not None:
                wait = box.retry_at - loop.time()
                if wait > 0:  # back-off; a reset (registering again) ends it early
                    box.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(box.wake.wait(), wait)
                    continue
                body, round_ = box.pending, box.round
                box.pending = box.round = None
                # A subscriber that answered last time keeps its slot while it answers (at
                # most _HOLD_S), which paces a fan-out like a pool of `max_sending`
                # connections; any other gives it back once its request is written.
                hold_s = _HOLD_S if box.answered else 0.0
                error = await self._push(box, body, hold_s)
                if round_ is not None:
                    round_.done()
                    round_ = None
                box.answered = error is None
                if error is None:
                    box.failures, box.retry_at = 0, 0.0
                else:
                    box.failures += 1
                    box.retry_at = loop.time() + self._backoff.delay(box.failures)
                    if box.failures >= self.max_failures:
                        box.pending = None
                    elif box.pending is None:
                        box.pending = body  # nothing newer yet: this one, after the back-off
                self._on_result(PushResult(box.sub_id, error is None, error, 1))
        finally:  # cancelled (deleted, or the service stops): the update ends here
            if round_ is not None:
                round_.done()
            box.task = None

    async def _push(self, box: _Mailbox, body: bytes, hold_s: float) -> str | None:
        """One push; None if the subscriber took it (2xx), else why not.

        The sending slot is given back ``hold_s`` after the request is written, or when the
        answer comes if that is sooner.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_sending)
        slots = self._slots
        held = False
        timer: asyncio.TimerHandle | None = None

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        def sent() -> None:
            nonlocal timer
            if hold_s <= 0:
                release()
            else:
                timer = self._loop.call_later(hold_s, release)

        try:
            async with asyncio.timeout(self.timeout_s):
                await slots.acquire()
                held = True
                status = await self._client.post(box.address, body, on_sent=sent)
        except TimeoutError:
            return f"timed out after {self.timeout_s:g} s"
        except Exception as exc:  # any failure is this subscriber's alone: record it
            return (f"{type(exc).__name__}: {exc}".rstrip(": "))[:500]
        finally:
            if timer is not None:
                timer.cancel()
            release()
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _shutdown(self) -> None:
        tasks = [box.task for box in self._boxes.values() if box.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._boxes.clear()
        with contextlib.suppress(Exception):
            await self._client.aclose()


def _raise_open_files_limit() -> None:
    """Raise the soft open-files limit toward the hard one: every subscriber waiting for an
    answer holds a socket, and the common default of 1,024 is below a thousand
    subscribers plus the service's own files."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= _OPEN_FILES_WANTED:
        return
    target = _OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, _OPEN_FILES_WANTED)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d (%s)", soft, exc)
