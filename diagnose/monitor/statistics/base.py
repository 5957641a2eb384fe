"""Template methods for statistics: subclasses say *what* to compute; the watch handles cadence,
device buffers, the host copy and storage.

Two kinds:

- ``OutputStatistic``: computed on a module's output in its forward hook, on sampled steps. Each
  call yields ``width`` accumulators as 0-d device tensors (``partial``); the calls of one step are
  combined (``combine``), stacked with every other statistic's into one tensor per step, and
  turned into column values on the host at flush time (``finalize``): no per-step host sync, and
  no device work beyond the reductions themselves.
- ``ParameterStatistic``: computed once per optimizer step over every layer's parameters with
  fused multi-tensor ops; returns a (len(columns), n_layers) device tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from diagnose.monitor.layers import LayerParams, foreach_squares
from diagnose.registry import Registry

S = TypeVar("S", bound="Statistic")


# (column, title, log colour scale): a per-layer step heatmap in the report
Plot = tuple[str, str, bool]


@dataclass
class Observation:
    """What a statistic's oracle sees of one layer at one step, in float64, taken by plain hooks
    in the tests (tests/monitor/test_statistics.py): the reference the fused computation must match."""

    module: nn.Module
    outputs: list[torch.Tensor]            # every floating output of the step's forward calls
    before: list[torch.Tensor]             # the layer's own parameters before the step's update
    after: list[torch.Tensor]              # and after it
    grads: list[torch.Tensor]              # their gradients as the optimizer used them
    optimizer: torch.optim.Optimizer | None
    params: list[nn.Parameter]             # the live parameters (keys of the optimizer's state)


class Statistic:
    """What every statistic declares: its columns in ``layer_stats()``, the report's per-layer
    plots of them, and an oracle (a plain float64 reference the tests check it against)."""

    name: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ()
    plots: ClassVar[tuple[Plot, ...]] = ()
    default: ClassVar[bool] = True   # recorded unless the user passes their own list

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        """The columns' values from plain float64 tensors; None where the statistic does not apply."""
        raise NotImplementedError


STATISTICS: Registry[type[Statistic]] = Registry("statistic")


def register_statistic(cls: type[S]) -> type[S]:
    """Class decorator: add a statistic to the registry (store columns, report plots and the
    oracle test follow from it)."""
    STATISTICS.add(cls.name, cls)
    return cls


class OutputStatistic(Statistic):
    """A statistic of module outputs. Subclasses set ``columns``/``width`` and write ``partial``."""

    width: ClassVar[int] = 1          # numbers per module per step after ``reduce``
    single_tensor_only: ClassVar[bool] = False  # skip tuple/dict outputs (e.g. unit-wise statistics)
    # The first accumulator is the output's plain sum (float32, or float64 for float64 outputs):
    # on sampled steps the NaN/Inf origin check reuses it instead of summing the output again.
    first_is_sum: ClassVar[bool] = False

    def applies_to(self, module: nn.Module) -> bool:
        """Whether to compute this statistic for ``module`` at all (decided once, at attach)."""
        return True

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        """``width`` accumulators (0-d tensors) for one floating-point output tensor."""
        raise NotImplementedError

    def combine(self, partials: list[tuple[int, Sequence[torch.Tensor]]]) -> Sequence[torch.Tensor | float]:
        """Merge the ``(call_index, partial)`` pairs of one step into ``width`` numbers (0-d tensors
        or host floats); default: add them up."""
        if len(partials) == 1:
            return partials[0][1]
        return [sum(p[i] for _, p in partials) for i in range(self.width)]

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        """Column values from the reduced numbers; ``count`` is the number of output elements seen."""
        raise NotImplementedError


@dataclass
class StepContext:
    """What parameter statistics see at an optimizer step; shared results are computed once."""

    layers: LayerParams
    optimizer: torch.optim.Optimizer | None
    grads: list[torch.Tensor]
    grad_owner: torch.Tensor
    snapshot: list[torch.Tensor] | None  # the parameters before this step's update, if taken
    _cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def provide(self, *, weights_before: torch.Tensor | None = None, update: torch.Tensor | None = None) -> None:
        """Results known without the snapshot (the watch's pre-step hook, a closed-form update)."""
        if weights_before is not None:
            self._cache["before"] = weights_before
        if update is not None:
            self._cache["update"] = update

    def grad_squares(self) -> torch.Tensor:
        """The squared L2 norm of each present gradient (``foreach_squares``, shared by every
        statistic and the NaN/Inf counts)."""
        if "grad_squares" not in self._cache:
            self._cache["grad_squares"] = (foreach_squares(self.grads) if self.grads
                                           else torch.zeros(0, device=self.layers.device))
        return self._cache["grad_squares"]

    def grad_norms(self) -> torch.Tensor:
        """Per-layer gradient norm; NaN for layers without a gradient."""
        if "grad" not in self._cache:
            norms = self.layers.sum_per_layer(self.grad_squares(), self.grad_owner).sqrt_()
            self._cache["grad"] = norms if self.layers.all_grads else self.layers.mask_missing(norms)
        return self._cache["grad"]

    def weight_norms_before(self) -> torch.Tensor:
        """Per-layer norm of the parameters before the update (now, if no snapshot was taken)."""
        if "before" not in self._cache:
            params = self.snapshot if self.snapshot is not None else self.layers.params  # under no_grad
            self._cache["before"] = self.layers.norms(params)
        return self._cache["before"]

    def update_norms(self) -> torch.Tensor | None:
        """Per-layer norm of this step's update Δθ, or None without a snapshot.

        Computed in place in the snapshot buffer (no allocation), so the snapshot is used up:
        its norms are taken first and cached.
        """
        if "update" not in self._cache:
            if self.snapshot is None:
                return None
            self.weight_norms_before()
            self._cache["update"] = self.layers.update_norms(self.snapshot)  # the snapshot is now -Δθ
            self.snapshot = None
        return self._cache["update"]


class ParameterStatistic(Statistic):
    """A per-layer statistic of parameters, gradients or optimizer state."""

    every_step: ClassVar[bool] = False      # cheap enough to compute at every step
    needs_snapshot: ClassVar[bool] = False  # needs the parameters from before the update
    uses_grads: ClassVar[bool] = False      # not recorded for layers that had no gradient

    def compute(self, ctx: StepContext) -> torch.Tensor:
        """A (len(columns), n_layers) tensor; NaN where a value does not apply."""
        raise NotImplementedError
