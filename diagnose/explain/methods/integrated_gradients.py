"""Captum's Integrated Gradients (Sundararajan et al., 2017): the path integral of gradients
from the baseline to the input; complete by construction, up to the integral's numerical error."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

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
    p = ctx.params
    ig = IntegratedGradients(captum_forward(ctx))
    values, delta = ig.attribute(x, baselines=refs.baseline, target=targets, n_steps=p.get("n_steps", 50),
                                 method=p.get("integration", "gausslegendre"),
                                 internal_batch_size=p.get("internal_batch_size"), return_convergence_delta=True)
    return AdapterResult(values, reference_outputs(ctx, refs.baseline, targets), {"convergence_delta": delta})


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """Captum's LayerIntegratedGradients through the input embedding, from the reference ids;
    a token's attribution is the sum over its embedding dimensions (complete like IG)."""
    p = ctx.params
    ig = LayerIntegratedGradients(tokens.forward(ctx), tokens.embedding_layer(ctx))
    values, delta = ig.attribute(x, baselines=ctx.token.baseline, target=targets,
                                 additional_forward_args=tokens.extra_args(ctx), n_steps=p.get("n_steps", 50),
                                 method=p.get("integration", "gausslegendre"),
                                 internal_batch_size=p.get("internal_batch_size"), return_convergence_delta=True)
    return AdapterResult(values.sum(dim=-1), tokens.layer_base_outputs(ctx, x, targets), {"convergence_delta": delta})


register_method(MethodSpec("integrated_gradients", attribute, "captum", additive=True, gradients=True,
                           reference="baseline", summary="path integral of gradients from the baseline",
                           settings=('n_steps', 'integration', 'internal_batch_size'), tokens=attribute_tokens))
