"""dg.watch: neutrality, coverage of architectures, exact statistics, NaN origin, errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.monitor.statistics import OutputStatistic


def no_hooks_left(model, optimizer=None):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, m
    if optimizer is not None:
        assert not optimizer._optimizer_step_post_hooks and not optimizer._optimizer_step_pre_hooks


def train(model, steps, x, y, run_dir=None, loss_fn=nn.functional.cross_entropy, opt=None, **watch_kwargs):
    """A plain loop; with run_dir, the same loop inside dg.watch. Returns the per-step losses."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    ctx = dg.watch(model, opt, run_dir, **watch_kwargs) if run_dir is not None else None
    try:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if ctx is not None:
                ctx.log(loss=loss)
    finally:
        if ctx is not None:
            ctx.close()
    return losses, opt


# -- observer neutrality ----------------------------------------------------------------------
@pytest.mark.parametrize("every", [1, 3])
def test_loss_trajectory_is_bitwise_identical_with_and_without_watch(tmp_path, every):
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))

    def run(run_dir):
        torch.manual_seed(0)
        model = dg.mlp(10, [32, 32], 3, dropout=0.3, batch_norm=True)
        losses, opt = train(model, 12, x, y, run_dir, every=every)
        return losses, model, opt

    plain, _, _ = run(None)
    watched, model, opt = run(tmp_path / "r")
    assert plain == watched  # exact float equality, dropout masks included
    no_hooks_left(model, opt)
    assert dg.load_run(tmp_path / "r").meta["complete"] is True


def test_hooks_are_removed_after_an_exception(tmp_path):
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="user error"):
        with dg.watch(model, opt, tmp_path, every=1):
            model(torch.randn(3, 4)).sum().backward()
            opt.step()
            raise RuntimeError("user error")
    no_hooks_left(model, opt)
    run = dg.load_run(tmp_path)
    assert run.meta["complete"] is False and len(run.layer_stats()) > 0


# -- architectures ----------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """One ReLU module used twice per forward (shap/captum DeepLift break on this)."""

    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.fc2(self.relu(self.fc1(x))))


class Shared(nn.Module):
    """Weight sharing: one Linear called twice per forward."""

    def __init__(self):
        super().__init__()
        self.inp, self.shared, self.act, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.act(self.shared(self.act(self.shared(self.inp(x))))))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.head(out[:, -1])


class DictOut(nn.Module):
    """A submodule returning a dict of tensors."""

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(6, 4)

        def forward(self, x):
            return {"left": self.a(x), "right": self.b(x)}

    class Merge(nn.Module):
        def forward(self, d):
            return {"logits": d["left"] + d["right"], "aux": d["left"].detach() * 0}

    def __init__(self):
        super().__init__()
        self.body, self.merge = self.Body(), self.Merge()

    def forward(self, x):
        return self.merge(self.body(x))["logits"]


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True), 2)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def frozen_mlp():
    model = dg.mlp(6, [8, 8], 3)
    for p in model.fc1.parameters():
        p.requires_grad_(False)
    return model


