"""nonfinite: where and when the first NaN/Inf appeared."""

from __future__ import annotations

import numpy as np

from diagnose.findings.base import Finding, RunData, rule

REMEDY = ("Lower the learning rate, clip gradients, and check the inputs and the loss for invalid "
          "values (log of 0, division by 0, sqrt of negatives).")


@rule("nonfinite")
def nonfinite(run: RunData) -> list[Finding]:
    first = run.meta.get("first_nonfinite")
    bad_rows = run.rows_above("nonfinite", 0.0)
    loss = run.loss
    bad_loss = loss[~np.isfinite(loss.to_numpy())] if len(loss) else loss
    if not first and bad_rows.empty and bad_loss.empty:
        return []
    if first:
        where = {"input": "the model's input", "output": f"the output of {first['layer']}",
                 "gradient": f"the gradient of {first['layer']}"}[first["where"]]
        message = f"The first NaN/Inf appeared at step {first['step']}, in {where}."
        step, layer = int(first["step"]), (None if first["where"] == "input" else first["layer"])
    elif not bad_rows.empty:
        row = bad_rows.sort_values("step").iloc[0]
        step, layer = int(row["step"]), str(row["layer"])
        message = f"NaN/Inf values were recorded from step {step} on, first in {layer}."
    else:
        step, layer = int(bad_loss.index[0]), None
        message = f"The loss became NaN/Inf at step {step}."
    last = int(max([step, *bad_rows["step"].tolist(), *bad_loss.index.tolist()]))
    return [Finding(
        kind="nonfinite", severity="critical", layer=layer, steps=(step, last),
        evidence={"first_nonfinite": first, "layers_with_nonfinite": sorted(bad_rows["layer"].unique().tolist()),
                  "nonfinite_loss_steps": len(bad_loss)},
        message=message, remedy=REMEDY)]
