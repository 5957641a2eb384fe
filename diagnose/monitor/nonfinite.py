"""NaN/Inf tracking: where the first non-finite value appeared, and how many each layer held.

Every step, the input and the output of each module that can *produce* a non-finite value from
finite inputs are summed on the device (a sum is NaN/Inf iff an element is, or it overflowed
float32, which means the values have exploded anyway). The sums are checked on the host at the
next flush, so the first step and the first module in forward order are known exactly without a
per-step sync.

On sampled steps the ``nonfinite`` column counts NaN/Inf values exactly. Counting costs two
passes over every output and gradient, and the answer is almost always zero; so we first test
all sums and gradient norms at once (one host sync per *sampled* step, not per step) and count
only in the tensors that hold a non-finite value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diagnose.monitor.layers import LayerParams, dense
from diagnose.monitor.statistics.base import StepContext

INPUT_NAME = "(input)"


def count_nonfinite(tensor: torch.Tensor) -> torch.Tensor:
    """Number of NaN/Inf elements: x * 0 is 0 for finite x and NaN otherwise."""
    return torch.count_nonzero(tensor * 0)


def _sum(t: torch.Tensor) -> torch.Tensor:
    # half-precision sums overflow early: accumulate them in float32 (a dtype argument costs a
    # few microseconds, so float32/float64 tensors go without it)
    return t.sum() if t.dtype in (torch.float32, torch.float64) else t.sum(dtype=torch.float32)


class NonFiniteTracker:
    """Per-step checks (origin) and per-sampled-step counts of non-finite values."""

    def __init__(self) -> None:
        self._checks: list[torch.Tensor] = []
        self._check_names: list[str] = []
        self._sampled: list[tuple[int, list[torch.Tensor], torch.Tensor]] = []
        self.first: dict[str, Any] | None = None

    @staticmethod
    def total(tensors: list[torch.Tensor]) -> torch.Tensor:
        """The sum of all elements of ``tensors`` (NaN/Inf iff one of them is), at least float32."""
        total = _sum(tensors[0])
        for t in tensors[1:]:
            total = total + _sum(t)
        return total

    def check(self, name: str, tensors: list[torch.Tensor], total: torch.Tensor | None = None) -> torch.Tensor:
        """Record this step's check of a module output (or the model input)."""
        total = self.total(tensors) if total is None else total
        self._checks.append(total)
        self._check_names.append(name)
        return total

    def check_one(self, name: str, tensor: torch.Tensor) -> None:
        """``check`` of one detached floating-point tensor: the every-step path, kept short."""
        self._checks.append(_sum(tensor))
        self._check_names.append(name)

    def keep_for_count(self, index: int, tensors: list[torch.Tensor], total: torch.Tensor) -> None:
        """On a sampled step: keep an output until the step ends, to count it if it is non-finite."""
        self._sampled.append((index, tensors, total))

    def end_step(self) -> tuple[tuple[str, ...], torch.Tensor] | None:
        """Close the step's checks: returns (names, sums) to buffer until the flush, or None."""
        checks = (tuple(self._check_names), torch.stack(self._checks)) if self._checks else None
        self._checks, self._check_names = [], []
        return checks

    def counts(self, ctx: StepContext | None) -> tuple[dict[int, float], np.ndarray | None]:
        """Exact NaN/Inf counts of this sampled step: per observed-module index, and per layer
        (gradients). Costs one host sync; the counting itself only runs where something is bad."""
        sampled, self._sampled = self._sampled, []
        squares = ctx.grad_squares() if ctx is not None and ctx.grads else None
        parts = ([torch.stack([t for _, _, t in sampled])] if sampled else []) + \
            ([squares] if squares is not None else [])
        if not parts:
            return {}, None
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        if bool(torch.isfinite(flat).all()):  # note: host sync, once per sampled step
            n_layers = len(ctx.layers) if ctx is not None else 0
            return {i: 0.0 for i, _, _ in sampled}, np.zeros(n_layers)
        # Past here something is non-finite (rare): the host reads below are the price of exact
        # counts, paid only then.
        outputs: dict[int, float] = {}
        for index, tensors, total in sampled:
            bad = not math.isfinite(float(total))  # host sync
            outputs[index] = outputs.get(index, 0.0) + (float(sum(count_nonfinite(t) for t in tensors)) if bad else 0.0)
        per_layer = None
        if ctx is not None and squares is not None:
            owner = ctx.grad_owner.tolist()  # host sync
            per_layer = np.zeros(len(ctx.layers))
            for g, square, layer in zip(ctx.grads, squares.tolist(), owner):  # host sync
                if not math.isfinite(square):
                    per_layer[layer] += float(count_nonfinite(dense(g)))  # host sync
        return outputs, per_layer

    def counted(self, ctx: StepContext | None, observed: Sequence[Any],
                layers: LayerParams) -> list[tuple[str, float]]:
        """This sampled step's exact NaN/Inf counts as (layer, count): each observed module's
        outputs, each layer's gradients (layers without a gradient are left out)."""
        outputs, grads = self.counts(ctx)
        found = [(obs.name, outputs[obs.index]) for obs in observed if obs.index in outputs]
        if grads is not None:
            found += [(name, float(grads[j])) for j, name in enumerate(layers.names) if j not in layers.missing]
        return found

    def gradient_origin(self, rows: Mapping[tuple[int, str], Mapping[str, float]],
                        names: Sequence[str]) -> dict[str, Any] | None:
        """A non-finite gradient norm among ``rows`` whose forward pass was finite came from the
        backward pass: the layer furthest along the model at the first such step (backward ran
        from there towards the input). Returns it if it is the first NaN/Inf known."""
        position = {name: i for i, name in enumerate(names)}
        bad = [(step, position[layer]) for (step, layer), cols in rows.items()
               if layer in position and "grad_norm" in cols and not math.isfinite(cols["grad_norm"])]
        if not bad:
            return None
        step = min(s for s, _ in bad)
        return self.offer(step, names[max(i for s, i in bad if s == step)], "gradient")

    def resolve_forward(self, step: int, names: tuple[str, ...], sums: np.ndarray) -> dict[str, Any] | None:
        """The first non-finite value of a step's forward pass, in forward order (host side)."""
        bad = ~np.isfinite(sums)
        if not bad.any():
            return None
        name = names[int(np.argmax(bad))]
        return self.offer(step, name, "input" if name == INPUT_NAME else "output")

    def offer(self, step: int, layer: str, where: str) -> dict[str, Any] | None:
        """Keep (step, layer, where) if it comes before what is known; returns it if it was kept."""
        order = {"input": 0, "output": 0, "gradient": 1}  # the forward pass precedes the backward
        if self.first is not None and (self.first["step"], order[self.first["where"]]) <= (step, order[where]):
            return None
        self.first = {"step": step, "layer": layer, "where": where}
        return self.first
