"""loss_plateau: the loss is flat over a long window, far from where it should be."""

from __future__ import annotations

import numpy as np

from diagnose.findings.base import Finding, RunData, fmt, initial_level, noise, rule, smooth

# Over the last 30 % of the run the loss moves by less than 1 % (the change of a straight line
# fitted through it: noise averages out of the fit, so a noisy loss can still be found flat and a
# noisy but falling one is not), while it either kept over 90 % of its initial value (it never
# learned) or sits 1.5x above the best it reached, and that gap stands out of its noise.
WINDOW = 0.3
FLAT = 0.01
STUCK = 0.9
FAR = 1.5
MIN_POINTS = 20
NOISE_MARGIN = 3.0

REMEDY = ("Try a learning-rate schedule or a larger learning rate, add momentum, and check the data "
          "and labels (a model that cannot learn at all often sees shuffled or constant targets).")


@rule("loss_plateau")
def loss_plateau(run: RunData) -> list[Finding]:
    loss = run.finite_loss(MIN_POINTS)
    if len(loss) < MIN_POINTS:
        return []  # the loss went non-finite: the nonfinite finding says where
    curve = smooth(loss)
    tail = loss.iloc[int(len(loss) * (1 - WINDOW)):]
    level = float(tail.mean())
    slope = np.polyfit(np.arange(len(tail), dtype=float), tail.to_numpy(dtype=float), 1)[0]
    moved = abs(float(slope)) * (len(tail) - 1) / max(abs(level), 1e-12)
    start, best = initial_level(loss), float(curve.min())
    stuck = level >= STUCK * start
    far = level >= FAR * best and level - best > NOISE_MARGIN * noise(loss)
    if moved >= FLAT or not (stuck or far):
        return []
    why = (f"it kept {fmt(100 * level / start)}% of its initial value {fmt(start)}" if stuck
           else f"{fmt(level / best)}x above its best {fmt(best)}")
    return [Finding(
        kind="loss_plateau", severity="warning", layer=None, steps=(int(tail.index[0]), int(tail.index[-1])),
        evidence={"level": level, "relative_change": moved, "initial_loss": start, "best_loss": best},
        message=(f"The loss has plateaued at {fmt(level)} for steps {int(tail.index[0])}-{int(tail.index[-1])} "
                 f"(it moved {fmt(100 * moved)}%): {why}."),
        remedy=REMEDY)]
