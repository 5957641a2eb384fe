"""Trainer behaviour: regularizers, early stopping, clipping, scheduling, data forms, errors."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.trainer.regularizers import output_entropy


def blobs(n=200, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def weight_norm(model, p):
    return sum(w.detach().abs().pow(p).sum() for w in model.parameters() if w.ndim > 1) ** (1 / p)


def test_fit_returns_one_row_per_epoch_with_the_api_columns():
    X, y = blobs()
    history = dg.Trainer(dg.mlp(6, [16], 3), "adam", lr=1e-2, progress=False).fit((X, y), (X, y), epochs=4)
    assert isinstance(history, pd.DataFrame) and len(history) == 4
    assert list(history.columns) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]


def test_metrics_equal_a_direct_computation():
    X, y = blobs()
    trainer = dg.Trainer(dg.mlp(6, [16], 3, dropout=0.3), "adam", progress=False)
    trainer.fit((X, y), (X[:50], y[:50]), epochs=2)
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(X[:50])
    last = trainer.history.iloc[-1]
    assert last["val_loss"] == pytest.approx(nn.functional.cross_entropy(out, y[:50]).item(), rel=1e-6)
    assert last["val_accuracy"] == pytest.approx((out.argmax(1) == y[:50]).float().mean().item())
    assert trainer.model.training is False  # evaluation restores the mode it found (eval here)


def overfit_problem():
    # random labels on few rows, a wide network: validation loss must rise (memorization)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 20, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    Xv = torch.randn(64, 20, generator=g)
    yv = torch.randint(0, 2, (64,), generator=g)
    return (X, y), (Xv, yv)


def test_early_stopping_stops_an_overfitting_model_and_restores_its_best_epoch():
    train, val = overfit_problem()
    torch.manual_seed(0)
    model = dg.mlp(20, [256, 256], 2)
    es = dg.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    trainer = dg.Trainer(model, "adam", lr=1e-3, early_stopping=es, seed=0, progress=False)
    history = trainer.fit(train, val, epochs=200)
    assert len(history) < 200 and trainer.stopped_epoch == len(history) - 1
    assert es.best_epoch == int(history["val_loss"].idxmin())
    assert trainer.stopped_epoch == es.best_epoch + 3
    # the weights now in the model are the best epoch's: recomputing gives the best recorded loss
    assert trainer.evaluate(val)["loss"] == pytest.approx(history["val_loss"].min(), rel=1e-6, abs=1e-7)
    assert trainer.evaluate(val)["loss"] < history["val_loss"].iloc[-1]
    # training accuracy kept climbing: it was overfitting, not stuck
    assert history["train_accuracy"].iloc[-1] > history["train_accuracy"].iloc[0]


def test_early_stopping_restores_batch_norm_statistics_too():
    train, val = overfit_problem()
    torch.manual_seed(0)
    model = dg.mlp(20, [128], 2, batch_norm=True)
    es = dg.EarlyStopping(patience=2, restore_best_weights=True)
    trainer = dg.Trainer(model, "adam", lr=1e-2, early_stopping=es, seed=0, progress=False)
    history = trainer.fit(train, val, epochs=100)
    assert trainer.evaluate(val)["loss"] == pytest.approx(history["val_loss"].min(), rel=1e-6, abs=1e-7)


def train_with(regularizers, seed=0):
    X, y = blobs(seed=3)
    torch.manual_seed(seed)
    model = dg.mlp(6, [32], 3)
    dg.Trainer(model, "minibatch_sgd", lr=0.1, regularizers=regularizers, seed=seed,
               progress=False).fit((X, y), epochs=15, batch_size=16)
    return model


def test_l1_lowers_the_l1_norm_of_the_weights():
    plain, l1 = train_with([]), train_with([dg.L1(1e-2)])
    assert weight_norm(l1, 1) < 0.9 * weight_norm(plain, 1)


def test_l2_lowers_the_l2_norm_of_the_weights():
    plain, l2 = train_with([]), train_with([dg.L2(1e-2)])
    assert weight_norm(l2, 2) < 0.9 * weight_norm(plain, 2)


def test_l2_gradient_is_torch_weight_decay():
    """dg.L2(lam) adds lam * w to the gradient: one SGD step equals torch's weight_decay=lam."""
    X, y = blobs()
    a, b = dg.mlp(6, [8], 3), dg.mlp(6, [8], 3)
    b.load_state_dict(a.state_dict())
    dg.Trainer(a, "gd", lr=0.1, regularizers=[dg.L2(0.5, include_bias=True)], progress=False).fit((X, y), epochs=1)
    opt = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=0.5)
    dg.Trainer(b, opt, progress=False).fit((X, y), epochs=1, batch_size=len(X))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_penalties_have_their_closed_forms():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        model.bias.fill_(10.0)
    assert dg.L1(0.1).penalty(model, None).item() == pytest.approx(0.1 * 6.5)
    assert dg.L2(0.1).penalty(model, None).item() == pytest.approx(0.05 * 14.25)
    assert dg.L1(0.1, include_bias=True).penalty(model, None).item() == pytest.approx(0.1 * 26.5)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2), (3/4, 1/4)
    h = [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    assert dg.Entropy(0.5).penalty(model, logits).item() == pytest.approx(-0.5 * sum(h) / 2)
    # binary: a single logit is a Bernoulli distribution
    assert output_entropy(torch.tensor([[math.log(3.0)]])).item() == pytest.approx(h[1])


def test_entropy_penalty_makes_predictions_less_confident():
    X, y = blobs()
    plain, ent = train_with([]), train_with([dg.Entropy(1.0)])
    with torch.no_grad():
        assert output_entropy(ent(X)).mean() > 1.5 * output_entropy(plain(X)).mean()


def test_gaussian_noise_is_active_in_training_only():
    X, y = blobs(n=40)
    model = dg.mlp(6, [8], 3)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].detach().clone())))
    trainer = dg.Trainer(model, "gd", regularizers=[dg.GaussianNoise(0.5)], progress=False)
    trainer.fit((X, y), (X, y), epochs=1)
    train_inputs = [x for training, x in seen if training]
    eval_inputs = [x for training, x in seen if not training]
    assert len(train_inputs) == 1 and len(eval_inputs) == 1
    noise = train_inputs[0] - X
    assert noise.std().item() == pytest.approx(0.5, rel=0.15) and abs(noise.mean().item()) < 0.1
    torch.testing.assert_close(eval_inputs[0], X)
    seen.clear()
    trainer.predict(X)
    torch.testing.assert_close(seen[0][1], X)


