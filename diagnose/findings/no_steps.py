"""no_steps: the model ran forward passes, but no training step was ever counted.

The watch counts steps from ``optimizer.step()`` (or ``run.step()`` without an optimizer); a loop
that does neither records nothing per layer and would otherwise look like a clean, empty run.
"""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, rule

REMEDY = ("Pass the optimizer to dg.watch(model, optimizer, ...), or call run.step() once per "
          "training step when you watch without one.")


@rule("no_steps")
def no_steps(run: RunData) -> list[Finding]:
    counted, passes = run.meta.get("steps_counted"), run.meta.get("forward_passes")
    if counted is None or passes is None:
        raise Skip("the run does not say how many steps it counted (still running, or recorded by an older version)")
    if counted > 0 or passes == 0:
        return []
    return [Finding(
        kind="no_steps", severity="critical", layer=None, steps=None,
        evidence={"forward_passes": passes, "steps_counted": 0},
        message=(f"The model ran {passes} training forward passes, but no step was counted: nothing per step "
                 "or per layer was recorded."),
        remedy=REMEDY)]