ARCHITECTURES = {
    "mlp": (lambda: dg.mlp(6, [8, 8], 3), (6,), ["fc1", "act1", "fc2", "out"]),
    "cnn_bn": (lambda: dg.cnn(1, 8, 3, channels=(4, 8), batch_norm=True), (1, 8, 8), ["conv1", "bn1", "act1", "fc"]),
    "residual_reuse": (lambda: nn.Sequential(nn.Linear(6, 8), ResidualBlock(8), nn.Linear(8, 3)), (6,),
                       ["0", "1.fc1", "1.fc2", "1.relu", "2"]),
    "lstm": (LSTMClassifier, (7, 5), ["lstm", "head"]),
    "transformer": (Transformer, (5, 4), ["embed", "encoder.layers.0.self_attn", "encoder.layers.0.linear1",
                                          "encoder.layers.1.norm2", "head"]),
    "frozen": (frozen_mlp, (6,), ["fc1", "fc2", "out"]),
    "weight_sharing": (Shared, (6,), ["inp", "shared", "act", "out"]),
    "dict_outputs": (DictOut, (6,), ["body.a", "body.b", "merge"]),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architectures(tmp_path, name):
    make, shape, layers = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(16, *shape), torch.randint(0, 3, (16,))
    train(model, 4, x, y, tmp_path, every=2, opt=torch.optim.Adam([p for p in model.parameters() if p.requires_grad]))
    no_hooks_left(model)
    run = dg.load_run(tmp_path)
    assert run.meta["complete"] and run.meta["errors"] == {} and run.meta["first_nonfinite"] is None
    stats = run.layer_stats()
    assert set(stats["step"]) == {0, 2}  # sampled steps only, at every=2
    for layer in layers:
        rows = stats[(stats.layer == layer) & (stats.step == 2)]
        assert len(rows) == 1, f"{layer} missing from {sorted(stats.layer.unique())}"
        row = rows.iloc[0]
        owns_params = any(True for _ in dict(model.named_modules())[layer].parameters(recurse=False))
        if owns_params:
            assert row.weight_norm > 0
        if layer not in ("encoder.layers.0.self_attn",) or name != "transformer":
            assert np.isfinite(row.act_mean) and row.act_std >= 0 and row.nonfinite == 0, layer
    scalars = run.scalars()
    assert scalars["loss"].notna().sum() == 4
    if name == "frozen":
        fc1 = stats[(stats.layer == "fc1") & (stats.step == 2)].iloc[0]
        assert math.isnan(fc1.grad_norm) and fc1.weight_norm > 0  # no gradient statistics, no error
        assert stats[(stats.layer == "fc2") & (stats.step == 2)].iloc[0].grad_norm > 0
    if name == "weight_sharing":
        # two calls per forward: statistics cover both outputs (2 x 16 rows x 8 units)
        act = stats[(stats.layer == "act") & (stats.step == 2)].iloc[0]
        assert 0 <= act.saturated_frac <= 1


def test_lstm_statistics_cover_every_tensor_of_its_tuple_output(tmp_path):
    torch.manual_seed(0)
    model = LSTMClassifier()
    x = torch.randn(4, 7, 5)
    captured = {}
    model.lstm.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    train(model, 1, x, torch.randint(0, 3, (4,)), tmp_path, every=1)
    out, (h, c) = captured["out"]
    values = torch.cat([out.flatten(), h.flatten(), c.flatten()]).detach()
    row = dg.load_run(tmp_path).layer_stats().query("layer == 'lstm'").iloc[0]
    assert row.act_mean == pytest.approx(values.mean().item(), abs=1e-6)
    assert row.act_std == pytest.approx(values.std(unbiased=False).item(), rel=1e-4)


# -- exact statistics on constructed layers ---------------------------------------------------
def test_dead_units_exact_on_a_constructed_layer(tmp_path):
    # 6 ReLU units; biases -1/+1 with zero weights: units 0, 2, 5 can never fire
    fc = nn.Linear(4, 6)
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0]))
    model = nn.Sequential(fc, nn.ReLU(), nn.Linear(6, 2))
    train(model, 2, torch.randn(32, 4), torch.randint(0, 2, (32,)), tmp_path, every=1,
          opt=torch.optim.SGD(model[2].parameters(), lr=0.1))
    relu = dg.load_run(tmp_path).layer_stats().query("layer == '1'")
    assert relu["dead_frac"].tolist() == [0.5, 0.5]
    assert relu["act_zero_frac"].tolist() == [0.5, 0.5]
    assert relu["saturated_frac"].isna().all()  # not a squashing activation


def test_dead_units_count_channels_of_conv_outputs(tmp_path):
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([-0.5, 0.5, 0.5, 0.5]))  # channel 0 never fires
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    train(model, 1, torch.randn(8, 1, 5, 5), torch.randint(0, 2, (8,)), tmp_path, every=1)
    assert dg.load_run(tmp_path).layer_stats().query("layer == '1'")["dead_frac"].tolist() == [0.25]


