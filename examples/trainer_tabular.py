"""The cart-abandonment scenario: train with every regularizer the Trainer offers, record the
diagnostics and the model, read the run back, and write the report with explanations.

    python examples/trainer_tabular.py    # writes runs/example-cart and reports/example-cart.html
"""

import shutil

import torch

import diagnose as dg

shutil.rmtree("runs/example-cart", ignore_errors=True)  # this example's own run: rewritten each time
data = dg.datasets.cart_abandonment()
torch.manual_seed(0)
model = dg.mlp(data.n_features, hidden=[64, 32], out_features=2, batch_norm=True, dropout=0.2)

trainer = dg.Trainer(
    model, optimizer="adadelta",                      # no learning rate to tune
    loss="cross_entropy",
    regularizers=[dg.L2(1e-4), dg.L1(1e-5), dg.Entropy(0.05), dg.GaussianNoise(0.05)],
    early_stopping=dg.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
    grad_clip=1.0, run_dir="runs/example-cart", seed=0, diagnostics_every=5, save_model=True,
    feature_names=data.feature_names, class_names=data.class_names)
history = trainer.fit(data.train, data.val, epochs=60, batch_size=64)
print(history.tail())
print("best epoch:", trainer.early_stopping.best_epoch, "validation:", trainer.evaluate(data.val))

run = dg.load_run("runs/example-cart")
print(run.layer_stats().groupby("layer")[["grad_norm", "weight_norm"]].median())
for finding in run.findings():
    print(finding.severity, finding.kind, finding.message)
print("report:", dg.report("runs/example-cart", out="reports/example-cart.html"))
