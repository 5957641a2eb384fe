"""overfitting: training loss falls while validation loss rises for several epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnose.findings.base import Finding, RunData, Skip, fmt, rule

# Three evaluations of rising validation loss after its best: the patience most Keras/Lightning
# examples give EarlyStopping. A 5 % rise is beyond the noise of a validation set of a few
# hundred examples; 50 % is severe.
PATIENCE = 3
MIN_RISE = 0.05
CRITICAL_RISE = 0.5

REMEDY = ("Add dropout or L2 weight decay, use early stopping (EarlyStopping(monitor='val_loss', "
          "restore_best_weights=True)), get more data or augment it, or use a smaller model.")


@rule("overfitting")
def overfitting(run: RunData) -> list[Finding]:
    if "val_loss" not in run.scalars or run.scalars["val_loss"].notna().sum() == 0:
        raise Skip("no validation loss was logged (run.log(val_loss=...) once per epoch)")
    evals = run.scalars[run.scalars["val_loss"].notna()].set_index("step")
    if len(evals) < PATIENCE + 2:
        raise Skip(f"needs >= {PATIENCE + 2} validation evaluations, got {len(evals)}")
    val = evals["val_loss"]
    train = _train_loss_at(run, evals)
    best_pos = int(np.argmin(val.to_numpy()))
    best, end = float(val.iloc[best_pos]), float(val.iloc[-1])
    rising = len(val) - 1 - best_pos
    if rising < PATIENCE or end < best * (1 + MIN_RISE) or train is None:
        return []
    train_best, train_end = float(train.iloc[best_pos]), float(train.iloc[-1])
    if not train_end < train_best:
        return []  # both rising: that is divergence, not overfitting
    epochs = evals["epoch"].to_numpy() if "epoch" in evals else np.arange(len(evals))
    best_epoch, stop_epoch = int(epochs[best_pos]), int(epochs[min(best_pos + PATIENCE, len(epochs) - 1)])
    gap = end - train_end
    return [Finding(
        kind="overfitting", severity="critical" if end >= best * (1 + CRITICAL_RISE) else "warning", layer=None,
        steps=(int(val.index[best_pos]), int(val.index[-1])),
        evidence={"best_epoch": best_epoch, "best_val_loss": best, "final_val_loss": end,
                  "train_loss_at_best": train_best, "final_train_loss": train_end, "gap": gap,
                  "early_stopping_epoch": stop_epoch, "patience": PATIENCE},
        message=(f"Overfitting: validation loss rose from {fmt(best)} (epoch {best_epoch}) to {fmt(end)} over "
                 f"{rising} evaluations while training loss fell from {fmt(train_best)} to {fmt(train_end)}; "
                 f"the gap is {fmt(gap)}. Early stopping with patience {PATIENCE} would have stopped at epoch "
                 f"{stop_epoch} and kept epoch {best_epoch}."),
        remedy=REMEDY)]


def _train_loss_at(run: RunData, evals: pd.DataFrame) -> pd.Series | None:
    """The training loss at each evaluation: the logged epoch ``train_loss``, or the mean step loss
    since the previous evaluation."""
    if "train_loss" in evals and evals["train_loss"].notna().all():
        return evals["train_loss"]
    loss = run.loss
    if loss.empty:
        return None
    means, previous = [], -1
    for step in evals.index:
        window = loss[(loss.index > previous) & (loss.index <= step)]
        means.append(window.mean() if len(window) else np.nan)
        previous = step
    series = pd.Series(means, index=evals.index)
    return None if series.isna().any() else series
