"""The modules a watch observes, and their output statistics over one sampled step.

On a sampled step each forward call of an observed module adds one partial per statistic (0-d
device tensors); at the step's end the partials of each (module, statistic) are combined and
stacked into one ``OutputRecord``: no host sync until the flush.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from diagnose.monitor.buffer import OutputRecord
from diagnose.monitor.layers import is_parametrization, layer_name, unwrap
from diagnose.monitor.statistics import OutputStatistic

# Modules that cannot turn finite inputs into NaN/Inf: never the origin of a non-finite value,
# so the per-step origin check skips them (they only propagate what they were given).
PROPAGATE_ONLY: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Hardsigmoid, nn.Softsign,
    nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


def output_tensors(output: Any, depth: int = 0) -> list[torch.Tensor]:
    """The floating-point tensors inside a module output (tuples, lists, dicts, PackedSequence)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, PackedSequence):
        return output_tensors(output.data, depth + 1)
    if depth > 3:
        return []
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in output_tensors(item, depth + 1)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in output_tensors(item, depth + 1)]
    return []


class Observed:
    """A hooked module: its name, its statistics, and whether it can originate a NaN/Inf (then its
    output is checked every step)."""

    def __init__(self, index: int, name: str, module: nn.Module, stats: list[tuple[int, OutputStatistic]]) -> None:
        self.index, self.name, self.module, self.stats = index, name, module, stats
        self.can_originate = not isinstance(module, PROPAGATE_ONLY)
        self.keys = [f"{type(stat).__name__}@{name}" for _, stat in stats]  # error keys, built once


def is_noop(module: nn.Module) -> bool:
    """A module that returns its input unchanged: ``nn.Identity``, dropout with ``p=0`` (timm and
    transformers fill models with them; their output is their input's, already recorded)."""
    return isinstance(module, nn.Identity) or (isinstance(module, nn.modules.dropout._DropoutNd) and module.p == 0)


def observed_modules(model: nn.Module, statistics: Sequence[OutputStatistic],
                     noops: bool = False) -> list[Observed]:
    """Leaf modules and modules that own parameters, in ``named_modules`` order (of a compiled
    model's original). Left out: a parametrization's modules (their output is a weight, not an
    activation: the parametrized module is the layer), and modules that do nothing unless ``noops``."""
    observed: list[Observed] = []
    for name, module in unwrap(model).named_modules():
        if is_parametrization(name) or (not noops and is_noop(module)):
            continue
        is_leaf = next(iter(module.children()), None) is None
        owns = next(iter(module.parameters(recurse=False)), None) is not None
        parametrized = hasattr(module, "parametrizations")
        if is_leaf or owns or parametrized:
            stats = [(i, s) for i, s in enumerate(statistics) if s.applies_to(module)]
            observed.append(Observed(len(observed), layer_name(name), module, stats))
    return observed


