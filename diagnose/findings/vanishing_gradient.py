"""vanishing_gradient: some layers learn orders of magnitude more slowly than the rest of the model.

Judged by what the optimizer applied: the update/weight ratio ||Δθ||/||θ|| of each step. A raw
gradient says nothing for an adaptive optimizer (Adam divides each element's step by its own
gradient scale: a layer with 1e-4x the gradient of the classifier takes the same relative steps)
nor for a layer feeding a normalization (its gradient shrinks as its weights grow, by design).
A layer is vanishing when its update ratio stays three orders of magnitude below the typical
learning layer's (the 75th percentile of the layers at that step: one zero-initialized head with an
inflated ratio cannot set the scale, and a vanishing block, often half the network, does not drag
the reference down with it). Every layer equally slow is not this: that is the learning rate (the
loss_plateau rule says so). Normalization layers' own scale and
shift are not judged: they are optional refinements that may legitimately barely move. Runs without
update ratios fall back to gradient norms, and only for optimizers that apply the raw gradient.
"""

from __future__ import annotations

import pandas as pd

from diagnose.findings.base import (
    Finding,
    RunData,
    Skip,
    fmt,
    persistent_columns,
    rule,
    support,
)

# Three orders of magnitude below the typical layer means ~1000x slower learning (Glorot & Bengio,
# 2010, measured one order of magnitude per few sigmoid layers); five orders is a layer that
# effectively does not train.
RATIO_WARNING = 1e-3
RATIO_CRITICAL = 1e-5
# The typical learning layer: the 75th percentile of the layers at each step (see above).
TYPICAL_QUANTILE = 0.75

REMEDY = ("Use ReLU-family activations instead of sigmoid/tanh, add residual connections or "
          "normalization layers, and initialize with He/Xavier scaling so signals keep their size "
          "through depth; with a schedule, check the learning rate of these layers' parameter group.")


@rule("vanishing_gradient")
def vanishing_gradient(run: RunData) -> list[Finding]:
    updates = run.pivot("update_ratio")
    if not updates.empty:
        judged = [layer for layer in updates.columns if not run.is_normalization(layer)]
        return _vanishing(run, updates[judged], "update/weight ratio")
    if run.adaptive:
        raise Skip(f"needs update ratios: with {run.optimizer} the raw gradient says nothing about the step")
    grads = run.pivot("grad_norm")
    judged = [layer for layer in grads.columns
              if not run.is_normalization(layer) and layer not in run.scale_invariant]
    return _vanishing(run, grads[judged], "gradient norm")


def _vanishing(run: RunData, table: pd.DataFrame, what: str) -> list[Finding]:
    if table.empty or table.shape[1] < 2:
        raise Skip(f"needs the {what} of at least two layers")
    table = run.later(table)
    typical = table.quantile(TYPICAL_QUANTILE, axis=1)
    ratio = table.div(typical, axis=0)
    slow = ratio < RATIO_WARNING
    vanishing = persistent_columns(slow)
    layers = [layer for layer in table.columns if vanishing[layer]]
    if not layers:
        return []
    median_ratio = ratio[layers].median()
    critical = bool((median_ratio < RATIO_CRITICAL).any())
    first = layers[0]
    steps = (int(table.index[0]), int(table.index[-1]))
    return [Finding(
        kind="vanishing_gradient", severity="critical" if critical else "warning", layer=first,
        steps=steps,
        evidence={"layers": {layer: float(median_ratio[layer]) for layer in layers}, "measure": what,
                  f"median_{what.replace('/', '_').replace(' ', '_')}": {
                      layer: float(table[layer].median()) for layer in table.columns},
                  "typical": float(typical.median()), "threshold_ratio": RATIO_WARNING, **support(slow[first])},
        message=(f"Learning vanishes in {len(layers)} layer(s) ({', '.join(layers)}): {first}'s {what} is "
                 f"{fmt(float(median_ratio[first]))}x the typical layer's ({fmt(float(table[first].median()))} against "
                 f"{fmt(float(typical.median()))}, median over steps {steps[0]}-{steps[1]})."),
        remedy=REMEDY)]