def test_a_reused_activation_keeps_one_mask_per_call(tmp_path):
    # the shared ReLU sees fc1's output (2 of 4 units dead) then fc2's (all alive): 2 of 8 dead
    block = ResidualBlock(4)
    with torch.no_grad():
        for fc, bias in ((block.fc1, [-1.0, -1.0, 1.0, 1.0]), (block.fc2, [5.0, 5.0, 5.0, 5.0])):
            fc.weight.zero_()
            fc.bias.copy_(torch.tensor(bias))
    model = nn.Sequential(block, nn.Linear(4, 2))
    train(model, 1, torch.randn(16, 4) * 0.1, torch.randint(0, 2, (16,)), tmp_path, every=1)
    assert dg.load_run(tmp_path).layer_stats().query("layer == '0.relu'")["dead_frac"].tolist() == [0.25]


def test_saturation_exact_on_a_constructed_tanh_layer(tmp_path):
    # identity weights: tanh sees the inputs themselves; |x| >= 3 saturates (|tanh| > 0.995),
    # |x| <= 2 does not (|tanh| < 0.965). 3 of 8 columns saturate in every row.
    fc = nn.Linear(8, 8)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(8))
        fc.bias.zero_()
    model = nn.Sequential(fc, nn.Tanh(), nn.Linear(8, 2))
    x = torch.tensor([[3.0, -4.0, 0.5, 2.0, -2.0, 5.0, 0.0, 1.0]]).repeat(10, 1)
    train(model, 1, x, torch.randint(0, 2, (10,)), tmp_path, every=1,
          opt=torch.optim.SGD(model[2].parameters(), lr=0.1))
    row = dg.load_run(tmp_path).layer_stats().query("layer == '1'").iloc[0]
    assert row.saturated_frac == 3 / 8
    assert math.isnan(row.dead_frac)
    assert row.act_mean == pytest.approx(torch.tanh(x[0]).mean().item(), abs=1e-6)


@pytest.mark.parametrize("module, x, expected", [
    (nn.Sigmoid(), [-5.0, 5.0, 0.0, 4.0], 2 / 4),   # sigmoid(±5) is 0.0067 / 0.9933; sigmoid(4) 0.982
    (nn.Hardtanh(), [-1.0, 1.0, 0.5, 2.0], 3 / 4),
    (nn.ReLU6(), [0.0, 6.0, 7.0, 3.0], 2 / 4),      # only its upper bound: its zeros are a rectifier's
])
def test_saturation_of_other_squashing_activations(tmp_path, module, x, expected):
    model = nn.Sequential(nn.Identity(), module, nn.Linear(4, 2))
    train(model, 1, torch.tensor([x]), torch.tensor([0]), tmp_path, every=1)
    assert dg.load_run(tmp_path).layer_stats().query("layer == '1'").iloc[0].saturated_frac == expected


