"""Evaluate the course's optimizers on the same model, data and seed (scikit-learn's digits).

    python examples/compare_optimizers_digits.py   # writes docs/optimizers_digits.png and
                                                   # runs/optimizers/compare.html (every run compared)
"""

from pathlib import Path

import diagnose as dg

data = dg.datasets.digits()
result = dg.compare_optimizers(
    lambda: dg.mlp(64, [64], 10), data.train, data.val,
    optimizers=["gd", "sgd", "minibatch_sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam"],
    epochs=15, batch_size=32, run_dir="runs/optimizers", overwrite=True)
curves, figure = result
summary = curves.groupby("optimizer", sort=False).last()[["val_loss", "val_accuracy", "steps", "seconds"]]
print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
Path("docs").mkdir(exist_ok=True)
figure.savefig("docs/optimizers_digits.png", dpi=110)
print(f"comparison page: {result.page}")
