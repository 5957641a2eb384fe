"""The course's end project: tune a single-hidden-layer dense network on scikit-learn's digits
(the offline stand-in for MNIST) with random search over hidden units, learning rate and
optimizer, and compare the tuned model with the untuned default on validation accuracy.

    python examples/tuning_digits.py
"""

import torch

import diagnose as dg

data = dg.datasets.digits()
EPOCHS = 8


def model_fn(params):
    return dg.mlp(64, [params.get("hidden", 32)], 10)


# the untuned default: 32 hidden units, plain mini-batch SGD at its default learning rate 0.01
torch.manual_seed(0)
default = dg.Trainer(model_fn({}), "minibatch_sgd", seed=0, progress=False)
default.fit(data.train, data.val, epochs=EPOCHS, batch_size=32)
default_accuracy = default.evaluate(data.val)["accuracy"]

space = {"hidden": [16, 32, 64, 128, 256], "lr": dg.log_uniform(1e-4, 3e-1),
         "optimizer": ["minibatch_sgd", "momentum", "rmsprop", "adam", "adadelta"]}
result = dg.tune_trainer(model_fn, data.train, data.val, space, strategy="random", n_trials=20, epochs=EPOCHS,
                         metric="val_accuracy", seed=0, batch_size=32)
print(result.trials.sort_values("value", ascending=False).head(5).to_string(index=False))
print("importances:", {k: round(v, 3) for k, v in result.importances.items()})

# retrain the best configuration and measure it the same way as the default
torch.manual_seed(0)
best = dg.Trainer(model_fn(result.best_params), result.best_params["optimizer"], lr=result.best_params["lr"],
                  seed=0, progress=False)
best.fit(data.train, data.val, epochs=EPOCHS, batch_size=32)
tuned_accuracy = best.evaluate(data.val)["accuracy"]
print(f"validation accuracy: untuned default {default_accuracy:.3f}, tuned {tuned_accuracy:.3f} "
      f"with {result.best_params}")
assert tuned_accuracy > default_accuracy
