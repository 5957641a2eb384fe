"""Each optimizer name implements its textbook update: the Trainer's parameter trajectory matches
an independent NumPy implementation of the update equations (float64, to 1e-6)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.trainer.optimizers import resolve_optimizer

N, D = 10, 3
BATCH = 4
EPOCHS = 3


def problem():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(N, D))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=N)
    theta0 = np.array([0.2, -0.1, 0.05, 0.0])  # w (3), b
    return X, y, theta0


def grad(theta, Xb, yb):
    """Gradient of mean((X w + b - y)^2)."""
    r = Xb @ theta[:D] + theta[D] - yb
    return np.concatenate([2.0 / len(yb) * Xb.T @ r, [2.0 / len(yb) * r.sum()]])


def batches(name, X, y):
    size = {"gd": N, "sgd": 1}.get(name, BATCH)
    for _ in range(EPOCHS):
        for s in range(0, N, size):
            yield X[s:s + size], y[s:s + size]


def sgd(name, X, y, theta, lr=0.01):
    out = []
    for Xb, yb in batches(name, X, y):
        theta = theta - lr * grad(theta, Xb, yb)
        out.append(theta)
    return out


def momentum(name, X, y, theta, lr=0.01, gamma=0.9):
    V, out = np.zeros_like(theta), []
    for Xb, yb in batches(name, X, y):
        V = gamma * V + lr * grad(theta, Xb, yb)       # V = γV + α∇J(θ)
        theta = theta - V
        out.append(theta)
    return out


def nag(name, X, y, theta, lr=0.01, gamma=0.9):
    """Sutskever et al. (2013): V = γV + α∇J(θ − γV); θ = θ − V.

    torch.optim.SGD(nesterov=True) keeps the look-ahead point φ = θ − γV as its parameters (the
    standard change of variables, Bengio et al. 2012), so φ is what we compare.
    """
    V, out = np.zeros_like(theta), []
    for Xb, yb in batches(name, X, y):
        V = gamma * V + lr * grad(theta - gamma * V, Xb, yb)
        theta = theta - V
        out.append(theta - gamma * V)
    return out


def adagrad(name, X, y, theta, lr=0.01, eps=1e-10):
    G, out = np.zeros_like(theta), []
    for Xb, yb in batches(name, X, y):
        g = grad(theta, Xb, yb)
        G = G + g * g                                   # accumulated squares
        theta = theta - lr * g / (np.sqrt(G) + eps)
        out.append(theta)
    return out


def rmsprop(name, X, y, theta, lr=1e-3, rho=0.9, eps=1e-8):
    E, out = np.zeros_like(theta), []
    for Xb, yb in batches(name, X, y):
        g = grad(theta, Xb, yb)
        E = rho * E + (1 - rho) * g * g                 # EMA of squares
        theta = theta - lr * g / (np.sqrt(E) + eps)
        out.append(theta)
    return out


def adadelta(name, X, y, theta, rho=0.9, eps=1e-6):
    """Zeiler (2012), Algorithm 1: no learning rate."""
    Eg, Edx, out = np.zeros_like(theta), np.zeros_like(theta), []
    for Xb, yb in batches(name, X, y):
        g = grad(theta, Xb, yb)
        Eg = rho * Eg + (1 - rho) * g * g
        dx = -np.sqrt(Edx + eps) / np.sqrt(Eg + eps) * g
        Edx = rho * Edx + (1 - rho) * dx * dx
        theta = theta + dx
        out.append(theta)
    return out


def adam(name, X, y, theta, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba (2015), Algorithm 1."""
    m, v, out = np.zeros_like(theta), np.zeros_like(theta), []
    for t, (Xb, yb) in enumerate(batches(name, X, y), start=1):
        g = grad(theta, Xb, yb)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return out


REFERENCE = {"gd": sgd, "sgd": sgd, "minibatch_sgd": sgd, "momentum": momentum, "nag": nag,
             "adagrad": adagrad, "rmsprop": rmsprop, "adadelta": adadelta, "adam": adam}


class Trajectory(dg.Callback):
    def __init__(self, model):
        self.model, self.thetas = model, []

    def on_step_end(self, trainer, step, loss):
        self.thetas.append(torch.cat([self.model.weight.detach().flatten(), self.model.bias.detach()]).numpy().copy())


def linear_model(theta0):
    model = nn.Linear(D, 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(theta0[:D]).reshape(1, D))
        model.bias.fill_(theta0[D])
    return model


def test_every_registered_name_has_a_reference():
    assert set(dg.list_optimizers()) == set(REFERENCE)


