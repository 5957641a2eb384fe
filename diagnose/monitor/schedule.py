"""When the watch does what: the one place that decides, step by step.

- every step: the NaN/Inf origin check (a sum per checked output) and the step count;
- sampled steps (every ``every`` steps, counted from the run's first step): every statistic;
- a flush (one host copy, then the store's thread writes) every ``flush_every`` steps or
  ``flush_seconds``, whichever comes first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    """What runs on one step."""

    sampled: bool        # the costlier statistics are recorded
    next_sampled: bool   # the step after it is sampled too: keep the sampling hooks attached


class Schedule:
    """The cadence of a watch: statistics every ``every`` steps from ``start``, flushes every
    ``flush_every`` steps or ``flush_seconds``."""

    def __init__(self, start: int, every: int, flush_every: int, flush_seconds: float) -> None:
        self.start, self.every = start, every
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._since_flush = 0
        self._last_flush = time.monotonic()

    def plan(self, step: int) -> StepPlan:
        """What runs on ``step``."""
        return StepPlan(sampled=self._sampled(step), next_sampled=self._sampled(step + 1))

    def _sampled(self, step: int) -> bool:
        return (step - self.start) % self.every == 0

    def step_done(self) -> bool:
        """Count a finished step; True when a flush is due."""
        self._since_flush += 1
        return (self._since_flush >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds)

    def flushed(self) -> None:
        """Restart the flush counters."""
        self._since_flush = 0
        self._last_flush = time.monotonic()
