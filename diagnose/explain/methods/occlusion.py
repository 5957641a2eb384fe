"""Captum's Occlusion: the output change when a sliding window of the input is set to the baseline.
Tabular inputs: one feature at a time; images: a 2x2 patch per channel stack, stride 1."""

from __future__ import annotations

import torch
from captum.attr import Occlusion

from diagnose.explain import tokens
from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import (
    AdapterResult,
    MethodSpec,
    References,
    captum_forward,
    reference_outputs,
    register_method,
)


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    shape = tuple(x.shape[1:])
    default_window = (1,) * len(shape) if len(shape) < 3 else (shape[0], 2, 2)
    window = tuple(ctx.params.get("window", default_window))
    strides = tuple(ctx.params.get("strides", (1,) * len(shape) if len(shape) < 3 else (shape[0], 1, 1)))
    values = Occlusion(captum_forward(ctx)).attribute(
        x, sliding_window_shapes=window, strides=strides, baselines=refs.baseline, target=targets,
        perturbations_per_eval=ctx.params.get("perturbations_per_eval", 16))
    return AdapterResult(values, reference_outputs(ctx, refs.baseline, targets))


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """The output change when a window of ``window`` tokens (default 1) is replaced by the reference
    token, averaged over the windows that cover each position."""
    window = tuple(ctx.params.get("window", (1,)))
    strides = tuple(ctx.params.get("strides", (1,)))
    values = Occlusion(tokens.forward(ctx)).attribute(
        x, sliding_window_shapes=window, strides=strides, baselines=ctx.token.baseline, target=targets,
        additional_forward_args=tokens.extra_args(ctx),
        perturbations_per_eval=ctx.params.get("perturbations_per_eval", 16))
    return AdapterResult(values.to(ctx.dtype), tokens.base_outputs(ctx, targets))


register_method(MethodSpec("occlusion", attribute, "captum", additive=False, gradients=False,
                           reference="baseline", summary="output change when a window is set to the baseline",
                           settings=('window', 'strides', 'perturbations_per_eval'), tokens=attribute_tokens))
