"""Progress of long commands, on standard error: a bar with an ETA on a terminal, plain lines
where there is none (CI, logs, pipes), so that standard output (``--json``) stays clean.

Every long command (``run``, ``demo``, ``advise``, ``profile``, ``forecast evaluate``) reports
through :class:`ProgressDisplay`; the choice between the two forms is made here, once::

    with ProgressDisplay("simulating", total=n) as progress:
        for i in range(n):
            ...
            progress.update(i + 1, detail="NL, slack 1.5")

On a terminal the bar shows the description, the share done, the time left (``eta_s`` when
the caller knows better than the rate so far, as a carbon-aware run does) and a detail; an
``above`` renderable (the run's live table) is drawn over it. Without a terminal a line is
printed at the first update, at every ``milestone`` (e.g. each slot of a run), at most every
``every_s`` seconds otherwise, and once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from carbonscaler.cli._common import err_console
from carbonscaler.wording import clock

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, Task

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """A bar with ETA on a terminal, plain lines otherwise (see the module docstring).

    Args:
        description: what is being done ("simulating", "profiling").
        total: the amount of work (None: unknown until an update says).
        unit: shown after plain counts (" runs"); ``"%"`` means completed is a percentage.
        every_s: the longest gap between plain lines when updates keep coming.
        console: where to write (default: standard error).
        terminal: force the form (default: whether ``console`` is a terminal).
        now: the clock (tests pass a fake one).
    """

    def __init__(
        self,
        description: str,
        *,
        total: float | None = None,
        unit: str = "",
        every_s: float = 5.0,
        console: Console | None = None,
        terminal: bool | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or err_console()
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.description = description
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self._now = now
        self._started = now()
        self._completed = 0.0
        self._detail = ""
        self._eta_at: float | None = None
        self._last_line: float | None = None
        self._bar: Progress | None = None
        self._task: Any = None
        self.above: RenderableType | None = None  # drawn over the bar (a terminal only)

    # -- the context ---------------------------------------------------------------------

    def __enter__(self) -> ProgressDisplay:
        self._started = self._now()
        if self.terminal:
            self._bar = _make_bar(self.console, self)
            self._task = self._bar.add_task(self.description, total=self.total, detail="")
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif kind is None and self._last_line is not None:
            self.console.print(
                f"{self.description}: done in {clock(self._now() - self._started)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    # -- reporting -----------------------------------------------------------------------

    def update(
        self,
        completed: float,
        *,
        total: float | None = None,
        description: str | None = None,
        detail: str | None = None,
        eta_s: float | None = None,
        milestone: bool = False,
        above: RenderableType | None = None,
    ) -> None:
        """Report ``completed`` of the total.

        Args:
            completed: work done so far.
            total: a new total (if it changed or was unknown).
            description: a new description.
            detail: a short text after the numbers ("slot 5 of 36, 2 servers").
            eta_s: seconds left, where the caller knows (default: from the rate so far).
            milestone: print a plain line now, however recent the last.
            above: on a terminal, drawn over the bar (replacing the last one).
        """
        now = self._now()
        self._completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        if detail is not None:
            self._detail = detail
        self._eta_at = None if eta_s is None else now + max(eta_s, 0.0)
        if self._bar is not None:
            if above is not None:
                self.above = above
            self._bar.update(
                self._task,
                completed=completed,
                total=self.total,
                description=self.description,
                detail=self._detail,
            )
            return
        if not self.terminal and (
            milestone or self._last_line is None or now - self._last_line >= self.every_s
        ):
            self._last_line = now
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)

    def print(self, text: str) -> None:
        """A message: over the bar on a terminal, a plain line otherwise."""
        target = self._bar.console if self._bar is not None else self.console
        target.print(text, markup=False, highlight=False, soft_wrap=True)

    def eta_s(self) -> float | None:
        """Seconds left: the caller's word, else the rate so far; None while unknown."""
        now = self._now()
        if self._eta_at is not None:
            return max(self._eta_at - now, 0.0)
        if self.total and self._completed > 0:
            elapsed = now - self._started
            return elapsed * max(self.total - self._completed, 0.0) / self._completed
        return None

    def line(self) -> str:
        """The plain line for the state now: ``"simulating: 120/480 runs (25 %), 1:02
        elapsed, ~3:06 left — NL, slack 1.5"``."""
        done = self._completed
        if self.unit == "%":
            amount = f"{done:.1f} % done"
        elif self.total:
            amount = f"{done:g}/{self.total:g}{self.unit} ({100 * done / self.total:.0f} %)"
        else:
            amount = f"{done:g}{self.unit}" if done else "started"
        text = f"{self.description}: {amount}, {clock(self._now() - self._started)} elapsed"
        eta = self.eta_s()
        if eta is not None:
            text += f", ~{clock(eta)} left"
        return f"{text} — {self._detail}" if self._detail else text


# -- the terminal bar ----------------------------------------------------------------------


def _make_bar(console: Console, reporter: ProgressDisplay) -> Progress:
    """A transient rich bar: description, bar, share, the reporter's ETA and its detail, with
    the reporter's ``above`` renderable over it (rich imported only when a bar is drawn)."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """The reporter's time left: the caller's estimate if it gave one, else the rate."""

        def render(self, task: Task) -> Text:
            eta = reporter.eta_s()
            return Text("" if eta is None else f"~{clock(eta)} left", style="progress.remaining")

    class Bar(Progress):
        def get_renderables(self) -> Iterable[RenderableType]:
            if reporter.above is not None:
                yield reporter.above
            yield from super().get_renderables()

    return Bar(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        EtaColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        transient=True,
        refresh_per_second=4,
    )
