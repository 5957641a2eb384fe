"""divergence: the training loss rises persistently, or explodes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnose.findings.base import Finding, RunData, fmt, initial_level, noise, rule, smooth

# The smoothed loss ends at least 2x above its best, and the rise is large next to what training
# had gained (a quarter of the fall from the start to the best), and it is a trend, not noise:
# Spearman's rank correlation with the step >= 0.5 after the best point. And the rise stands out of
# the loss's own noise: more than 3 of its per-step standard deviations (small batches are noisy:
# a batch-8 loss wanders by tens of percent with nothing wrong).
RISE_FACTOR = 2.0
RISE_OF_GAIN = 0.25
TREND = 0.5
CRITICAL_FACTOR = 10.0  # ending 10x above the best (or above the starting loss): runaway
MIN_POINTS = 10
NOISE_MARGIN = 3.0

REMEDY = "Lower the learning rate (try 3-10x smaller), clip gradients, or add a learning-rate warm-up."


@rule("divergence")
def divergence(run: RunData) -> list[Finding]:
    loss = run.loss
    finite = run.finite_loss(MIN_POINTS)
    if len(finite) < MIN_POINTS:
        return []  # the loss went non-finite at once: the nonfinite finding says where
    curve = smooth(finite)
    best_at = curve.idxmin()
    best, start, end = float(curve.min()), initial_level(finite), float(curve.iloc[-1])
    after = curve.loc[best_at:]
    if len(after) < 3 or end < RISE_FACTOR * best or end - best < RISE_OF_GAIN * max(start - best, 0.0):
        return []
    sigma = noise(finite)
    if end - best <= NOISE_MARGIN * sigma:
        return []
    rho = pd.Series(after.to_numpy()).corr(pd.Series(np.arange(len(after), dtype=float)), method="spearman")
    if not rho >= TREND:
        return []
    critical = end >= CRITICAL_FACTOR * best or end > start
    exploded = len(finite) < len(loss)
    return [Finding(
        kind="divergence", severity="critical" if critical or exploded else "warning", layer=None,
        steps=(int(best_at), int(loss.index[-1])),
        evidence={"best_loss": best, "best_step": int(best_at), "final_loss": end, "initial_loss": start,
                  "loss_noise": sigma,
                  "trend_spearman": float(rho), "nonfinite_loss": exploded},
        message=(f"The training loss diverges: from its best {fmt(best)} at step {int(best_at)} it rose to "
                 f"{fmt(end)} by step {int(loss.index[-1])} ({fmt(end / best)}x)"
                 + (" and then became NaN/Inf." if exploded else ".")),
        remedy=REMEDY)]
