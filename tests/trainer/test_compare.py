"""compare_optimizers: same model, data and seed under each optimizer."""

import pytest
from matplotlib.figure import Figure

import diagnose as dg


def data():
    d = dg.datasets.digits()
    return (d.X_train[:200], d.y_train[:200]), (d.X_val[:100], d.y_val[:100])


def test_curves_and_figure():
    train, val = data()
    curves, fig = dg.compare_optimizers(lambda: dg.mlp(64, [32], 10), train, val,
                                        optimizers=["gd", "sgd", "momentum", "adagrad", "adadelta", "adam"],
                                        epochs=3, batch_size=20)
    assert list(curves["optimizer"].unique()) == ["gd", "sgd", "momentum", "adagrad", "adadelta", "adam"]
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "steps", "seconds"} <= set(curves.columns)
    last = curves.groupby("optimizer").last()
    assert last.loc["gd", "steps"] == 3 and last.loc["sgd", "steps"] == 600 and last.loc["adam", "steps"] == 30
    assert (curves.groupby("optimizer")["seconds"].diff().dropna() > 0).all()
    # 3 full-batch GD steps at lr 0.01 barely move; Adadelta (30 steps, no lr to tune) learns
    assert last.loc["gd", "val_loss"] == last["val_loss"].max()
    assert last.loc["adadelta", "val_accuracy"] > 0.3 > last.loc["gd", "val_accuracy"]
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].get_legend().get_texts()) == 6


def test_every_optimizer_starts_from_the_same_weights():
    # with a zero learning rate nothing moves: identical curves prove identical initial weights
    train, val = data()
    curves, _ = dg.compare_optimizers(lambda: dg.mlp(64, [16], 10), train, val,
                                      optimizers=[("minibatch_sgd", {"lr": 0.0}), ("momentum", {"lr": 0.0})], epochs=2)
    a, b = (g["val_loss"].tolist() for _, g in curves.groupby("optimizer", sort=False))
    assert a == b
    assert list(curves["optimizer"].unique()) == ["minibatch_sgd(lr=0.0)", "momentum(lr=0.0)"]


@pytest.mark.parametrize("optimizers, match", [([], "optimizers"), (["adam", "adam"], "duplicate"),
                                               ([3], "optimizers"), (["adamm"], "adamm")])
def test_bad_optimizer_lists(optimizers, match):
    train, val = data()
    with pytest.raises((ValueError, TypeError), match=match):
        dg.compare_optimizers(lambda: dg.mlp(64, [4], 10), train, val, optimizers=optimizers, epochs=1)
