"""dead_units: rectifier layers whose units never produce a positive output."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, fraction_findings, rule

# "Dying ReLU" (Lu et al., 2019): a unit that never fires gets no gradient and never recovers.
# More than half the units dead leaves the layer with less than half its capacity (exactly half is
# 2 of a squeeze-excite block's 4 units: common and harmless); nine in ten leaves it nearly useless.
DEAD_WARNING = 0.5
DEAD_CRITICAL = 0.9

REMEDY = ("Use LeakyReLU/ELU, lower the learning rate (a large step can push units permanently "
          "negative), initialize with He init, and check that biases do not start strongly negative.")


@rule("dead_units")
def dead_units(run: RunData) -> list[Finding]:
    return fraction_findings(run, "dead_frac", "dead_units", DEAD_WARNING, DEAD_CRITICAL,
                             "the units of {layer} never produce a positive output", REMEDY,
                             skip="no rectifier (ReLU-family) layer was recorded")