def test_augmentation_applies_to_training_batches_only():
    X, y = blobs(n=40)
    model = dg.mlp(6, [8], 3)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].detach().clone())))
    dg.Trainer(model, "gd", augment=lambda x: x.flip(-1), progress=False).fit((X, y), (X, y), epochs=1)
    torch.testing.assert_close([x for t, x in seen if t][0], X.flip(-1))
    torch.testing.assert_close([x for t, x in seen if not t][0], X)


class Grads(dg.Callback):
    def __init__(self):
        self.grads = []

    def on_step_end(self, trainer, step, loss):
        self.grads.append([p.grad.clone() for p in trainer.model.parameters()])


def test_grad_clip_by_norm(tmp_path):
    X, y = blobs()
    X = X * 50  # large gradients
    cb = Grads()
    dg.Trainer(dg.mlp(6, [16], 3), "minibatch_sgd", lr=1e-3, grad_clip=0.5, callbacks=[cb], progress=False,
               run_dir=str(tmp_path / "r")).fit((X, y), epochs=1)
    norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs])).item() for gs in cb.grads]
    assert max(norms) <= 0.5 + 1e-5
    # the watch records the gradient the optimizer used (clipped); the raw norm is logged too
    run = dg.load_run(tmp_path / "r")
    used = run.layer_stats().groupby("step")["grad_norm"].apply(lambda s: np.sqrt((s ** 2).sum()))
    assert used.max() <= 0.5 + 1e-5
    raw = run.scalars()["grad_norm_before_clip"]
    assert raw.max() > 1.0 and np.allclose(np.minimum(raw, 0.5), used.to_numpy(), rtol=1e-4)


def test_grad_clip_by_value():
    X, y = blobs()
    cb = Grads()
    dg.Trainer(dg.mlp(6, [16], 3), "minibatch_sgd", grad_clip=1e-3, clip_mode="value", callbacks=[cb],
               progress=False).fit((X * 50, y), epochs=1)
    assert max(g.abs().max().item() for gs in cb.grads for g in gs) <= 1e-3 + 1e-9


def test_scheduler_decays_the_learning_rate():
    X, y = blobs()
    history = dg.Trainer(dg.mlp(6, [8], 3), "minibatch_sgd", lr=0.1,
                         scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                         progress=False).fit((X, y), epochs=3)
    assert history["lr"].tolist() == pytest.approx([0.1, 0.05, 0.025])


def test_reduce_on_plateau_gets_the_monitored_value():
    X, y = blobs()
    model = dg.mlp(6, [8], 3)
    trainer = dg.Trainer(model, "minibatch_sgd", lr=1e-7,
                         scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0),
                         progress=False)
    history = trainer.fit((X, y), (X, y), epochs=3)
    # a tiny lr keeps val_loss flat (no relative improvement of 1e-4): the second epoch reduces it
    assert history["lr"].tolist() == pytest.approx([1e-7, 1e-7, 1e-8])


