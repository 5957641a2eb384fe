"""dead_units: rectifier layers whose units never produce a positive output."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, fmt, persistent, rule, step_range

# "Dying ReLU" (Lu et al., 2019): a unit that never fires gets no gradient and never recovers.
# Half the units dead halves the layer's capacity; nine in ten leaves it nearly useless.
DEAD_WARNING = 0.5
DEAD_CRITICAL = 0.9

REMEDY = ("Use LeakyReLU/ELU, lower the learning rate (a large step can push units permanently "
          "negative), initialize with He init, and check that biases do not start strongly negative.")


@rule("dead_units")
def dead_units(run: RunData) -> list[Finding]:
    dead = run.later(run.pivot("dead_frac"))
    if dead.empty:
        raise Skip("no rectifier (ReLU-family) layer was recorded")
    findings = []
    for layer in dead.columns:
        values = dead[layer].dropna()
        if not persistent(values >= DEAD_WARNING):
            continue
        median = float(values.median())
        findings.append(Finding(
            kind="dead_units", severity="critical" if median >= DEAD_CRITICAL else "warning", layer=layer,
            steps=step_range(values.index), evidence={"median_dead_frac": median, "max_dead_frac": float(values.max()),
                                                      "threshold": DEAD_WARNING},
            message=f"{fmt(100 * median)}% of the units of {layer} never produce a positive output "
                    f"(median over steps {int(values.index[0])}-{int(values.index[-1])}).",
            remedy=REMEDY))
    return findings
