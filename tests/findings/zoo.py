"""The pathology zoo: small models that truly exhibit each pathology, and healthy ones.

Each builder trains for a few hundred steps inside dg.watch (or with the Trainer) and returns the
run directory. Seeds are fixed: every run is deterministic on CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import diagnose as dg

EVERY = 5


def _loop(model, opt, batches, run_dir, steps, loss_fn=nn.functional.cross_entropy, val=None, every=EVERY):
    """A plain training loop under dg.watch; evaluates ``val`` every ``steps // 20`` steps."""
    eval_every = max(steps // 20, 1)
    with dg.watch(model, opt, run_dir, every=every) as run:
        for step in range(steps):
            x, y = batches(step)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
            if val is not None and (step + 1) % eval_every == 0:
                model.eval()
                with torch.no_grad():
                    run.log(val_loss=loss_fn(model(val[0]), val[1]), epoch=(step + 1) // eval_every - 1)
                model.train()
    return Path(run_dir)


def _digits_batches(batch=64, images=False, seed=0):
    data = dg.datasets.digits(images=images)
    X, y = data.train
    g = torch.Generator().manual_seed(seed)

    def batches(step):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        return X[idx], y[idx]
    return batches, data


def vanishing(run_dir):
    """A 14-layer sigmoid MLP (the textbook case, Glorot & Bengio 2010)."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [32] * 14, 10, activation="sigmoid")
    return _loop(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, run_dir, 300)


def exploding(run_dir):
    """A deep ReLU MLP initialized with 3x He's gain: activations and gradients blow up with depth."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [64] * 8, 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=3.0 * (2.0 / m.in_features) ** 0.5)
    return _loop(model, torch.optim.SGD(model.parameters(), lr=1e-7), batches, run_dir, 200)


def dead(run_dir):
    """A ReLU layer whose biases start strongly negative: most units never fire again."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [64, 64], 10)
    with torch.no_grad():
        model.fc2.bias.fill_(-10.0)
    return _loop(model, torch.optim.SGD(model.parameters(), lr=0.05), batches, run_dir, 200)


def saturated(run_dir):
    """tanh on unscaled inputs (pixel values 0-16 times large weights)."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [64], 10, activation="tanh")

    def unscaled(step):
        x, y = batches(step)
        return x * 16 * 8, y
    return _loop(model, torch.optim.SGD(model.parameters(), lr=0.01), unscaled, run_dir, 200)


def nonfinite(run_dir):
    """A huge learning rate: weights overflow and NaN follows."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [64, 64], 10)
    return _loop(model, torch.optim.SGD(model.parameters(), lr=1e12), batches, run_dir, 50, every=1)


def overfit(run_dir):
    """Random labels on few rows with a wide MLP: it memorizes; validation loss rises."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(200, 20, generator=g), torch.randint(0, 2, (200,), generator=g)
    Xv, yv = torch.randn(200, 20, generator=g), torch.randint(0, 2, (200,), generator=g)
    model = dg.mlp(20, [512, 512], 2)
    trainer = dg.Trainer(model, "adam", lr=1e-3, run_dir=str(run_dir), diagnostics_every=EVERY, seed=0,
                         progress=False)
    trainer.fit((X, y), (Xv, yv), epochs=40, batch_size=50)
    return Path(run_dir)


def stalled(run_dir):
    """AdaGrad whose first batch is corrupt (scaled 1e4): every weight's accumulated squared
    gradient starts enormous, so every later step is tiny, for good."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 20, generator=g)
    y = (X[:, :5].sum(1) > 0).long()

    def first_batch_huge(step):
        idx = torch.randint(0, len(X), (64,), generator=g)
        return (X[idx] * 1e4 if step == 0 else X[idx]), y[idx]
    model = dg.mlp(20, [64], 2)
    return _loop(model, torch.optim.Adagrad(model.parameters(), lr=0.05), first_batch_huge, run_dir, 300)


def diverging(run_dir):
    """Linear regression with a learning rate just above stability (2 / largest curvature)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g)
    y = X @ torch.randn(8, 1, generator=g)
    model = nn.Sequential(nn.Linear(8, 1))
    curvature = torch.linalg.eigvalsh(2 * X.T @ X / len(X)).max().item()
    opt = torch.optim.SGD(model.parameters(), lr=2.2 / curvature)
    return _loop(model, opt, lambda step: (X, y), run_dir, 150, loss_fn=nn.functional.mse_loss)


def plateau(run_dir):
    """A learning rate far too small: the loss never moves from where it started."""
    torch.manual_seed(0)
    batches, _ = _digits_batches()
    model = dg.mlp(64, [64], 10)
    return _loop(model, torch.optim.SGD(model.parameters(), lr=1e-6), batches, run_dir, 300)


# -- healthy ----------------------------------------------------------------------------------
def healthy_adam_mlp(run_dir):
    torch.manual_seed(0)
    batches, data = _digits_batches()
    model = dg.mlp(64, [128, 64], 10)
    return _loop(model, torch.optim.Adam(model.parameters(), lr=1e-3), batches, run_dir, 400, val=data.val)


class _ResidualCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(16)
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.act0, self.act1, self.act2 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.act0(self.bn0(self.stem(x)))
        h = self.act2(h + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(h))))))
        return self.head(self.pool(h).flatten(1))


def healthy_residual_cnn(run_dir):
    torch.manual_seed(0)
    batches, data = _digits_batches(images=True)
    model = _ResidualCNN()
    return _loop(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), batches, run_dir, 300,
                 val=data.val)


def healthy_batchnorm_mlp(run_dir):
    data = dg.datasets.cart_abandonment()
    torch.manual_seed(0)
    model = dg.mlp(data.n_features, [64, 32], 2, batch_norm=True, dropout=0.1)
    dg.Trainer(model, "adadelta", run_dir=str(run_dir), diagnostics_every=EVERY, seed=0,
               early_stopping=dg.EarlyStopping(patience=5, restore_best_weights=True),
               progress=False).fit(data.train, data.val, epochs=30, batch_size=64)
    return Path(run_dir)


PATHOLOGIES = {
    # kind: (builder, the layer the finding must name, or None for run-level findings)
    "vanishing_gradient": (vanishing, "fc1"),
    "exploding_gradient": (exploding, "fc1"),
    "dead_units": (dead, "act2"),
    "saturation": (saturated, "act1"),
    "nonfinite": (nonfinite, "out"),
    "overfitting": (overfit, None),
    "stalled_learning_rate": (stalled, "out"),
    "divergence": (diverging, None),
    "loss_plateau": (plateau, None),
}
HEALTHY = {"adam_mlp": healthy_adam_mlp, "residual_cnn_sgd_momentum": healthy_residual_cnn,
           "batchnorm_mlp": healthy_batchnorm_mlp}
