"""eff_lr: the step size an adaptive optimizer currently applies to each layer.

Read from the optimizer's own state, per element: lr / (sqrt(v) + eps) with v AdaGrad's
accumulated sum (which only grows, so its step size collapses), RMSProp's moving average or
Adam's bias-corrected second moment; for Adadelta lr * RMS[Δθ] / RMS[g] from its two moving
averages. A layer's value is the median over its elements: a mean would be ruled by the few
elements with the largest (or zero) second moments. Optimizers without such state (SGD,
momentum) report their learning rate. Costs one pass and a median over the optimizer state, on
sampled steps only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diagnose.monitor.statistics.base import Observation, ParameterStatistic, StepContext, register_statistic

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


@register_statistic
class EffectiveLR(ParameterStatistic):
    name = "effective_lr"
    columns = ("eff_lr",)

    def compute(self, ctx: StepContext) -> torch.Tensor:
        layers, opt = ctx.layers, ctx.optimizer
        out = torch.full((len(layers),), float("nan"), device=layers.device)
        if opt is None:
            return out.reshape(1, -1)
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        per_layer: dict[int, list[tuple[torch.Tensor, dict, dict]]] = {}
        for p, layer in zip(layers.params, layers.owner_ids):
            if id(p) in group_of:
                per_layer.setdefault(layer, []).append((p, group_of[id(p)], opt.state.get(p, {})))
        for layer, items in per_layer.items():
            out[layer] = _layer_step_size(type(opt).__name__, items)
        return out.reshape(1, -1)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        opt = obs.optimizer
        if opt is None or not obs.params:
            return None
        group = next(g for g in opt.param_groups if any(p is obs.params[0] for p in g["params"]))
        lr, name = float(group["lr"]), type(opt).__name__
        sizes = []
        for p in obs.params:
            state = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in opt.state.get(p, {}).items()}
            if name == "Adadelta" and "acc_delta" in state:
                eps = group["eps"]
                sizes.append(lr * ((state["acc_delta"] + eps) / (state["square_avg"] + eps)).sqrt())
            elif name in ("Adagrad", "RMSprop") and ("sum" in state or "square_avg" in state):
                second = state["sum"] if "sum" in state else state["square_avg"]
                sizes.append(lr / (second.sqrt() + group["eps"]))
            elif name in ("Adam", "AdamW", "NAdam", "RAdam") and "exp_avg_sq" in state:
                correction = 1 - group["betas"][1] ** float(state["step"])
                sizes.append(lr / ((state["exp_avg_sq"] / correction).sqrt() + group["eps"]))
            else:
                return (lr,)
        return (float(torch.cat([t.flatten() for t in sizes]).float().median()),)


def _layer_step_size(name: str, items: list[tuple[torch.Tensor, dict, dict]]) -> torch.Tensor | float:
    """Median per-element step size of one layer, from its optimizer state."""
    _, group, state = items[0]
    states = [s for _, _, s in items]
    if name == "Adadelta" and all("acc_delta" in s for s in states):
        eps = group["eps"]
        sizes = [group["lr"] * (s["acc_delta"] + eps).sqrt() / (s["square_avg"] + eps).sqrt() for s in states]
        return torch.cat([t.flatten() for t in sizes]).median()
    if name in SECOND_MOMENT:
        key, rule = SECOND_MOMENT[name]
        if all(key in s for s in states):
            return torch.cat([rule(s[key], group, s).flatten() for s in states]).median()
    lr = group["lr"]
    return float(lr) if not isinstance(lr, torch.Tensor) else lr.detach().reshape(())
