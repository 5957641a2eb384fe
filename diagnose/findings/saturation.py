"""saturation: sigmoid/tanh-like layers with most outputs in their flat tails."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, fraction_findings, rule

# In the tails the derivative is under ~4 % of its peak (see monitor/statistics/saturation.py),
# so more than half the outputs there means most units pass almost no gradient (Glorot & Bengio, 2010).
SATURATION_WARNING = 0.5
SATURATION_CRITICAL = 0.9

REMEDY = ("Standardize the inputs (zero mean, unit variance), add batch normalization before the "
          "activation, use Xavier initialization, or switch to ReLU-family activations.")


@rule("saturation")
def saturation(run: RunData) -> list[Finding]:
    return fraction_findings(run, "saturated_frac", "saturation", SATURATION_WARNING, SATURATION_CRITICAL,
                             "the outputs of {layer} sit in the flat tails of its activation", REMEDY,
                             skip="no sigmoid/tanh-like layer was recorded")
