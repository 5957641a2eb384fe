"""Train the demo model with every regularizer the Trainer offers, then read the recorded run back.

    python examples/train_cart_abandonment.py
"""

import torch

import diagnose as dg

data = dg.datasets.cart_abandonment()
torch.manual_seed(0)
model = dg.mlp(data.n_features, hidden=[64, 32], out_features=2, batch_norm=True, dropout=0.2)

trainer = dg.Trainer(
    model, optimizer="adadelta",                      # no learning rate to tune
    loss="cross_entropy",
    regularizers=[dg.L2(1e-4), dg.L1(1e-5), dg.Entropy(0.05), dg.GaussianNoise(0.05)],
    early_stopping=dg.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
    grad_clip=1.0, run_dir="runs/example-cart", seed=0)
history = trainer.fit(data.train, data.val, epochs=60, batch_size=64)
print(history.tail())
print("best epoch:", trainer.early_stopping.best_epoch, "validation:", trainer.evaluate(data.val))

run = dg.load_run("runs/example-cart")
print(run.layer_stats().groupby("layer")[["grad_norm", "weight_norm"]].median())
