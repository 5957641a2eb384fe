"""eff_lr: the step size an adaptive optimizer currently applies to each layer.

Read from the optimizer's own state, as lr / (sqrt(mean second moment) + eps) over the layer's
elements: AdaGrad's accumulated sum (which only grows, so its step size collapses), RMSProp's
moving average, Adam's bias-corrected second moment, and for Adadelta the ratio of its two moving
averages. Optimizers without such state (SGD, momentum) report their learning rate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diagnose.monitor.statistics.base import ParameterStatistic, StepContext

# optimizer class name -> (state key of the second moment, how the mean second moment maps to
# a step size given the parameter group and the state)
Rule = Callable[[torch.Tensor, dict, dict], torch.Tensor]


def _adagrad(v: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
    return group["lr"] / (v.sqrt() + group["eps"])


def _adam(v: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
    step = float(state["step"])
    beta2 = group["betas"][1]
    v_hat = v / (1 - beta2 ** step) if step > 0 else v
    return group["lr"] / (v_hat.sqrt() + group["eps"])


SECOND_MOMENT: dict[str, tuple[str, Rule]] = {
    "Adagrad": ("sum", _adagrad),
    "RMSprop": ("square_avg", _adagrad),
    "Adam": ("exp_avg_sq", _adam),
    "AdamW": ("exp_avg_sq", _adam),
    "NAdam": ("exp_avg_sq", _adam),
    "RAdam": ("exp_avg_sq", _adam),
}


class EffectiveLR(ParameterStatistic):
    columns = ("eff_lr",)

    def compute(self, ctx: StepContext) -> torch.Tensor:
        layers, opt = ctx.layers, ctx.optimizer
        out = torch.full((len(layers),), float("nan"), device=layers.device)
        if opt is None:
            return out.reshape(1, -1)
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        per_layer: dict[int, list[tuple[torch.Tensor, dict, dict]]] = {}
        for p, layer in zip(layers.params, layers.owner.tolist()):
            if id(p) in group_of:
                per_layer.setdefault(layer, []).append((p, group_of[id(p)], opt.state.get(p, {})))
        for layer, items in per_layer.items():
            out[layer] = _layer_step_size(type(opt).__name__, items)
        return out.reshape(1, -1)


def _layer_step_size(name: str, items: list[tuple[torch.Tensor, dict, dict]]) -> torch.Tensor | float:
    """Step size of one layer from the mean of its second-moment state over all its elements."""
    _, group, state = items[0]
    n = sum(p.numel() for p, _, _ in items)

    def mean(key: str) -> torch.Tensor:
        return sum(s[key].sum() for _, _, s in items) / n

    if name == "Adadelta" and all("acc_delta" in s for _, _, s in items):
        eps = group["eps"]
        return group["lr"] * (mean("acc_delta") + eps).sqrt() / (mean("square_avg") + eps).sqrt()
    if name in SECOND_MOMENT:
        key, rule = SECOND_MOMENT[name]
        if all(key in s for _, _, s in items):
            return rule(mean(key), group, state)
    lr = group["lr"]
    return float(lr) if not isinstance(lr, torch.Tensor) else lr.detach().reshape(())
