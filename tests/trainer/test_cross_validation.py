"""k-fold cross-validation on scikit-learn's splitters."""

import numpy as np
import pytest
import torch

import diagnose as dg


def test_stratified_k_fold_on_digits(tmp_path):
    d = dg.datasets.digits()
    X, y = d.X_train[:300], d.y_train[:300]
    cv = dg.cross_validate(lambda: dg.mlp(64, [32], 10), (X, y), k=3, epochs=4, optimizer="adam", lr=1e-2,
                           progress=False, run_dir=str(tmp_path))
    assert list(cv.folds["fold"]) == [0, 1, 2]
    assert cv.folds["n_val"].sum() == 300 and (cv.folds["n_train"] + cv.folds["n_val"] == 300).all()
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(cv.mean.index)
    assert cv.mean["val_accuracy"] == pytest.approx(cv.folds["val_accuracy"].mean())
    assert cv.std["val_loss"] == pytest.approx(cv.folds["val_loss"].std(ddof=1))
    assert cv.mean["val_accuracy"] > 0.7
    assert len(cv.histories) == 3 and all(len(h) == 4 for h in cv.histories)
    assert all(dg.load_run(tmp_path / f"fold{i}").meta["complete"] for i in range(3))


def test_folds_keep_class_proportions():
    # 10% positives: every stratified held-out fold has exactly 2 of its 20 rows positive
    y = torch.tensor([1] * 10 + [0] * 90)
    X = torch.randn(100, 3)
    cv = dg.cross_validate(lambda: dg.mlp(3, [4], 2), (X, y), k=5, epochs=1, progress=False)
    assert list(cv.folds["n_val"]) == [20] * 5
    assert [int(y[val].sum()) for _, val in cv.indices] == [2] * 5
    held_out = np.concatenate([val for _, val in cv.indices])
    assert sorted(held_out) == list(range(100))  # each row held out exactly once
    assert all(np.intersect1d(tr, va).size == 0 for tr, va in cv.indices)


def test_regression_uses_plain_k_fold():
    X = torch.randn(60, 2)
    cv = dg.cross_validate(lambda: torch.nn.Linear(2, 1), (X, X.sum(1)), k=4, epochs=2, loss="mse", progress=False)
    assert "val_accuracy" not in cv.mean and len(cv.folds) == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 1}, "k"), ({"data": (torch.randn(3, 2), torch.zeros(3))}, "k: 5 folds")])
def test_bad_arguments(kwargs, match):
    args = {"data": (torch.randn(20, 2), torch.zeros(20, dtype=torch.long)), **kwargs}
    with pytest.raises(ValueError, match=match):
        dg.cross_validate(lambda: dg.mlp(2, [4], 2), **args)
