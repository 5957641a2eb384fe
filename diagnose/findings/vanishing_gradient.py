"""vanishing_gradient: early layers get gradients orders of magnitude smaller than later ones."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, fmt, persistent_columns, rule, step_range

# Three orders of magnitude between a layer's gradient and the largest layer's means it learns
# ~1000x slower at the same learning rate (Glorot & Bengio, 2010, measured one order of magnitude
# per few sigmoid layers); five orders is a layer that effectively does not train.
RATIO_WARNING = 1e-3
RATIO_CRITICAL = 1e-5
# Below this absolute L2 norm a gradient moves O(1) weights by less than float32 resolves
# (machine epsilon 1.2e-7) at any usual learning rate.
ABSOLUTE_FLOOR = 1e-7

REMEDY = ("Use ReLU-family activations instead of sigmoid/tanh, add residual connections or batch "
          "normalization, and initialize with He/Xavier scaling so signals keep their size through depth.")


@rule("vanishing_gradient")
def vanishing_gradient(run: RunData) -> list[Finding]:
    grads = run.later(run.pivot("grad_norm"))
    if grads.empty or grads.shape[1] < 2:
        raise Skip("needs gradient norms of at least two layers")
    ratio = grads.div(grads.max(axis=1), axis=0)
    vanishing = persistent_columns(ratio < RATIO_WARNING) | persistent_columns(grads < ABSOLUTE_FLOOR)
    layers = [layer for layer in grads.columns if vanishing[layer]]
    if not layers:
        return []
    median_ratio = ratio[layers].median()
    critical = bool((median_ratio < RATIO_CRITICAL).any() or (grads[layers].median() < ABSOLUTE_FLOOR).any())
    reference = grads.median().idxmax()
    first = layers[0]
    return [Finding(
        kind="vanishing_gradient", severity="critical" if critical else "warning", layer=first,
        steps=step_range(grads.index),
        evidence={"layers": {layer: float(median_ratio[layer]) for layer in layers},
                  "median_grad_norm": {layer: float(grads[layer].median()) for layer in grads.columns},
                  "reference_layer": reference, "threshold_ratio": RATIO_WARNING},
        message=(f"Gradients vanish in {len(layers)} layer(s) ({', '.join(layers)}): {first} gets "
                 f"{fmt(float(median_ratio[first]))}x the gradient norm of {reference} (median over steps "
                 f"{int(grads.index[0])}-{int(grads.index[-1])})."),
        remedy=REMEDY)]
