"""exploding_gradient: steps orders of magnitude too large for the weights they move, or gradients
growing fast.

Judged first by what the optimizer applied: the update/weight ratio ||Δθ||/||θ||. Karpathy
(CS231n, "ratio of weights:updates"): ~1e-3 per step is healthy; 1e-1 rewrites a tenth of the
weights every step (100x too large); 1 replaces them. For optimizers that apply the raw gradient
(SGD and its momentum variants), a gradient far larger than its weights, or a total gradient norm
growing 1000x, is a warning too; for adaptive optimizers (Adam, RMSProp, ...) the raw gradient's
size says nothing about the step, so only the update counts. Not judged as exploding:
- the steps of a layer that started at zero (a zero-initialized head or class token) while it
  grows: any step is large next to nothing;
- the gradient/weight ratio of layers a normalization rescales (conv -> BatchNorm): their gradient
  grows as their weights shrink (scale invariance, e.g. under weight decay), by design; their
  update ratio is still judged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnose.findings.base import Finding, RunData, Skip, fmt, persistent, rule, step_range, support

UPDATE_RATIO_WARNING = 1e-1
UPDATE_RATIO_CRITICAL = 1.0
# A gradient 10x the norm of the weights it updates: at any usual SGD learning rate (>= 1e-2) one
# step changes the layer by more than a tenth (the same 1e-1 as above); 1000x is runaway.
GRAD_TO_WEIGHT_WARNING = 10.0
GRAD_TO_WEIGHT_CRITICAL = 1e3
# Growth: the total gradient norm ends 1000x above its median over the first sampled steps.
GROWTH_WARNING = 1e3

REMEDY = ("Lower the learning rate (or warm it up), clip gradients (grad_clip=1.0 or "
          "torch.nn.utils.clip_grad_norm_), add normalization layers, or use fewer layers / residual "
          "connections.")


@rule("exploding_gradient")
def exploding_gradient(run: RunData) -> list[Finding]:
    grads, weights, updates = run.pivot("grad_norm"), run.pivot("weight_norm"), run.pivot("update_ratio")
    if grads.empty and updates.empty:
        raise Skip("needs gradient norms or update ratios")
    growing = run.growing_from_zero()
    upd = run.later(_without(updates, growing)) if not updates.empty else updates
    flagged: dict[str, dict[str, float]] = {}
    supported: dict[str, dict[str, int]] = {}
    critical = False
    for layer in upd.columns:
        values = upd[layer].dropna()
        if persistent(values > UPDATE_RATIO_WARNING):
            flagged.setdefault(layer, {})["median_update_ratio"] = float(values.median())
            supported[layer] = support(values > UPDATE_RATIO_WARNING)
            critical |= float(values.median()) > UPDATE_RATIO_CRITICAL
    growth, later = 1.0, None
    if not run.adaptive and not grads.empty:
        later = run.later(grads)
        judged = [layer for layer in later.columns
                  if not run.is_normalization(layer) and layer not in run.scale_invariant]
        rel = _without((later[judged] / weights.reindex_like(later[judged])).replace([np.inf, -np.inf], np.nan),
                       growing)
        for layer in rel.columns:
            values = rel[layer].dropna()
            if persistent(values > GRAD_TO_WEIGHT_WARNING):
                flagged.setdefault(layer, {})["median_grad_to_weight"] = float(values.median())
                supported.setdefault(layer, support(values > GRAD_TO_WEIGHT_WARNING))
                critical |= float(values.median()) > GRAD_TO_WEIGHT_CRITICAL
        total = np.sqrt((grads.fillna(0) ** 2).sum(axis=1))
        head = total.iloc[: max(1, len(total) // 10)]
        growth = float(total.iloc[-3:].median() / head.median()) if len(total) >= 6 and head.median() > 0 else 1.0
    if not flagged and growth < GROWTH_WARNING:
        return []
    layers = [layer for layer in run.layer_order if layer in flagged]
    first = layers[0] if layers else None
    parts = []
    if layers:
        top = max(layers, key=lambda la: max(flagged[la].values()))
        detail = ", ".join(f"{k.replace('median_', '').replace('_', ' ')} {fmt(v)}" for k, v in flagged[top].items())
        parts.append(f"{len(layers)} layer(s) take oversized steps ({', '.join(layers)}); worst {top}: {detail}")
    if growth >= GROWTH_WARNING:
        parts.append(f"the total gradient norm grew {fmt(growth)}x since the first steps")
    index = upd.index if not upd.empty else later.index if later is not None else grads.index
    return [Finding(
        kind="exploding_gradient", severity="critical" if critical else "warning", layer=first,
        steps=step_range(index),
        evidence={"layers": flagged, "growth": growth, "healthy_update_ratio": 1e-3, "adaptive": run.adaptive,
                  **(supported[first] if first in supported else {})},
        message="Steps explode: " + "; ".join(parts) + " (a healthy update/weight ratio is ~1e-3).",
        remedy=REMEDY)]


def _without(table: pd.DataFrame, growing: pd.DataFrame) -> pd.DataFrame:
    """``table`` with NaN where a zero-started layer is still growing."""
    if growing.empty:
        return table
    return table.mask(growing.reindex_like(table).fillna(False).astype(bool))