def test_accepts_datasets_dataloaders_arrays_and_frames():
    X, y = blobs(n=60)
    ds = torch.utils.data.TensorDataset(X, y)
    for data in [(X.numpy(), y.numpy()), ds, torch.utils.data.DataLoader(ds, batch_size=16),
                 (pd.DataFrame(X.numpy()), pd.Series(y.numpy()))]:
        h = dg.Trainer(dg.mlp(6, [8], 3), "adam", progress=False).fit(data, data, epochs=1)
        assert len(h) == 1 and np.isfinite(h["val_loss"]).all()


def test_binary_classification_with_one_logit():
    X, y = blobs(classes=2)
    trainer = dg.Trainer(dg.mlp(6, [8], 1), "adam", lr=1e-2, loss="bce", progress=False)
    history = trainer.fit((X, y), (X, y), epochs=10)
    assert history["val_accuracy"].iloc[-1] > 0.9


def test_regression_logs_no_accuracy():
    X = torch.randn(50, 3)
    history = dg.Trainer(nn.Linear(3, 1), "adam", loss="mse", progress=False).fit((X, X.sum(1)), epochs=2)
    assert "train_accuracy" not in history


def test_same_seed_same_trajectory():
    X, y = blobs()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = dg.mlp(6, [16], 3, dropout=0.5)
        runs.append(dg.Trainer(model, "adam", seed=1, regularizers=[dg.GaussianNoise(0.1)],
                               progress=False).fit((X, y), epochs=3)["train_loss"].tolist())
    assert runs[0] == runs[1]


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("train, match", [
    ((torch.randn(10, 6), torch.zeros(9, dtype=torch.long)), "train_data.*10 rows.*9"),
    ((torch.randn(0, 6), torch.zeros(0, dtype=torch.long)), "train_data.*empty"),
    ((torch.randn(10, 6),), "train_data.*pair"),
    ("not data", "train_data"),
])
def test_bad_training_data_is_named(train, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dg.Trainer(dg.mlp(6, [8], 3), "adam", progress=False).fit(train, epochs=1)


def test_a_monitor_that_is_never_logged_is_refused_before_training():
    X, y = blobs()
    model = dg.mlp(6, [8], 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = dg.Trainer(model, "adam", early_stopping=dg.EarlyStopping(monitor="val_loss"), progress=False)
    with pytest.raises(ValueError, match="monitor.*'val_loss'.*no val_data"):
        trainer.fit((X, y), epochs=3)
    trainer = dg.Trainer(model, "adam", early_stopping=dg.EarlyStopping(monitor="val_f1"), progress=False)
    with pytest.raises(ValueError, match="monitor.*'val_f1'.*val_accuracy"):
        trainer.fit((X, y), (X, y), epochs=3)
    for k, v in model.state_dict().items():  # nothing trained, nothing lost
        torch.testing.assert_close(v, before[k])


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "hinge"}, "loss.*'hinge'"), ({"grad_clip": -1.0}, "grad_clip"), ({"clip_mode": "max"}, "clip_mode"),
    ({"regularizers": [0.1]}, r"regularizers\[0\]"), ({"early_stopping": 3}, "early_stopping"),
    ({"augment": "flip"}, "augment")])
def test_bad_trainer_arguments_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dg.Trainer(dg.mlp(6, [8], 3), "adam", **kwargs)


@pytest.mark.parametrize("reg, match", [(lambda: dg.L1(-1.0), "lam"), (lambda: dg.L2("x"), "lam"),
                                        (lambda: dg.GaussianNoise(-0.1), "std"), (lambda: dg.Entropy(-1), "beta")])
def test_bad_regularizer_strengths(reg, match):
    with pytest.raises((ValueError, TypeError), match=match):
        reg()


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size")])
def test_bad_fit_arguments(kwargs, match):
    X, y = blobs()
    with pytest.raises(ValueError, match=match):
        dg.Trainer(dg.mlp(6, [8], 3), "adam").fit((X, y), **kwargs)


def test_an_existing_run_is_never_overwritten(tmp_path):
    X, y = blobs()
    dg.Trainer(dg.mlp(6, [8], 3), "adam", run_dir=str(tmp_path), progress=False).fit((X, y), epochs=1)
    size = (tmp_path / "run.sqlite").stat().st_size
    with pytest.raises(FileExistsError, match="run_dir"):
        dg.Trainer(dg.mlp(6, [8], 3), "adam", run_dir=str(tmp_path), progress=False).fit((X, y), epochs=1)
    assert dg.load_run(tmp_path).meta["complete"] is True and (tmp_path / "run.sqlite").stat().st_size == size
