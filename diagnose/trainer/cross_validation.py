"""k-fold cross-validation of the Trainer on scikit-learn's splitters (stratified for classes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.multiclass import type_of_target
from torch import nn

from diagnose import validate
from diagnose.trainer.data import check_pair
from diagnose.trainer.trainer import Trainer


@dataclass
class CrossValidation:
    """Per-fold metrics (``folds``), their mean and standard deviation, each fold's history, the
    (train, held-out) row indices of each fold, and with ``keep_models=True`` each fold's trained
    model (for ``dg.explanation_consistency``)."""

    folds: pd.DataFrame
    mean: pd.Series
    std: pd.Series
    histories: list[pd.DataFrame]
    indices: list[tuple[np.ndarray, np.ndarray]]
    models: list[nn.Module] = field(default_factory=list)

    def __repr__(self) -> str:
        summary = ", ".join(f"{k}={self.mean[k]:.4g}±{self.std[k]:.2g}" for k in self.mean.index)
        return f"CrossValidation({len(self.folds)} folds: {summary})"


def cross_validate(
    model_fn: Callable[[], nn.Module],
    data: tuple[Any, Any],
    k: int = 5,
    epochs: int = 10,
    batch_size: int | None = None,
    stratified: bool | None = None,
    seed: int = 0,
    keep_models: bool = False,
    **trainer_kwargs: Any,
) -> CrossValidation:
    """Train a fresh ``model_fn()`` on k-1 folds and evaluate it on the held-out fold, k times.

    Args:
        model_fn: builds a new, untrained model (called once per fold, after seeding).
        data: an ``(X, y)`` pair of arrays or tensors.
        k: number of folds (>= 2).
        stratified: keep class proportions in each fold; None does so when ``y`` holds classes.
        seed: seeds the fold assignment and each fold's training.
        keep_models: keep each fold's trained model in ``models`` (off by default: k models of a
            large network may not fit in the device's memory together).
        trainer_kwargs: passed to ``dg.Trainer`` (optimizer, lr, loss, regularizers, ...). A
            ``run_dir`` gets one sub-directory per fold (``fold0``, ``fold1``, ...).

    Returns:
        per-fold final metrics (train and held-out loss, accuracy for classification), their
        mean and standard deviation, and the per-epoch histories.
    """
    validate.integer("k", k, minimum=2)
    if not callable(model_fn):
        raise TypeError(f"model_fn: expected a callable returning a new nn.Module, got {type(model_fn).__name__}")
    X, y = check_pair(data, "data")
    if len(X) < k:
        raise ValueError(f"k: {k} folds need at least {k} examples, data has {len(X)}")
    y_np = y.numpy()
    if stratified is None:
        stratified = type_of_target(y_np) in ("binary", "multiclass")
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if stratified
                else KFold(k, shuffle=True, random_state=seed))
    run_dir = trainer_kwargs.pop("run_dir", None)
    rows, histories, indices, models = [], [], [], []
    for fold, (train_idx, val_idx) in enumerate(splitter.split(np.zeros(len(y_np)), y_np if stratified else None)):
        torch.manual_seed(seed + fold)
        model = model_fn()
        trainer = Trainer(model, seed=seed + fold,
                          run_dir=str(Path(run_dir) / f"fold{fold}") if run_dir else None, **trainer_kwargs)
        tr = (X[train_idx], y[train_idx])
        va = (X[val_idx], y[val_idx])
        history = trainer.fit(tr, va, epochs=epochs, batch_size=batch_size)
        histories.append(history)
        indices.append((train_idx, val_idx))
        if keep_models:
            models.append(model)
        # Final metrics of the model as it ends (early stopping may have restored its best epoch).
        train_m, val_m = trainer.evaluate(tr), trainer.evaluate(va)
        rows.append({"fold": fold, "n_train": len(train_idx), "n_val": len(val_idx), "epochs_run": len(history),
                     **{f"train_{m}": v for m, v in train_m.items()},
                     **{f"val_{m}": v for m, v in val_m.items()}})
    folds = pd.DataFrame(rows)
    metrics = folds.drop(columns=["fold", "n_train", "n_val", "epochs_run"])
    return CrossValidation(folds, metrics.mean(), metrics.std(ddof=1), histories, indices, models)
