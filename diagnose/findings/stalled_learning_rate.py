"""stalled_learning_rate: an AdaGrad-style step size collapsed while the loss is still high."""

from __future__ import annotations

from diagnose.findings.base import Finding, RunData, Skip, fmt, initial_level, rule, smooth

# Optimizers whose per-parameter step size only shrinks: AdaGrad divides by the square root of
# every squared gradient ever seen (Duchi et al., 2011), so one huge early gradient shrinks every
# later step for good. RMSProp, Adadelta and Adam use moving averages: a collapse there is transient
# (Adam's early effective step is even huge, lr/eps, while its second moment is still ~0), so only
# accumulating optimizers are judged.
ACCUMULATING = ("Adagrad",)
# The step size is under 1 % of the learning rate that was set, or fell 100x during training.
COLLAPSE = 1e-2
# "Still high": the loss kept more than half of its initial value, and over the last 30 % of the
# run it moved by less than 5 %.
STILL_HIGH = 0.5
FLAT_WINDOW = 0.3
FLAT = 0.05

REMEDY = ("Switch to RMSProp, Adadelta or Adam, whose moving averages let the step size recover; "
          "or clip early gradients so one large gradient cannot shrink every later step.")


@rule("stalled_learning_rate")
def stalled_learning_rate(run: RunData) -> list[Finding]:
    eff = run.pivot("eff_lr")
    optimizer = (run.meta.get("optimizer") or {})
    name = optimizer.get("class")
    if eff.empty or name is None:
        raise Skip("needs an optimizer's effective learning rate (dg.watch with an optimizer)")
    if name not in ACCUMULATING:
        return []  # a moving average forgets: the step size recovers by itself (see above)
    lr = float((optimizer.get("hyperparameters") or {}).get("lr") or 0.0)
    first, last = eff.iloc[0], eff.iloc[-1]
    to_set = last / lr if lr > 0 else last * float("nan")
    fell = last / first
    collapsed = [layer for layer in eff.columns if to_set[layer] < COLLAPSE or fell[layer] < COLLAPSE]
    loss = run.loss
    if not collapsed or len(loss) < 10:
        return []
    curve = smooth(loss)
    start, end = initial_level(loss), float(curve.iloc[-1])
    tail = curve.iloc[int(len(curve) * (1 - FLAT_WINDOW)):]
    moved = (float(tail.max()) - float(tail.min())) / max(abs(float(tail.mean())), 1e-12)
    if not (end > STILL_HIGH * start and moved < FLAT):
        return []
    worst = min(collapsed, key=lambda layer: to_set[layer] if lr > 0 else fell[layer])
    return [Finding(
        kind="stalled_learning_rate", severity="warning", layer=worst,
        steps=(int(eff.index[0]), int(eff.index[-1])),
        evidence={"optimizer": name, "lr": lr, "effective_lr": {la: float(last[la]) for la in collapsed},
                  "fraction_of_lr": {la: float(to_set[la]) for la in collapsed}, "initial_loss": start,
                  "final_loss": end},
        message=(f"{name}'s effective step size has collapsed: {worst} now steps with {fmt(float(last[worst]))} "
                 f"({fmt(float(to_set[worst]))}x the learning rate {fmt(lr)}) while the loss is still "
                 f"{fmt(end)} (it started at {fmt(start)}) and no longer falls."),
        remedy=REMEDY)]
