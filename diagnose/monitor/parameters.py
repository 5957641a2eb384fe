"""The parameter statistics of sampled steps (gradient, weight and update norms, effective lr),
and the one copy of the parameters some optimizers need for the update.

Memory: for SGD (plain or with momentum, no weight decay, not Nesterov) the update comes in
closed form (``sgd_update.py``) and nothing is copied. Every other optimizer keeps **one copy of
the parameters** for the whole run, allocated at the first sampled step and refreshed right
before each sampled ``optimizer.step()`` (its pre-step hook), so that the update measured is the
optimizer's own: weights the user changes between steps (a WGAN's clipping) are not counted as
part of it. Its cost is one ``_foreach_copy_``, whose norms (the weight norms) are taken right
after it while the copy is in the cache; after the step the copy becomes -Δθ in place and its norm
is the update's. Without an optimizer (``run.step()``) the copy is taken when the step starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from diagnose.monitor import sgd_update
from diagnose.monitor.buffer import ParameterRecord
from diagnose.monitor.layers import LayerParams
from diagnose.monitor.statistics import ParameterStatistic, StepContext


class ParameterStatistics:
    """Computes the registered parameter statistics at the end of a sampled step."""

    def __init__(self, layers: LayerParams, optimizer: torch.optim.Optimizer | None,
                 statistics: Sequence[ParameterStatistic], fail: Callable[[str, Exception], None],
                 failed: Callable[[str], bool]) -> None:
        self.layers, self.optimizer, self.statistics = layers, optimizer, list(statistics)
        self._fail, self._failed = fail, failed
        self.needs_snapshot = any(s.needs_snapshot for s in self.statistics) and bool(layers.params)
        self._snapshot: list[torch.Tensor] | None = None  # allocated once, reused
        self._snapshot_step: int | None = None
        self._weights_before: torch.Tensor | None = None

    def begin_step(self, step: int) -> None:
        """A sampled step starts: without an optimizer (no pre-step hook), copy the parameters now."""
        if self.optimizer is None:
            self._copy(step)

    def before_update(self, step: int) -> None:
        """``optimizer.step()`` is about to run on a sampled step: copy the parameters the update
        will move, or with SGD's closed-form update just measure their norms."""
        if not self.needs_snapshot:
            return
        if sgd_update.supports(self.optimizer):
            with torch.no_grad():  # under no_grad the parameters themselves go in, without detach()
                self._weights_before = self.layers.norms(self.layers.params)
        else:
            self._copy(step)

    def _copy(self, step: int) -> None:
        if not self.needs_snapshot:
            return
        params: list[torch.Tensor] = list(self.layers.params)
        with torch.no_grad():
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(p) for p in params]
            torch._foreach_copy_(self._snapshot, params)
            # their norms now, while the copy is still in the cache (a pass less from memory later)
            self._weights_before = self.layers.norms(self._snapshot)
        self._snapshot_step = step

    def end_step(self, step: int) -> tuple[StepContext, list[ParameterRecord]]:
        """The step's records, one per statistic (values stay on the device), and the context the
        NaN/Inf counts reuse (its gradient norms)."""
        grads, owner = self.layers.grads()
        ctx = StepContext(self.layers, self.optimizer, grads, owner,
                          self._snapshot if self._snapshot_step == step else None)
        if self._weights_before is not None:
            if ctx.snapshot is not None:
                ctx.provide(weights_before=self._weights_before)
            elif sgd_update.supports(self.optimizer) and self._snapshot_step is None:
                ctx.provide(weights_before=self._weights_before,
                            update=sgd_update.sgd_update_norms(self.optimizer, self.layers))  # type: ignore[arg-type]
            self._weights_before = None
        self._snapshot_step = None
        records = []
        for stat in self.statistics:
            key = type(stat).__name__
            if self._failed(key):
                continue
            try:
                values = stat.compute(ctx)
            except Exception as err:  # noqa: BLE001 - a broken statistic must not stop training
                self._fail(key, err)
                continue
            missing = self.layers.missing if stat.uses_grads else frozenset()
            records.append(ParameterRecord(step, stat.columns, self.layers.names, missing, values))
        return ctx, records
