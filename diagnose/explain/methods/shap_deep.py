"""SHAP's DeepExplainer values (DeepLIFT Rescale averaged over a background), computed in large
batched passes: the same values as shap.DeepExplainer (tests: <= 1e-4 relative), many times
faster on many rows (benchmarks/explain.py)."""

from __future__ import annotations

import torch

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import AdapterResult, MethodSpec, References, reference_outputs, register_method
from diagnose.explain.rescale import RescaleEngine, unsupported_modules


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    engine = RescaleEngine(ctx.model, ctx.target_output, pair_batch=ctx.params.get("pair_batch", 65536))
    return AdapterResult(engine.attribute(x, refs.background, targets),
                         reference_outputs(ctx, refs.background, targets))


register_method(MethodSpec("shap_deep", attribute, "shap", additive=True, gradients=True, reference="background",
                           summary="DeepExplainer: DeepLIFT averaged over the background", chunked=False,
                           unsupported=unsupported_modules, refuses_incomplete=True,
                           settings=('pair_batch',)))