def test_update_ratio_weight_norm_and_grad_norm_against_an_oracle(tmp_path):
    torch.manual_seed(0)
    model = dg.mlp(5, [7], 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    expected = []
    with dg.watch(model, opt, tmp_path, every=1):
        for step in range(3):
            before = {n: torch.cat([p.detach().flatten().clone() for p in m.parameters()]) for n, m in
                      (("fc1", model.fc1), ("out", model.out))}
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads = {n: torch.cat([p.grad.flatten() for p in m.parameters()]) for n, m in
                     (("fc1", model.fc1), ("out", model.out))}
            opt.step()
            for n, m in (("fc1", model.fc1), ("out", model.out)):
                after = torch.cat([p.detach().flatten() for p in m.parameters()])
                expected.append((step, n, grads[n].norm().item(), before[n].norm().item(),
                                 ((after - before[n]).norm() / before[n].norm()).item()))
    stats = dg.load_run(tmp_path).layer_stats().set_index(["step", "layer"])
    for step, n, g, w, r in expected:
        row = stats.loc[(step, n)]
        assert row.grad_norm == pytest.approx(g, rel=1e-5)
        assert row.weight_norm == pytest.approx(w, rel=1e-5)
        assert row.update_ratio == pytest.approx(r, rel=1e-4)
        assert 0 < r < 1


def test_effective_learning_rate_of_adagrad_collapses(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 3) * 10, torch.randn(16, 1)
    train(model, 5, x, y, tmp_path, loss_fn=nn.functional.mse_loss, opt=opt, every=1)
    stats = dg.load_run(tmp_path).layer_stats().query("layer == '0'")
    sums = torch.cat([opt.state[p]["sum"].flatten() for p in model[0].parameters()])
    assert stats["eff_lr"].iloc[-1] == pytest.approx((0.5 / (sums.mean().sqrt() + 1e-10)).item(), rel=1e-5)
    assert (np.diff(stats["eff_lr"]) < 0).all()  # AdaGrad's accumulated squares only grow


def test_effective_learning_rate_is_the_sgd_rate_that_takes_the_same_step(tmp_path):
    # a linear loss has a constant gradient c: RMSProp's average converges to c^2, its update to
    # lr * c / |c|, and eff_lr * ||g|| = lr * sqrt(n) = ||update|| exactly (mean |c| would not: the
    # magnitudes of c span 1e-2..1e1)
    torch.manual_seed(0)
    layer = nn.Linear(50, 1, bias=False)
    c = torch.logspace(-2, 1, 50)
    opt = torch.optim.RMSprop(layer.parameters(), lr=1e-3, alpha=0.5, eps=0.0)
    with dg.watch(layer, opt, tmp_path, every=1) as run:
        for _ in range(60):
            opt.zero_grad()
            loss = (layer.weight * c).sum()
            loss.backward()
            before = layer.weight.detach().clone()
            opt.step()
            run.log(loss=loss)
    step = (layer.weight.detach() - before).norm().item()
    eff = dg.load_run(tmp_path).layer_stats()["eff_lr"].iloc[-1]
    assert eff * c.norm().item() == pytest.approx(step, rel=1e-4)


@pytest.mark.parametrize("rows, first, more", [
    (10, 2, 2),   # 80 % of the table at 0, then 60 %, ...: counted in full until few are left at 0
    (40, 32, 1),  # 20 % at 0 from the start: only those positions are looked at after the first count
])
def test_effective_learning_rate_counts_rows_as_they_start_receiving_gradient(tmp_path, rows, first, more):
    # the rows in use grow step by step to the whole table: each step's count is the rows seen so far
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(rows, 3), nn.Flatten(), nn.Linear(3, 2))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    expected = []
    with dg.watch(model, opt, tmp_path, every=1) as run:
        for step in range(10):
            if step == 7:  # a reloaded optimizer: new state tensors, counted afresh
                opt.load_state_dict(opt.state_dict())
            ids = torch.arange(min(first + more * step, rows)).reshape(-1, 1)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(ids), torch.zeros(len(ids), dtype=torch.long))
            loss.backward()
            opt.step()
            run.log(loss=loss)
            v = opt.state[model[0].weight]["sum"]
            expected.append((0.1 / (v[v > 0].mean().sqrt() + 1e-10)).item())
    got = dg.load_run(tmp_path).layer_stats().query("layer == '0'")["eff_lr"].tolist()
    assert got == pytest.approx(expected, rel=1e-5)


def test_effective_learning_rate_counts_only_rows_that_received_gradient(tmp_path):
    # an embedding table of which the batches use rows 0-2 only: Adam's unused rows (v = 0) would
    # read as lr / eps = 1e5 x lr
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 4), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    ids = torch.randint(0, 3, (16, 2))
    train(model, 3, ids, torch.randint(0, 2, (16,)), tmp_path, opt=opt, every=1)
    v = opt.state[model[0].weight]["exp_avg_sq"] / (1 - 0.999 ** 3)
    used = v[v > 0]
    assert used.numel() == 12  # 3 rows x 4
    value = dg.load_run(tmp_path).layer_stats().query("layer == '0'")["eff_lr"].iloc[-1]
    assert value == pytest.approx((0.01 / (used.mean().sqrt() + 1e-8)).item(), rel=1e-5)


