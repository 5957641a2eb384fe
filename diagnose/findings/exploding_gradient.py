"""exploding_gradient: gradients or updates orders of magnitude above normal, or growing fast."""

from __future__ import annotations

import numpy as np

from diagnose.findings.base import Finding, RunData, Skip, fmt, persistent, rule, step_range

# Karpathy (CS231n, "ratio of weights:updates"): ~1e-3 per step is healthy. 1e-1 means each step
# rewrites a tenth of the weights (100x too large); 1 means it replaces them.
UPDATE_RATIO_WARNING = 1e-1
UPDATE_RATIO_CRITICAL = 1.0
# A gradient 10x the norm of the weights it updates: at any usual learning rate (>= 1e-2) one
# step changes the layer by more than a tenth (the same 1e-1 as above); 1000x is runaway.
GRAD_TO_WEIGHT_WARNING = 10.0
GRAD_TO_WEIGHT_CRITICAL = 1e3
# Growth: the total gradient norm ends 1000x above its median over the first sampled steps.
GROWTH_WARNING = 1e3

REMEDY = ("Clip gradients (grad_clip=1.0 or torch.nn.utils.clip_grad_norm_), lower the learning "
          "rate, add normalization layers, or use fewer layers / residual connections.")


@rule("exploding_gradient")
def exploding_gradient(run: RunData) -> list[Finding]:
    grads, weights, updates = run.pivot("grad_norm"), run.pivot("weight_norm"), run.pivot("update_ratio")
    if grads.empty:
        raise Skip("needs gradient norms")
    later = run.later(grads)
    rel = (later / weights.reindex_like(later)).replace([np.inf, -np.inf], np.nan)
    upd = run.later(updates) if not updates.empty else updates
    flagged: dict[str, dict[str, float]] = {}
    critical = False
    for layer in later.columns:
        evidence = {}
        if not upd.empty and layer in upd and persistent(upd[layer].dropna() > UPDATE_RATIO_WARNING):
            evidence["median_update_ratio"] = float(upd[layer].median())
            critical |= evidence["median_update_ratio"] > UPDATE_RATIO_CRITICAL
        if layer in rel and persistent(rel[layer].dropna() > GRAD_TO_WEIGHT_WARNING):
            evidence["median_grad_to_weight"] = float(rel[layer].median())
            critical |= evidence["median_grad_to_weight"] > GRAD_TO_WEIGHT_CRITICAL
        if evidence:
            flagged[layer] = evidence
    total = np.sqrt((grads.fillna(0) ** 2).sum(axis=1))
    head = total.iloc[: max(1, len(total) // 10)]
    growth = float(total.iloc[-3:].median() / head.median()) if len(total) >= 6 and head.median() > 0 else 1.0
    if not flagged and growth < GROWTH_WARNING:
        return []
    layers = list(flagged)
    first = layers[0] if layers else None
    parts = []
    if layers:
        top = max(layers, key=lambda la: max(flagged[la].values()))
        detail = ", ".join(f"{k.replace('median_', '').replace('_', ' ')} {fmt(v)}" for k, v in flagged[top].items())
        parts.append(f"{len(layers)} layer(s) take oversized steps ({', '.join(layers)}); worst {top}: {detail}")
    if growth >= GROWTH_WARNING:
        parts.append(f"the total gradient norm grew {fmt(growth)}x since the first steps")
    return [Finding(
        kind="exploding_gradient", severity="critical" if critical else "warning", layer=first,
        steps=step_range(later.index),
        evidence={"layers": flagged, "growth": growth, "healthy_update_ratio": 1e-3},
        message="Gradients explode: " + "; ".join(parts) + " (healthy update/weight ratio is ~1e-3).",
        remedy=REMEDY)]
