"""loss_plateau: the loss is flat over a long window, far from where it should be."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, fmt, initial_level, rule, smooth

# Over the last 30 % of the run the smoothed loss moves by less than 1 %, while it either kept
# over 90 % of its initial value (it never learned) or sits 1.5x above the best it reached.
WINDOW = 0.3
FLAT = 0.01
STUCK = 0.9
FAR = 1.5
MIN_POINTS = 20

REMEDY = ("Try a learning-rate schedule or a larger learning rate, add momentum, and check the data "
          "and labels (a model that cannot learn at all often sees shuffled or constant targets).")


@rule("loss_plateau")
def loss_plateau(run: RunData) -> list[Finding]:
    loss = run.loss
    if len(loss) < MIN_POINTS:
        raise Skip(f"needs a training loss logged at >= {MIN_POINTS} steps")
    curve = smooth(loss)
    tail = curve.iloc[int(len(curve) * (1 - WINDOW)):]
    level = float(tail.mean())
    moved = (float(tail.max()) - float(tail.min())) / max(abs(level), 1e-12)
    start, best = initial_level(loss), float(curve.min())
    stuck, far = level >= STUCK * start, level >= FAR * best
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
