"""dg.preflight (issue 15): a zoo of planted bugs, one each, found with the right evidence; healthy
models without a warning; the model, optimizer and random states bitwise unchanged."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.cli import main

sys.path.insert(0, str(Path(__file__).parent / "explain"))
from test_tokens import Encoder, trigger_data


@pytest.fixture(scope="module")
def cart():
    return dg.datasets.cart_abandonment(n=3000, seed=0)


def problems(result) -> list[tuple[str, str | None]]:
    """(kind, check) of every finding above info."""
    return [(f.kind, f.evidence.get("check")) for f in result if f.severity != "info"]


class DoubleSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net, self.softmax = dg.mlp(10, [32], 2), nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.net(x))


class TransposeReshape(nn.Module):
    """h.t().reshape(len(x), -1): rows of h end up spread over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).t().reshape(len(x), -1))


class BatchMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0))


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(10, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)).detach())


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.extra, self.b = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class IgnoresInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.zeros_like(x))))


def test_a_softmax_before_cross_entropy(cart):
    result = dg.preflight(DoubleSoftmax(), cart.train, lr_range=False)
    f = next(f for f in result if f.kind == "preflight_init_loss")
    assert f.severity == "critical" and f.evidence["check"] == "softmax_before_loss"
    assert f.evidence["row_sum_max_error"] < 1e-4 and "remove the final softmax" in f.remedy


@pytest.mark.parametrize("model_class, layer", [(TransposeReshape, "b"), (BatchMean, "b")])
def test_mixing_examples_across_the_batch_names_the_module(cart, model_class, layer):
    torch.manual_seed(0)
    result = dg.preflight(model_class(), cart.train, lr_range=False)
    f = next(f for f in result if f.kind == "preflight_batch_mixing")
    assert f.severity == "critical" and f.layer == layer and "view/reshape" in f.remedy


def test_batchnorm_is_not_batch_mixing(cart):
    result = dg.preflight(dg.mlp(10, [32], 2, batch_norm=True), cart.train, lr_range=False)
    assert "preflight_batch_mixing" not in {f.kind for f in result}
    assert "BatchNorm mixes examples in training mode by design" in result.checks["batch_independence"]["note"]


def test_a_detached_branch_and_an_unused_layer_get_no_gradient(cart):
    detached = dg.preflight(Detached(), cart.train, lr_range=False)
    f = next(f for f in detached if f.kind == "preflight_no_gradient")
    assert f.layer == "body" and set(f.evidence["parameters"]) == {"body.weight", "body.bias"}
    unused = dg.preflight(Unused(), cart.train, lr_range=False)
    f = next(f for f in unused if f.kind == "preflight_no_gradient")
    assert f.layer == "extra" and f.evidence["check"] == "missing_gradient" and f.severity == "warning"
    frozen = dg.mlp(10, [16], 2)
    frozen[0].weight.requires_grad_(False)
    info = [f for f in dg.preflight(frozen, cart.train, lr_range=False) if f.kind == "preflight_no_gradient"]
    assert [(f.severity, f.evidence["check"]) for f in info] == [("info", "frozen")]


def test_a_model_that_ignores_its_input(cart):
    result = dg.preflight(IgnoresInput(), cart.train, lr_range=False)
    f = next(f for f in result if f.kind == "preflight_input_ignored")
    assert f.severity == "critical" and f.evidence["relative_change"] == 0.0


def test_shuffled_labels_carry_no_signal(cart):
    X, y = cart.train
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    result = dg.preflight(dg.mlp(10, [64, 32], 2), (X, shuffled), lr_range=False)
    assert problems(result) == [("preflight_data", "label_signal")]
    f = result[0]
    assert f.evidence["held_out_loss"] >= 0.95 * f.evidence["constant_loss"]
    assert "aligned" in f.remedy


def test_unscaled_inputs(cart):
    X, y = cart.train
    result = dg.preflight(dg.mlp(10, [64, 32], 2), (X * 1000 + 500, y), lr_range=False)
    f = next(f for f in result if f.evidence.get("check") == "unscaled")
    assert f.kind == "preflight_data" and len(f.evidence["features"]) == 10 and min(f.evidence["std"]) > 900