def test_effective_learning_rate_of_sgd_is_its_learning_rate(tmp_path):
    model = dg.mlp(3, [4], 2)
    train(model, 2, torch.randn(8, 3), torch.randint(0, 2, (8,)), tmp_path, every=1,
          opt=torch.optim.SGD(model.parameters(), lr=0.125))
    assert set(dg.load_run(tmp_path).layer_stats()["eff_lr"].dropna()) == {0.125}


# -- non-finite values ------------------------------------------------------------------------
class LogLayer(nn.Module):
    """log(x): non-finite exactly when an input is <= 0."""

    def forward(self, x):
        return torch.log(x)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.w


def test_first_nonfinite_output_step_and_module(tmp_path):
    # inputs are positive until step 3, where one element is negative: log() produces the NaN
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), Scale(), LogLayer(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.fill_(-0.5)
    opt = torch.optim.SGD(model[4].parameters(), lr=0.0)
    with dg.watch(model, opt, tmp_path, every=4):
        for step in range(6):
            x = torch.full((4, 2), 2.0)
            if step == 3:
                x[1, 0] = 0.25  # relu(0.25 - 0.5) = 0 -> log(0) = -inf
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    meta = dg.load_run(tmp_path).meta
    assert meta["first_nonfinite"] == {"step": 3, "layer": "3", "where": "output"}


def test_first_nonfinite_in_the_input(tmp_path):
    model = dg.mlp(3, [4], 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with dg.watch(model, opt, tmp_path):
        for step in range(4):
            x = torch.ones(2, 3)
            if step == 2:
                x[0, 1] = float("nan")
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert dg.load_run(tmp_path).meta["first_nonfinite"] == {"step": 2, "layer": "(input)", "where": "input"}


class SqrtLayer(nn.Module):
    """sqrt(|x|) at 0: a finite forward pass whose gradient is NaN (inf * sign(0))."""

    def forward(self, x):
        return torch.sqrt(x.abs())


def test_first_nonfinite_gradient_names_the_layer_backward_started_from(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), SqrtLayer(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with dg.watch(model, opt, tmp_path, every=1) as run:
        for step in range(3):
            x = torch.ones(4, 2) if step < 1 else torch.zeros(4, 2)  # sqrt(|0|): gradient NaN
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    run = dg.load_run(tmp_path)
    assert run.meta["first_nonfinite"] == {"step": 1, "layer": "0", "where": "gradient"}
    stats = run.layer_stats().set_index(["step", "layer"])
    assert stats.loc[(1, "0"), "nonfinite"] == 6 and stats.loc[(1, "2"), "nonfinite"] == 0  # 2x2 weight + 2 bias
    assert stats.loc[(0, "0"), "nonfinite"] == 0


def test_nonfinite_counts_are_exact(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), LogLayer(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[0].bias.zero_()
    x = torch.ones(5, 3)
    x[0, 0] = x[2, 1] = x[4, 2] = -1.0  # three log(-1) = NaN
    opt = torch.optim.SGD(model[2].parameters(), lr=0.0)
    with dg.watch(model, opt, tmp_path, every=1):
        model(x).sum().backward()
        opt.step()
    stats = dg.load_run(tmp_path).layer_stats().set_index("layer")
    assert stats.loc["1", "nonfinite"] == 3
    assert stats.loc["0", "nonfinite"] == 0
    # the last layer: 3 NaN outputs (rows 0, 2, 4), and each of its 3 weight gradients sums a
    # column holding one NaN; its bias gradient (a sum of ones) is finite
    assert stats.loc["2", "nonfinite"] == 3 + 3


# -- stepping, logging, evaluation passes -----------------------------------------------------
def test_steps_counted_from_optimizer_step_with_gradient_accumulation(tmp_path):
    model = dg.mlp(3, [4], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with dg.watch(model, opt, tmp_path, every=1) as run:
        for _ in range(3):
            for _ in range(4):  # 4 micro-batches per step
                nn.functional.cross_entropy(model(torch.randn(2, 3)), torch.tensor([0, 1])).backward()
            opt.step()
            opt.zero_grad()
        assert run.steps == 3
    stats = dg.load_run(tmp_path).layer_stats()
    assert sorted(stats["step"].unique()) == [0, 1, 2]
    # activation statistics cover the 4 micro-batches of 2 rows
    fc1 = stats.query("layer == 'fc1' and step == 0").iloc[0]
    assert not math.isnan(fc1.act_mean)


def test_step_without_an_optimizer_and_evaluation_passes_are_not_recorded(tmp_path):
    model = dg.mlp(3, [4], 2)
    with dg.watch(model, run_dir=tmp_path, every=1) as run:
        for step in range(3):
            model.train()
            out = model(torch.randn(8, 3))
            out.sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
            model.eval()
            with torch.no_grad():
                model(torch.full((8, 3), 1e6))  # would change act_mean a lot if it were recorded
            run.step()
            run.log(val=float(step))
    stats = dg.load_run(tmp_path).layer_stats()
    assert sorted(stats["step"].unique()) == [0, 1, 2]
    assert stats["act_mean"].abs().max() < 100
    assert stats.query("layer == 'fc1'")["update_ratio"].notna().all()
    assert dg.load_run(tmp_path).scalars()["val"].tolist() == [0.0, 1.0, 2.0]


def test_step_is_refused_when_an_optimizer_counts_steps(tmp_path):
    model = dg.mlp(3, [4], 2)
    with dg.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path) as run:
        with pytest.raises(RuntimeError, match="optimizer"):
            run.step()


def test_log_accepts_tensors_and_numbers_and_names_a_bad_value(tmp_path):
    model = dg.mlp(3, [4], 2)
    with dg.watch(model, run_dir=tmp_path) as run:
        run.log(loss=torch.tensor(0.5), lr=0.1, count=np.int64(3))
        run.log(step=7, custom=torch.tensor([2.0]))
        with pytest.raises(TypeError, match="acc"):
            run.log(acc="high")
        with pytest.raises(TypeError, match="vec"):
            run.log(vec=torch.ones(3))
    s = dg.load_run(tmp_path).scalars().set_index("step")
    assert s.loc[0, "loss"] == 0.5 and s.loc[0, "lr"] == 0.1 and s.loc[0, "count"] == 3 and s.loc[7, "custom"] == 2


# -- a statistic that fails, bad input --------------------------------------------------------
class Broken(OutputStatistic):
    columns = ("broken",)

    def partial(self, output, module):
        raise ValueError("cannot compute")

    def finalize(self, values, count):
        return (0.0,)


def test_a_failing_statistic_is_recorded_and_training_goes_on(tmp_path, caplog):
    from diagnose.monitor.statistics import default_output_statistics
    torch.manual_seed(0)
    model = dg.mlp(3, [4], 2)
    losses, _ = train(model, 3, torch.randn(8, 3), torch.randint(0, 2, (8,)), tmp_path, every=1,
                      output_statistics=[Broken(), *default_output_statistics()])
    assert len(losses) == 3
    run = dg.load_run(tmp_path)
    assert any("Broken" in k and "cannot compute" in v for k, v in run.meta["errors"].items())
    assert run.layer_stats()["act_mean"].notna().any()
    assert sum("Broken" in r.message for r in caplog.records) == len(run.meta["errors"])  # once each


def test_bad_model_and_optimizer(tmp_path):
    with pytest.raises(TypeError, match="model"):
        dg.watch("model", None, tmp_path)
    with pytest.raises(ValueError, match="optimizer"):
        dg.watch(dg.mlp(3, [4], 2), torch.optim.SGD(dg.mlp(3, [4], 2).parameters(), lr=0.1), tmp_path)
    with pytest.raises(ValueError, match="every"):
        dg.watch(dg.mlp(3, [4], 2), None, tmp_path, every=0)


def test_an_existing_run_needs_resume_or_overwrite(tmp_path):
    model = dg.mlp(3, [4], 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    train(model, 3, x, y, tmp_path, every=1)
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        dg.watch(model, None, tmp_path)
    assert dg.load_run(tmp_path).scalars()["step"].tolist() == [0, 1, 2]  # untouched
    train(model, 2, x, y, tmp_path, every=1, resume=True)
    run = dg.load_run(tmp_path)
    assert run.scalars()["step"].tolist() == [0, 1, 2, 3, 4] and run.meta["resumed_at_step"] == 3
    assert sorted(run.layer_stats()["step"].unique()) == [0, 1, 2, 3, 4]
    train(model, 1, x, y, tmp_path, every=1, overwrite=True)
    assert dg.load_run(tmp_path).scalars()["step"].tolist() == [0]


def test_an_unwritable_run_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = dg.mlp(3, [4], 2)
    with pytest.raises(OSError, match="run_dir"):
        dg.watch(model, None, blocker / "run")
    no_hooks_left(model)


@pytest.mark.parametrize("make, expected", [
    (lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9),
     lambda st: 0.01 / (st("square_avg").mean().sqrt() + 1e-8)),
    (lambda ps: torch.optim.Adam(ps, lr=0.01),
     lambda st: 0.01 / ((st("exp_avg_sq") / (1 - 0.999 ** 3)).mean().sqrt() + 1e-8)),
    (lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.9, eps=1e-6),
     lambda st: 1.0 * (st("acc_delta") + 1e-6).sqrt().mean() / (st("square_avg") + 1e-6).sqrt().mean()),
])
def test_effective_learning_rate_reads_each_optimizers_state(tmp_path, make, expected):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = make(model.parameters())
    train(model, 3, torch.randn(8, 3), torch.randint(0, 2, (8,)), tmp_path, opt=opt, every=1)

    def state(key):  # one state tensor over all of the layer's elements
        return torch.cat([opt.state[p][key].flatten() for p in model[0].parameters()])

    value = dg.load_run(tmp_path).layer_stats().query("layer == '0'")["eff_lr"].iloc[-1]
    assert value == pytest.approx(expected(state).item(), rel=1e-5)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.5, maximize=True),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),          # falls back to the copy
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),      # falls back to the copy
    lambda ps: torch.optim.SGD([{"params": ps[:2], "lr": 0.2}, {"params": ps[2:], "lr": 0.01, "momentum": 0.5}]),
])
def test_sgd_update_ratio_closed_form_matches_the_measured_update(tmp_path, make):
    torch.manual_seed(0)
    model = dg.mlp(5, [7], 3)
    model.fc1.bias.requires_grad_(False)  # a parameter the optimizer holds but never updates
    opt = make(list(model.parameters()))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    expected = []
    with dg.watch(model, opt, tmp_path, every=1):
        for step in range(4):
            before = {n: torch.cat([p.detach().flatten().clone() for p in m.parameters()])
                      for n, m in (("fc1", model.fc1), ("out", model.out))}
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            for n, m in (("fc1", model.fc1), ("out", model.out)):
                after = torch.cat([p.detach().flatten() for p in m.parameters()])
                ratio = ((after - before[n]).norm() / before[n].norm()).item()
                expected.append((step, n, before[n].norm().item(), ratio))
    stats = dg.load_run(tmp_path).layer_stats().set_index(["step", "layer"])
    for step, n, w, r in expected:
        assert stats.loc[(step, n), "weight_norm"] == pytest.approx(w, rel=1e-5)
        assert stats.loc[(step, n), "update_ratio"] == pytest.approx(r, rel=1e-4, abs=1e-9)
