"""eff_lr: the step size an adaptive optimizer currently applies to each layer.

Read from the optimizer's own state as the SGD-equivalent learning rate: lr / (RMS + eps), where
RMS = sqrt(mean v) over the layer's elements, v being AdaGrad's accumulated sum of squared
gradients (which only grows, so its step size collapses), RMSProp's moving average or the Adam
family's bias-corrected second moment. When the gradient's square tracks v, an update is
lr * g / sqrt(v) per element, so ||Δθ|| = eff_lr * ||g||: the number is the rate plain SGD would
need to take the same step. Adadelta reports lr * mean sqrt(E[Δθ²] + eps) / mean sqrt(E[g²] + eps).
Only elements that ever received a gradient count (v > 0): an embedding table's unused rows would
otherwise pull the mean toward 0 and the rate toward lr / eps. Optimizers without such state (SGD,
momentum) report their learning rate.

Cost, on sampled steps only and without a per-layer host read: one sum per state tensor (a fused
``_foreach_norm(v, 1)`` on accelerators; per-tensor sums on the CPU, where the fused kernel is 5x
slower), plus the count of elements with v > 0: on accelerators a fused ``_foreach_norm(v, 0)``
with no host read; on the CPU each tensor is counted once by the sum of its signs, and from then
on only the positions where v was still 0 are looked at (a gather of 25 % or less; the
counts are read on the host, free there). Once positive, an element of v stays positive:
AdaGrad's sum never falls and the moving averages only decay; a float32 average decays to 0 only
after ~80 000 (Adam, β2 = 0.999) or ~8 000 (RMSProp, α = 0.99) steps without a gradient for that
element, which the CPU path still counts (it got a gradient once) and the accelerator path no
longer does.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch

from diagnose.monitor.layers import LayerParams
from diagnose.monitor.statistics.base import Observation, ParameterStatistic, StepContext, register_statistic

# optimizer class -> the state key of its second moment, and whether it is Adam's (bias-corrected)
SECOND_MOMENT: dict[str, tuple[str, bool]] = {
    "Adagrad": ("sum", False),
    "RMSprop": ("square_avg", False),
    "Adam": ("exp_avg_sq", True),
    "AdamW": ("exp_avg_sq", True),
    "NAdam": ("exp_avg_sq", True),
    "RAdam": ("exp_avg_sq", True),
    "SparseAdam": ("exp_avg_sq", True),
}


def foreach_sums(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum of each non-negative tensor, stacked: the fused 1-norm off the CPU, per-tensor sums on it."""
    if tensors[0].device.type == "cpu":
        return torch.stack([t.sum() for t in tensors])
    return torch.stack(torch._foreach_norm(list(tensors), 1))