def test_validation_rows_leaked_into_training(cart):
    (X, y), (Xv, yv) = cart.train, cart.val
    leaked = (torch.cat([X, Xv[:50]]), torch.cat([y, yv[:50]]))
    result = dg.preflight(dg.mlp(10, [64, 32], 2), leaked, val_data=(Xv, yv), lr_range=False)
    f = next(f for f in result if f.evidence.get("check") == "leak")
    assert f.evidence["count"] == 50 and f.evidence["rows"][:3] == [0, 1, 2]


def test_data_errors_stop_before_training(cart):
    X, y = cart.train
    bad = X.clone()
    bad[7, 2] = float("nan")
    result = dg.preflight(dg.mlp(10, [16], 2), (bad, y))
    assert problems(result) == [("preflight_data", "nonfinite")] and result[0].evidence["rows"] == [7]
    result = dg.preflight(dg.mlp(10, [16], 2), (X, y + 1))  # labels 1..2 for 2 outputs
    assert problems(result) == [("preflight_data", "labels")] and result[0].evidence["label_max"] == 2
    imbalanced = dg.preflight(dg.mlp(10, [16], 2), (X[:1000], (torch.arange(1000) < 30).long()), lr_range=False)
    assert ("preflight_data", "imbalance") in problems(imbalanced)


def test_loss_at_initialisation(cart):
    X, y = cart.train
    hot = dg.mlp(10, [32], 2)
    with torch.no_grad():
        hot[-1].weight.mul_(50.0)  # over-confident from the start
    f = next(f for f in dg.preflight(hot, (X, y), lr_range=False) if f.kind == "preflight_init_loss")
    assert f.evidence["check"] == "over_confident" and f.evidence["expected"] == pytest.approx(np.log(2))
    f = next(f for f in dg.preflight(dg.mlp(10, [32], 2), (X, y), loss="nll", lr_range=False)
             if f.kind == "preflight_init_loss")
    assert f.evidence["check"] == "not_log_probabilities"
    offset = dg.preflight(dg.mlp(10, [32], 1), (X, (X[:, 0] + 100.0)[:, None]), loss="mse", lr_range=False)
    f = next(f for f in offset if f.kind == "preflight_init_loss")
    assert f.severity == "info" and f.evidence["target_mean"] == pytest.approx(100.0, abs=0.5)


def test_a_model_that_cannot_overfit_one_batch(cart):
    X, y = cart.train
    tiny = nn.Sequential(nn.Linear(10, 1), nn.Linear(1, 2))
    noisy = (X[:64], torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3)))
    result = dg.preflight(tiny, noisy, optimizer="sgd", lr=1e-4, lr_range=False)
    f = next(f for f in result if f.kind == "preflight_cannot_overfit")
    assert len(f.evidence["curve"]) > 10 and f.evidence["curve"][-1] > 0.05 * f.evidence["curve"][0]


def test_healthy_models_get_no_warning(cart):
    torch.manual_seed(0)
    assert problems(dg.preflight(dg.mlp(10, [64, 32], 2, batch_norm=True, dropout=0.2), cart.train,
                                 val_data=cart.val, optimizer="adadelta")) == []
    assert problems(dg.preflight(dg.mlp(10, [64, 32], 2), cart.train, optimizer="momentum", lr=0.05)) == []
    digits = dg.datasets.digits(images=True)
    torch.manual_seed(0)
    cnn = dg.preflight(dg.cnn(1, 8, 10, channels=(8, 16), batch_norm=True), digits.train, val_data=digits.val)
    assert problems(cnn) == []
    ids, labels, _ = trigger_data(1000, 0)
    torch.manual_seed(0)
    transformer = dg.preflight(Encoder(), (ids, labels))
    assert problems(transformer) == []
    lr = transformer.lr_curve
    assert lr["suggested"] is not None and lr["rates"][0] < lr["suggested"] < lr["rates"][-1]


