"""DeepLIFT with one baseline (Rescale rule), on the batched engine of ``explain/rescale.py``;
the same attributions as Captum's DeepLift, which the tests check."""

from __future__ import annotations

import torch

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import AdapterResult, MethodSpec, References, reference_outputs, register_method
from diagnose.explain.rescale import RescaleEngine, unsupported_modules


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    engine = RescaleEngine(ctx.model, ctx.target_output, pair_batch=ctx.params.get("pair_batch", 65536))
    return AdapterResult(engine.attribute(x, refs.baseline, targets), reference_outputs(ctx, refs.baseline, targets))


register_method(MethodSpec("deeplift", attribute, "diagnose", additive=True, gradients=True, reference="baseline",
                           summary="DeepLIFT Rescale rule against the baseline", unsupported=unsupported_modules,
                           refuses_incomplete=True,
                           settings=('pair_batch',)))
