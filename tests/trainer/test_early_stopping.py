"""EarlyStopping follows keras.callbacks.EarlyStopping: scripted sequences, enumerated by hand."""

import pytest
import torch
from torch import nn

import diagnose as dg


def run(es, values, name="val_loss", model=None):
    """Feed values epoch by epoch; return the epoch at which it asked to stop, or None."""
    es.reset()
    for epoch, v in enumerate(values):
        if es.update(epoch, {name: v}, model):
            return epoch
    return None


def test_patience_counts_epochs_without_improvement():
    # best at epoch 1; epochs 2 and 3 do not improve -> wait reaches 2 at epoch 3
    es = dg.EarlyStopping(patience=2)
    assert run(es, [1.0, 0.9, 0.95, 0.96, 0.5]) == 3
    assert es.best == 0.9 and es.best_epoch == 1 and es.stopped_epoch == 3


def test_patience_zero_stops_at_the_first_non_improvement_but_never_at_epoch_0():
    assert run(dg.EarlyStopping(patience=0), [1.0, 1.1]) == 1
    assert run(dg.EarlyStopping(patience=0), [1.0, 0.5, 0.4]) is None


def test_min_delta_is_the_smallest_change_that_counts():
    # 0.95 and 0.92 improve on 1.0 by less than 0.1: not improvements
    assert run(dg.EarlyStopping(patience=2, min_delta=0.1), [1.0, 0.95, 0.92, 0.5]) == 2
    assert run(dg.EarlyStopping(patience=2, min_delta=0.01), [1.0, 0.95, 0.92, 0.91]) is None


def test_auto_mode_maximizes_accuracy():
    es = dg.EarlyStopping(monitor="val_accuracy", patience=1)
    assert es.mode == "max"
    assert run(es, [0.5, 0.6, 0.55], name="val_accuracy") == 2
    assert dg.EarlyStopping(monitor="train_loss").mode == "min"


def test_explicit_mode_and_negative_min_delta_are_keras_compatible():
    es = dg.EarlyStopping(monitor="score", mode="max", patience=1, min_delta=-0.1)  # Keras takes |min_delta|
    assert run(es, [0.5, 0.55, 0.58], name="score") == 1


def test_start_from_epoch_ignores_the_warm_up():
    # the bad epochs 0 and 1 are ignored; watching starts at epoch 2
    es = dg.EarlyStopping(patience=1, start_from_epoch=2)
    assert run(es, [5.0, 6.0, 1.0, 0.9, 1.2]) == 4
    assert es.best_epoch == 3


def test_baseline_must_be_beaten_to_reset_the_wait():
    # improving but never below the baseline 0.5: the wait keeps growing, and the first epoch
    # that does not improve stops training (Keras: an improvement returns before the check)
    es = dg.EarlyStopping(patience=2, baseline=0.5)
    assert run(es, [0.9, 0.8, 0.7, 0.75]) == 3
    assert run(dg.EarlyStopping(patience=2, baseline=0.5), [0.9, 0.4, 0.45, 0.39]) is None


def test_nan_is_never_an_improvement_nor_counted():
    assert run(dg.EarlyStopping(patience=1), [1.0, float("nan"), 0.9]) is None


def test_restore_best_weights_keeps_the_best_epochs_state():
    model = nn.Linear(1, 1, bias=False)
    es = dg.EarlyStopping(patience=1, restore_best_weights=True)
    es.reset()
    for epoch, (w, v) in enumerate([(1.0, 0.5), (2.0, 0.3), (3.0, 0.4), (4.0, 0.6)]):
        with torch.no_grad():
            model.weight.fill_(w)
        if es.update(epoch, {"val_loss": v}, model):
            break
    assert es.restore(model)
    assert model.weight.item() == 2.0


def test_missing_monitor_names_the_logged_ones():
    with pytest.raises(ValueError, match="monitor.*'val_auc'.*val_loss"):
        dg.EarlyStopping(monitor="val_auc").update(0, {"val_loss": 1.0})


@pytest.mark.parametrize("kwargs, match", [
    ({"patience": -1}, "patience"), ({"patience": 1.5}, "patience"), ({"mode": "up"}, "mode"),
    ({"start_from_epoch": -2}, "start_from_epoch"), ({"monitor": ""}, "monitor")])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dg.EarlyStopping(**kwargs)