def test_the_model_optimizer_and_random_state_are_unchanged(cart):
    torch.manual_seed(0)
    model = dg.mlp(10, [32], 2, batch_norm=True, dropout=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = cart.train
    model(x[:8]).sum().backward()
    optimizer.step()  # an optimizer with state, and gradients left on the parameters
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    opt_before = optimizer.state_dict()
    opt_tensors = {(k, n): t.clone() for k, s in opt_before["state"].items() for n, t in s.items()
                   if isinstance(t, torch.Tensor)}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    dg.preflight(model, cart.train, optimizer=optimizer, val_data=cart.val)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    after = optimizer.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    assert all(torch.equal(t, after["state"][k][n]) for (k, n), t in opt_tensors.items())
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(rng[0], torch.get_rng_state()) and np.array_equal(rng[1], np.random.get_state()[1])
    assert rng[2] == random.getstate()


def test_bad_arguments(cart):
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        dg.preflight("model", cart.train)
    with pytest.raises(TypeError, match="optimizer: expected None, an optimizer name"):
        dg.preflight(dg.mlp(10, [8], 2), cart.train, optimizer=3)
    with pytest.raises(ValueError, match="optimizer: it holds parameters that are not the model's"):
        dg.preflight(dg.mlp(10, [8], 2), cart.train, optimizer=torch.optim.SGD(dg.mlp(10, [8], 2).parameters(), 0.1))
    with pytest.raises(ValueError, match="optimizer: unknown name"):
        dg.preflight(dg.mlp(10, [8], 2), cart.train, optimizer="adamm")


def test_report_shows_the_preflight_first_and_the_command(tmp_path, cart, capsys):
    run_dir = tmp_path / "run"
    model = dg.mlp(10, [16], 2)
    result = dg.preflight(Unused(), cart.train, run_dir=run_dir)
    assert (run_dir / "preflight.json").is_file()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, optimizer, run_dir, every=1) as run:
        for _ in range(3):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(cart.train[0][:32]), cart.train[1][:32])
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
    html = dg.report(run_dir, out=tmp_path / "r.html").read_text()
    assert html.index('id="preflight"') < html.index('id="summary"')
    assert "no gradient" in html and "learning-rate range test" in html and result[0].message[:40] in html
    script = tmp_path / "check.py"
    script.write_text("import torch\nfrom torch import nn\nmodel = nn.Sequential(nn.Linear(4, 8), nn.Softmax(dim=1))\n"
                      "data = (torch.randn(200, 4), torch.randint(0, 8, (200,)))\n")
    assert main(["preflight", str(script), "--no-lr-range"]) == 1  # a critical problem: exit status 1
    out = capsys.readouterr().out
    assert "[CRITICAL] preflight_init_loss" in out and "softmax" in out
    assert main(["preflight", "demo", "--no-lr-range"]) == 0
    assert "0 problems found" in capsys.readouterr().out
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["preflight", str(tmp_path / "empty.py")]) == 2
    assert "must define model and data" in capsys.readouterr().err


class SqrtOfZero(nn.Module):
    """sqrt at 0 in forward: a finite loss with NaN gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 2), nn.Linear(10, 2)

    def forward(self, x):
        return self.a(x) + torch.sqrt(torch.relu(self.b(x)) * 0)


def test_nan_gradients_at_step_zero_and_a_rate_beyond_the_blow_up(cart):
    result = dg.preflight(SqrtOfZero(), cart.train, lr_range=False)
    f = next(f for f in result if f.evidence.get("check") == "nonfinite_gradient")
    assert f.severity == "critical" and f.layer == "b.weight"
    assert set(f.evidence["parameters"]) == {"b.weight", "b.bias"}
    torch.manual_seed(0)
    fast = dg.preflight(dg.mlp(10, [64, 32], 2), cart.train, optimizer="sgd", lr=1000.0)
    f = next(f for f in fast if f.evidence.get("check") == "lr_too_high")
    assert f.evidence["diverged_at"] <= 1000.0 and f.evidence["suggested"] < f.evidence["diverged_at"]


def test_the_command_reads_a_yaml_config(tmp_path, capsys):
    config = tmp_path / "pre.yaml"
    config.write_text("dataset: breast_cancer\nmodel: {hidden: [16]}\noptimizer: adam\nlr: 0.001\n")
    run_dir = tmp_path / "run"
    assert main(["preflight", str(config), "--run-dir", str(run_dir)]) == 0
    assert "0 problems found" in capsys.readouterr().out and (run_dir / "preflight.json").is_file()
    assert dg.preflight.__module__ == "diagnose.preflight"  # the function, not the module, after the import