class OutputStatistics:
    """The partial statistics of one sampled step, per (module, statistic)."""

    def __init__(self, observed: list[Observed], fail: Callable[[str, Exception], None],
                 failed: Callable[[str], bool]) -> None:
        self.observed = observed
        self._fail, self._failed = fail, failed
        self._partials: dict[tuple[int, int], list[tuple[int, Sequence[torch.Tensor]]]] = {}
        self._counts: dict[int, int] = {}
        self._calls: dict[int, int] = {}  # calls of each module in the current forward pass
        # The order modules ran in at the first sampled step: which layer feeds which (findings
        # use it to know the layers whose output a normalization layer rescales).
        self._order: dict[str, None] | None = {}
        # the last step's shape and the record layout built for it (see end_step)
        self._signature: tuple = ()
        self._layout: tuple = ([], np.empty(0), np.empty(0, dtype=int), [])
        self._nans: dict[torch.device, torch.Tensor] = {}

    def new_forward(self) -> None:
        """A forward pass of the model starts: call positions count from 0 again."""
        self._calls.clear()

    def add(self, obs: Observed, output: Any, tensors: list[torch.Tensor]) -> torch.Tensor | None:
        """One forward call's partials (under no_grad, on detached tensors). Returns the sum of
        the outputs when a statistic computed it (``first_is_sum``), for the NaN/Inf check."""
        call = self._calls.get(obs.index, 0)
        self._calls[obs.index] = call + 1
        if self._order is not None:
            self._order.setdefault(obs.name)
        self._counts[obs.index] = self._counts.get(obs.index, 0) + sum(t.numel() for t in tensors)
        total = None
        single = len(tensors) == 1
        for (k, stat), key in zip(obs.stats, obs.keys):
            if stat.single_tensor_only and not isinstance(output, torch.Tensor):
                continue
            if self._failed(key):
                continue
            try:
                if single:
                    part = stat.partial(tensors[0], obs.module)
                else:
                    parts = [stat.partial(t, obs.module) for t in tensors]
                    part = [torch.stack([p[i] for p in parts]).sum() for i in range(stat.width)]
            except Exception as err:  # noqa: BLE001 - a broken statistic must not stop training
                self._fail(key, err)
                continue
            if total is None and stat.first_is_sum:
                total = part[0]
            self._partials.setdefault((obs.index, k), []).append((call, part))
        return total

    def forward_order(self) -> list[str] | None:
        """The modules in the order they first ran, once, after the first sampled step."""
        if not self._order:
            return None
        order, self._order = list(self._order), None
        return order

    def end_step(self, step: int, device: torch.device) -> OutputRecord:
        """Combine the step's partials into one record (values stay on the device) and reset.
        The record's layout is built again only when the step's shape changes (which modules ran,
        how often, on how many elements): most steps only combine and stack."""
        signature = (tuple(self._counts.items()), tuple((slot, len(p)) for slot, p in self._partials.items()))
        if signature != self._signature:
            self._signature = signature
            self._layout = self._build_layout()
        layout, template, device_at, combined = self._layout
        on_device: list[torch.Tensor] = []
        host: list[float] = []
        for slot, stat, key in combined:
            values: Sequence[torch.Tensor | float] | None = None
            try:
                values = stat.combine(self._partials[slot])
            except Exception as err:  # noqa: BLE001 - a broken statistic must not stop training
                self._fail(key, err)
            if values is None or len(values) != stat.width:
                values = [math.nan] * stat.width
            for v in values:
                if isinstance(v, torch.Tensor):
                    on_device.append(v if v.ndim == 0 else v.reshape(()))
                    host.append(math.nan)
                else:
                    on_device.append(self._nan(device))
                    host.append(float(v))
        self._partials.clear()
        self._counts.clear()
        # stacked straight into float64 (float32 under MPS, which has no float64): counts above
        # 2**24 stay exact, float64 sums keep their precision
        dtype = torch.float32 if device.type == "mps" else torch.float64
        stacked = torch.empty(len(on_device), dtype=dtype, device=device)
        if on_device:
            torch.stack([v if v.device == device else v.to(device) for v in on_device], out=stacked)
        filled = template.copy()
        filled[device_at] = host  # the host numbers; NaN where the value is on the device
        return OutputRecord(step, layout, filled, device_at, stacked)

    def _nan(self, device: torch.device) -> torch.Tensor:
        """A 0-d NaN on ``device``, made once: the stand-in for a value known on the host."""
        nan = self._nans.get(device)
        if nan is None:
            nan = self._nans[device] = torch.tensor(math.nan, device=device)
        return nan

    def _build_layout(self) -> tuple[list[tuple[str, int, OutputStatistic]], np.ndarray, np.ndarray,
                                     list[tuple[tuple[int, int], OutputStatistic, str]]]:
        """Every (module, statistic) in order with its element count; the template of host values
        (NaN for a statistic without partials this step); where the combined values go in it; the
        (module, statistic) pairs that have partials."""
        layout: list[tuple[str, int, OutputStatistic]] = []
        template: list[float] = []
        device_at: list[int] = []
        combined: list[tuple[tuple[int, int], OutputStatistic, str]] = []
        for obs in self.observed:
            count = self._counts.get(obs.index, 0)
            for (k, stat), key in zip(obs.stats, obs.keys):
                layout.append((obs.name, count, stat))
                if (obs.index, k) in self._partials:
                    combined.append(((obs.index, k), stat, key))
                    device_at.extend(range(len(template), len(template) + stat.width))
                template.extend([math.nan] * stat.width)
        return layout, np.array(template, dtype=float), np.array(device_at, dtype=int), combined