@pytest.mark.parametrize("name", dg.list_optimizers())
def test_trajectory_matches_textbook_update(name):
    X, y, theta0 = problem()
    model = linear_model(theta0)
    traj = Trajectory(model)
    trainer = dg.Trainer(model, name, loss="mse", callbacks=[traj], progress=False)
    trainer.fit((X, y), epochs=EPOCHS, batch_size=BATCH if resolve_optimizer(name).batch_mode == "mini" else None,
                shuffle=False)
    expected = REFERENCE[name](name, X, y, theta0)
    assert len(traj.thetas) == len(expected)
    np.testing.assert_allclose(np.array(traj.thetas), np.array(expected), rtol=0, atol=1e-6)
    # and the trajectory actually moved (a test that cannot fail proves nothing)
    assert np.abs(np.array(expected[-1]) - theta0).max() > 1e-3


@pytest.mark.parametrize("name, steps_per_epoch", [("gd", 1), ("sgd", N), ("minibatch_sgd", math.ceil(N / BATCH)),
                                                   ("adam", math.ceil(N / BATCH))])
def test_steps_per_epoch(name, steps_per_epoch, tmp_path):
    X, y, theta0 = problem()
    trainer = dg.Trainer(linear_model(theta0), name, loss="mse", progress=False, run_dir=str(tmp_path / "run"))
    trainer.fit((X, y), epochs=2, batch_size=BATCH if name in ("minibatch_sgd", "adam") else None)
    assert trainer.step == 2 * steps_per_epoch
    scalars = dg.load_run(tmp_path / "run").scalars()
    assert scalars["loss"].notna().sum() == 2 * steps_per_epoch


def test_gd_with_chunks_is_still_full_batch():
    """gd with a batch_size (memory bound) accumulates gradients: the same trajectory as one batch."""
    X, y, theta0 = problem()
    a, b = linear_model(theta0), linear_model(theta0)
    dg.Trainer(a, "gd", loss="mse", lr=0.1, progress=False).fit((X, y), epochs=4)
    dg.Trainer(b, "gd", loss="mse", lr=0.1, progress=False).fit((X, y), epochs=4, batch_size=3)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=1e-12)


def test_gd_on_a_dataloader_accumulates_the_epoch():
    X, y, theta0 = problem()
    a, b = linear_model(theta0), linear_model(theta0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y)), batch_size=4)
    ta = dg.Trainer(a, "gd", loss="mse", lr=0.1, progress=False)
    ta.fit(loader, epochs=3)
    dg.Trainer(b, "gd", loss="mse", lr=0.1, progress=False).fit((X, y), epochs=3)
    assert ta.step == 3
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-12)


def test_defaults_are_the_textbook_ones():
    assert resolve_optimizer("momentum").defaults["momentum"] == 0.9
    assert resolve_optimizer("adadelta").defaults == {"lr": 1.0, "rho": 0.9, "eps": 1e-6}
    assert resolve_optimizer("adam").defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
    opt = dg.Trainer(nn.Linear(2, 1), "nag").optimizer
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_any_torch_optim_class_by_name_class_or_instance():
    model = nn.Linear(2, 1)
    assert isinstance(dg.Trainer(model, "AdamW", lr=0.01).optimizer, torch.optim.AdamW)
    assert isinstance(dg.Trainer(model, torch.optim.NAdam).optimizer, torch.optim.NAdam)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert dg.Trainer(model, opt).optimizer is opt


def test_lbfgs_gets_a_closure():
    X, y, theta0 = problem()
    model = linear_model(theta0)
    trainer = dg.Trainer(model, "LBFGS", lr=1.0, loss="mse", progress=False)
    before = trainer.evaluate((X, y))["loss"]
    trainer.fit((X, y), epochs=3, batch_size=N)
    # least squares: L-BFGS reaches the normal-equations solution
    A = np.c_[X, np.ones(N)]
    best = np.mean((A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2)
    assert trainer.evaluate((X, y))["loss"] == pytest.approx(best, rel=1e-6) and best < 0.1 * before


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="optimizer.*'adamm'.*'adadelta'"):
        dg.Trainer(nn.Linear(2, 1), "adamm")


@pytest.mark.parametrize("lr", [-0.1, float("nan")])
def test_negative_learning_rate(lr):
    with pytest.raises(ValueError, match="lr"):
        dg.Trainer(nn.Linear(2, 1), "adam", lr=lr)


def test_unknown_optimizer_kwarg_names_what_it_takes():
    with pytest.raises(TypeError, match="optimizer_kwargs.*momentum"):
        dg.Trainer(nn.Linear(2, 1), "adam", optimizer_kwargs={"momentum": 0.9})


def test_instance_over_other_parameters_is_refused():
    with pytest.raises(ValueError, match="optimizer"):
        dg.Trainer(nn.Linear(2, 1), torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1))


def test_sgd_refuses_a_batch_size():
    X, y, theta0 = problem()
    with pytest.raises(ValueError, match="batch_size.*sgd"):
        dg.Trainer(linear_model(theta0), "sgd", loss="mse").fit((X, y), batch_size=8)
