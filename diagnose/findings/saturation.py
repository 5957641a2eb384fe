"""saturation: sigmoid/tanh-like layers with most outputs in their flat tails."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, fmt, persistent, rule, step_range

# In the tails the derivative is under ~4 % of its peak (see monitor/statistics/saturation.py),
# so half the outputs there means half the units pass almost no gradient (Glorot & Bengio, 2010).
SATURATION_WARNING = 0.5
SATURATION_CRITICAL = 0.9

REMEDY = ("Standardize the inputs (zero mean, unit variance), add batch normalization before the "
          "activation, use Xavier initialization, or switch to ReLU-family activations.")


@rule("saturation")
def saturation(run: RunData) -> list[Finding]:
    sat = run.later(run.pivot("saturated_frac"))
    if sat.empty:
        raise Skip("no sigmoid/tanh-like layer was recorded")
    findings = []
    for layer in sat.columns:
        values = sat[layer].dropna()
        if not persistent(values >= SATURATION_WARNING):
            continue
        median = float(values.median())
        findings.append(Finding(
            kind="saturation", severity="critical" if median >= SATURATION_CRITICAL else "warning", layer=layer,
            steps=step_range(values.index), evidence={"median_saturated_frac": median, "threshold": SATURATION_WARNING},
            message=f"{fmt(100 * median)}% of the outputs of {layer} sit in the flat tails of its activation "
                    f"(median over steps {int(values.index[0])}-{int(values.index[-1])}).",
            remedy=REMEDY))
    return findings
