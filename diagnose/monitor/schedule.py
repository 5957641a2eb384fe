"""When the watch does what: the one place that decides, step by step.

- every step: the NaN/Inf origin check (a sum per checked output) and the step count;
- sampled steps (every ``every`` steps, counted from the run's first step): every statistic;
- a flush (one host copy, then the store's thread writes) every ``flush_every`` steps or
  ``flush_seconds``, whichever comes first.

With an overhead budget (``dg.watch(..., overhead=0.03)``) the cadence is not fixed: the watch
times its own work (the seconds spent in its hooks) against the training step's, and after each
sampled step sets ``every`` so that its own share stays under the budget:
``(own per step + extra of a sampled step / every) / plain step <= budget``. The own time per
step is the mean over every unsampled step so far, so the flushes they carry count. The extra of a
sampled step is the larger of two medians: its own seconds beyond an unsampled step's, and its
wall-clock seconds beyond an unsampled step's, which also holds what the hooks cost outside
themselves (torch calling them, the caches they evict).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass

# Budgeted cadence: how many recent steps the estimates use, and the cadence's bounds (a sample at
# least every MAX_EVERY steps, so a long run still has statistics). The first steps are sampled
# every START_EVERY steps until there is something to measure.
WINDOW = 20
START_EVERY = 10
MAX_EVERY = 5000
# The measured overhead is over the training steps' time: the time between two steps beyond this
# many typical steps is a pause (an evaluation, a checkpoint, other work), not training.
PAUSE = 5


@dataclass(frozen=True)
class StepPlan:
    """What runs on one step."""

    sampled: bool        # the costlier statistics are recorded
    next_sampled: bool   # the step after it is sampled too: keep the sampling hooks attached


class Schedule:
    """The cadence of a watch: statistics every ``every`` steps from ``start`` (or under an
    overhead ``budget``), flushes every ``flush_every`` steps or ``flush_seconds``."""

    def __init__(self, start: int, every: int, flush_every: int, flush_seconds: float,
                 budget: float | None = None) -> None:
        self.start, self.budget = start, budget
        self.every = START_EVERY if budget is not None else every
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._next = start                  # the next sampled step
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._plain: deque[float] = deque(maxlen=WINDOW)     # step seconds without the watch's own
        self._own: deque[float] = deque(maxlen=WINDOW)       # the watch's seconds, unsampled steps
        self._sampled_own: deque[float] = deque(maxlen=5)    # the watch's seconds, sampled steps
        self._wall: deque[float] = deque(maxlen=WINDOW)      # step seconds, unsampled steps
        self._sampled_wall: deque[float] = deque(maxlen=5)   # step seconds, sampled steps
        self.own_seconds = 0.0
        self.step_seconds = 0.0
        self._typical = math.inf  # median step seconds without the watch's own, refreshed when sampled
        self._unsampled_own = 0.0   # the watch's seconds over every unsampled step, and their count
        self._unsampled = 0
        # the share of the every-step work (NaN/Inf checks, step hooks, logging), once measured:
        # when it alone is over the budget, no cadence can meet it (the watch says so)
        self.every_step_share: float | None = None

    def plan(self, step: int) -> StepPlan:
        """What runs on ``step``."""
        return StepPlan(sampled=step == self._next, next_sampled=step + 1 == self._next_after(step))

    def _next_after(self, step: int) -> int:
        return self._next if step < self._next else step + self.every

    def step_done(self, step: int, sampled: bool, own: float, seconds: float) -> bool:
        """Count a finished step (the watch's own seconds in it, the step's seconds, 0 when
        unknown); returns True when a flush is due."""
        self._since_flush += 1
        self.own_seconds += own
        if seconds > 0:
            self.step_seconds += own + min(max(seconds - own, 0.0), PAUSE * self._typical)
            (self._sampled_own if sampled else self._own).append(own)
            (self._sampled_wall if sampled else self._wall).append(seconds)
            if not sampled:
                self._unsampled_own += own
                self._unsampled += 1
                self._plain.append(max(seconds - own, 1e-9))
        if sampled:
            if len(self._plain) >= 3:
                self._typical = statistics.median(self._plain)
            if self.budget is not None:
                self.every = self._budgeted()
            self._next = step + self.every
        return (self._since_flush >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_seconds)

    def _budgeted(self) -> int:
        """The smallest cadence that keeps the watch's share under the budget."""
        if len(self._plain) < 3 or not self._sampled_own:
            return self.every
        plain = statistics.median(self._plain)
        always = self._unsampled_own / self._unsampled if self._unsampled else 0.0
        extra = max(statistics.median(self._sampled_own) - (statistics.median(self._own) if self._own else 0.0),
                    statistics.median(self._sampled_wall) - statistics.median(self._wall), 0.0)
        self.every_step_share = always / plain
        room = self.budget * plain - always if self.budget is not None else 0.0
        if room <= 0:
            return MAX_EVERY  # the every-step checks alone use the budget: sample as rarely as allowed
        return int(min(max(math.ceil(extra / room - 1e-9), 1), MAX_EVERY))  # - 1e-9: 5e-3 / 2e-4 is 25.000000000000004

    @property
    def measured_overhead(self) -> float | None:
        """The watch's own seconds over the rest of the steps' seconds, so far (a pause between
        steps counts as ``PAUSE`` typical steps at most)."""
        rest = self.step_seconds - self.own_seconds
        return self.own_seconds / rest if self.step_seconds > 0 and rest > 0 else None

    def flushed(self) -> None:
        """Restart the flush counters."""
        self._since_flush = 0
        self._last_flush = time.monotonic()
