"""The policies' names: the :class:`Policy` enum and the name lists derived from it.

Light on purpose (no numpy): the command line names the policies in its help, and must not
import the planner to do so. :mod:`carbonscaler.planner.policies` re-exports all of it.
"""

from __future__ import annotations

import enum

__all__ = [
    "DEADLINE_AWARE",
    "POLICIES",
    "RUNNABLE_POLICIES",
    "RUNNABLE_POLICY_NAMES",
    "Policy",
]


class Policy(enum.StrEnum):
    """Every policy's one name. :meth:`parse` also takes the reference's names."""

    CARBONSCALER = "carbonscaler"
    EXACT = "exact"
    AGNOSTIC = "agnostic"
    SUSPEND_RESUME = "suspend-resume"
    SUSPEND_RESUME_THRESHOLD = "suspend-resume-threshold"
    STATIC = "static"
    STATIC_BEST = "static-best"

    @classmethod
    def parse(cls, name: str | Policy) -> Policy:
        """The policy called ``name`` (case-insensitive; ``scaler`` and ``fixed`` are the
        reference's names for ``carbonscaler`` and ``agnostic``).

        Raises:
            PlanningError: for an unknown name, listing the known ones.
        """
        key = str(name).strip().lower()
        key = _POLICY_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            from carbonscaler.planner.model import PlanningError  # numpy: only on this error

            raise PlanningError(
                f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)} "
                f"(or the reference's {', '.join(_POLICY_ALIASES)})"
            ) from None

    @property
    def runnable(self) -> bool:
        """Whether a running job (controller, operator) can follow it: a plan it re-makes."""
        return self in _RUNNABLE


_POLICY_ALIASES = {"scaler": "carbonscaler", "fixed": "agnostic"}
RUNNABLE_POLICIES: tuple[str, ...] = ("carbonscaler", "exact", "suspend-resume", "agnostic")
"""The policies a running job can follow (the controller, the operator)."""
RUNNABLE_POLICY_NAMES: tuple[str, ...] = (*RUNNABLE_POLICIES, *_POLICY_ALIASES)
"""What a job spec or resource may name: the runnable policies and the reference's aliases."""
_RUNNABLE = frozenset(Policy(p) for p in RUNNABLE_POLICIES)
POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)
# Policies that only ever look at the forecast up to the deadline.
DEADLINE_AWARE: frozenset[str] = frozenset(
    {"carbonscaler", "exact", "suspend-resume", "static-best"}
)