@register_statistic
class EffectiveLR(ParameterStatistic):
    name = "effective_lr"
    columns = ("eff_lr",)

    def __init__(self) -> None:
        # per state tensor (by id): the positions where v was still 0 at the last sampled step, or
        # None when that is most of it; the weak reference tells a live tensor from a new one that
        # reuses a freed id
        self._zeros: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor | None]] = {}

    def compute(self, ctx: StepContext) -> torch.Tensor:
        layers, opt = ctx.layers, ctx.optimizer
        if opt is None:
            return torch.full((1, len(layers)), float("nan"), device=layers.device)
        name = type(opt).__name__
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        rows = [(p, layer, group_of[id(p)], opt.state.get(p, {})) for p, layer in zip(layers.params, layers.owner_ids)
                if id(p) in group_of]
        if name == "Adadelta":
            return _adadelta(rows, torch.full((len(layers),), float("nan"), device=layers.device)).reshape(1, -1)
        key, adam = SECOND_MOMENT.get(name, (None, False))
        with_state = [(layer, group, state) for _, layer, group, state in rows if key is not None and key in state]
        lr_eps: dict[int, tuple[float, float]] = {}
        for _, layer, group, _ in rows:
            lr_eps.setdefault(layer, (float(group["lr"]), float(group.get("eps", 0.0))))
        n = len(layers)
        lr = layers.constant([lr_eps.get(i, (math.nan, 0.0))[0] for i in range(n)])
        if not with_state:  # no second moment: the learning rate is the step size
            return lr.reshape(1, -1).clone()  # not a view of the cached constant
        v = [state[key] for _, _, state in with_state]
        sums = foreach_sums(v).float()
        if adam:  # v̂ = v / (1 - β2^t)
            sums = sums * _bias_corrections(with_state, layers)
        owner = layers.constant([layer for layer, _, _ in with_state], torch.long)
        mean = layers.sum_per_layer(sums, owner) / layers.sum_per_layer(self._counts(v, layers), owner)
        eps = layers.constant([lr_eps.get(i, (math.nan, 0.0))[1] for i in range(n)])
        stated = {layer for layer, _, _ in with_state}
        has = layers.constant([i in stated for i in range(n)], torch.bool)
        # NaN for layers without state, and 0/0 for those where no element got a gradient yet
        return torch.where(has, lr / (mean.sqrt() + eps), math.nan).reshape(1, -1)

    def _counts(self, v: list[torch.Tensor], layers: LayerParams) -> torch.Tensor:
        """The number of elements of each state tensor that ever had v > 0 at a sampled step. On
        an accelerator one fused count (the 0-norm) of all of them, no host read. On the CPU each
        tensor is counted once in full; after that only its elements that were still 0 are looked
        at (a gather of those positions), while they are at most ``_TRACKED`` of it; a tensor
        mostly at 0 (an embedding table's unused rows) is counted again by the sum of its signs."""
        if layers.device.type != "cpu":
            return torch.stack(torch._foreach_norm(v, 0)).float()
        sizes: list[float] = []
        for t in v:
            flat = t.reshape(-1)
            known = self._zeros.get(id(t))
            ref = known[0] if known is not None and known[0]() is t else None
            tracked = known[1] if ref is not None and known is not None else None
            if tracked is not None:
                if tracked.numel() and (seen := torch.index_select(flat, 0, tracked)).any():  # v > 0 at new places
                    tracked = tracked[seen == 0]
                sizes.append(float(flat.numel() - tracked.numel()))
            else:  # first sight, or most of it at 0: count the positives (float32 is exact below 2^24)
                positives = float(flat.sign().sum(dtype=torch.float64 if flat.numel() > 2**24 else torch.float32))
                if flat.numel() - positives <= _TRACKED * flat.numel() and flat.numel() < 2**31:
                    tracked = (flat == 0).nonzero().reshape(-1).int()
                sizes.append(positives)
            if ref is None:  # a tensor not seen alive before: forget those that are gone
                self._forget_freed()
                ref = weakref.ref(t)
            self._zeros[id(t)] = (ref, tracked)
        return layers.constant(sizes)

    def _forget_freed(self) -> None:
        """Drop the entries of state tensors that no longer exist (a reloaded optimizer)."""
        for key in [k for k, (ref, _) in self._zeros.items() if ref() is None]:
            del self._zeros[key]

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        opt = obs.optimizer
        if opt is None or not obs.params:
            return None
        group = next(g for g in opt.param_groups if any(p is obs.params[0] for p in g["params"]))
        lr, name = float(group["lr"]), type(opt).__name__
        states = [{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in opt.state.get(p, {}).items()}
                  for p in obs.params]
        if name == "Adadelta" and all("acc_delta" in s for s in states):
            eps = group["eps"]
            got = torch.cat([(s["square_avg"] > 0).flatten() for s in states])
            delta = torch.cat([(s["acc_delta"] + eps).sqrt().flatten() for s in states])[got]
            grad = torch.cat([(s["square_avg"] + eps).sqrt().flatten() for s in states])[got]
            return (float(lr * delta.mean() / grad.mean()),)
        if name in SECOND_MOMENT and all(SECOND_MOMENT[name][0] in s for s in states):
            key, adam = SECOND_MOMENT[name]
            corrected = [s[key] / (1 - group["betas"][1] ** float(s["step"])) if adam else s[key] for s in states]
            v = torch.cat([c.flatten() for c in corrected])
            return (float(lr / (v[v > 0].mean().sqrt() + group["eps"])),)
        return (lr,)


# The largest fraction of a state tensor's elements at 0 whose positions are kept, as int32: at
# most a quarter of the tensor's own memory (a layer with many dead units); beyond it, or past
# 2^31 elements, the tensor is counted again at each sampled step.
_TRACKED = 0.25


def _bias_corrections(with_state: list[tuple[int, dict, dict]], layers: LayerParams) -> torch.Tensor | float:
    """1 / (1 - β2^t) per state tensor: Adam's bias correction of v at its step t (1 before a step).
    Steps kept on the CPU (every optimizer but a capturable or fused one) are read there: one
    number when every tensor is at the same step and β2, no device work."""
    steps = [state["step"] for _, _, state in with_state]
    betas = [float(group["betas"][1]) for _, group, _ in with_state]
    if all(not isinstance(t, torch.Tensor) or t.device.type == "cpu" for t in steps):
        host = [float(t) for t in steps]
        factors = [1 / (1 - b ** t) if t > 0 else 1.0 for b, t in zip(betas, host)]
        return factors[0] if len(set(factors)) == 1 else torch.tensor(factors, device=layers.device)
    beta2 = layers.constant(betas, torch.float64)
    t = torch.stack([s if isinstance(s, torch.Tensor) else torch.tensor(float(s)) for s in steps]).to(
        device=layers.device, dtype=torch.float64)
    return torch.where(t > 0, 1 / (1 - beta2 ** t), 1.0).float()


def _adadelta(rows: list, out: torch.Tensor) -> torch.Tensor:
    """lr * mean sqrt(E[Δθ²] + eps) / mean sqrt(E[g²] + eps) per layer, over elements with E[g²] > 0."""
    with_state = [(layer, group, state) for _, layer, group, state in rows if "acc_delta" in state]
    if not with_state:
        return out
    by_layer: dict[int, list[tuple[dict, dict]]] = {}
    for layer, group, state in with_state:
        by_layer.setdefault(layer, []).append((group, state))
    for layer, items in by_layer.items():  # Adadelta is rare: a loop over layers is fine here
        eps, lr = items[0][0]["eps"], items[0][0]["lr"]
        got = torch.cat([(s["square_avg"] > 0).flatten() for _, s in items])
        delta = torch.cat([(s["acc_delta"] + eps).sqrt().flatten() for _, s in items])[got]
        grad = torch.cat([(s["square_avg"] + eps).sqrt().flatten() for _, s in items])[got]
        out[layer] = lr * delta.mean() / grad.mean() if got.any() else float("nan")
    return out
