"""dg.watch on real training setups: never breaks training, and stays exact.

Each case against an independent oracle: sparse gradients, float64 and bfloat16 models, activation
checkpointing (both modes), gradient accumulation, a loop without steps, weights changed after the
step, parametrized layers, no-op modules, torch.compile, and every internal part made to fail.
"""

import math
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.utils.checkpoint as checkpoint
from torch import nn

import diagnose as dg
from diagnose.monitor import buffer, nonfinite, store
from diagnose.monitor.statistics import STATISTICS, OutputStatistic, ParameterStatistic


def loop(model, opt, x, y, run_dir=None, steps=4, every=1, loss_fn=nn.functional.cross_entropy, after_step=None,
         **watch_kwargs):
    """A seeded loop; watched when run_dir is given. Returns the losses."""
    losses = []
    run = dg.watch(model, opt, run_dir, every=every, **watch_kwargs) if run_dir is not None else None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(model)
        losses.append(loss.item())
        if run is not None:
            run.log(loss=loss)
    if run is not None:
        run.close()
    return losses


def norm(tensors):
    return math.sqrt(sum(float((t.detach().double() ** 2).sum()) for t in tensors))


# -- sparse gradients ---------------------------------------------------------------------------
class Bag(nn.Module):
    def __init__(self, sparse):
        super().__init__()
        self.emb = nn.Embedding(50, 6, sparse=sparse)
        self.out = nn.Linear(6, 2)

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


@pytest.mark.parametrize("make", [
    lambda m: torch.optim.SGD(m.parameters(), lr=0.5),
    lambda m: torch.optim.SparseAdam(list(m.emb.parameters()), lr=0.05),
])
def test_sparse_gradients_are_measured_not_fatal(tmp_path, make):
    torch.manual_seed(0)
    model = Bag(sparse=True)
    opt = make(model)
    ids, y = torch.randint(0, 50, (16, 5)), torch.randint(0, 2, (16,))
    expected = []
    with dg.watch(model, opt, tmp_path, every=1) as run:
        for step in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(ids), y).backward()
            grad = model.emb.weight.grad.coalesce()
            before = model.emb.weight.detach().clone()
            opt.step()
            expected.append((step, norm([grad.values()]), norm([model.emb.weight - before]) / norm([before])))
            run.log(loss=1.0)
    stats = dg.load_run(tmp_path).layer_stats().set_index(["step", "layer"])
    for step, grad_norm, ratio in expected:
        assert stats.loc[(step, "emb"), "grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
        assert stats.loc[(step, "emb"), "update_ratio"] == pytest.approx(ratio, rel=1e-4)
    assert not dg.load_run(tmp_path).meta["errors"]


# -- precision ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-6), (torch.bfloat16, 1e-2)])  # kept as float32
def test_float64_and_bfloat16_models(tmp_path, dtype, rel):
    torch.manual_seed(0)
    model = dg.mlp(6, [8], 3).to(dtype)
    x, y = torch.randn(32, 6, dtype=dtype), torch.randint(0, 3, (32,))
    outputs = {}
    model.fc1.register_forward_hook(lambda m, a, o: outputs.__setitem__("fc1", o.detach().double()))
    loop(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, tmp_path, steps=1)
    run = dg.load_run(tmp_path)
    row = run.layer_stats().set_index("layer").loc["fc1"]
    assert row.act_mean == pytest.approx(outputs["fc1"].mean().item(), rel=rel, abs=1e-3 * rel)
    assert row.act_std == pytest.approx(outputs["fc1"].std(correction=0).item(), rel=rel)
    stats = run.layer_stats().set_index("layer")
    assert not run.meta["errors"] and stats["act_mean"].notna().all()
    assert stats.loc[["fc1", "out"], ["grad_norm", "weight_norm", "update_ratio"]].notna().all().all()


# -- activation checkpointing -------------------------------------------------------------------
class Checkpointed(nn.Module):
    """The same block used twice per forward pass, optionally under activation checkpointing."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        for _ in range(2):
            x = (self.block(x) if self.mode is None
                 else checkpoint.checkpoint(self.block, x, use_reentrant=self.mode == "reentrant"))
        return self.out(x)


class Calls(OutputStatistic):
    """How many times a module's forward hook counted in a step."""

    columns = ("calls",)

    def partial(self, output, module):
        return (torch.ones(()),)

    def finalize(self, values, count):
        return (float(values[0]),)


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant"])
def test_checkpointing_records_what_the_plain_model_records(tmp_path, mode):
    from diagnose.monitor.statistics import default_output_statistics
    x, y = torch.randn(16, 8, requires_grad=True), torch.randint(0, 2, (16,))
    stats = []
    for name, m in (("plain", None), ("ckpt", mode)):
        torch.manual_seed(0)
        model = Checkpointed(m)
        loop(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, tmp_path / name, steps=3,
             output_statistics=[Calls(), *default_output_statistics()])
        stats.append(dg.load_run(tmp_path / name).layer_stats().drop(columns="rank").set_index(["step", "layer"]))
    plain, ckpt = stats
    # the replays of the backward pass are not counted: two calls of the block per step, as without
    assert ckpt.loc[(0, "block.0"), "calls"] == plain.loc[(0, "block.0"), "calls"] == 2
    cols = ["act_mean", "act_std", "act_zero_frac", "dead_frac", "grad_norm", "update_ratio"]
    np.testing.assert_allclose(ckpt[cols].to_numpy(), plain[cols].to_numpy(), rtol=1e-6, equal_nan=True)


# -- gradient accumulation: logs go to the step being accumulated -------------------------------
def test_logs_between_micro_batches_belong_to_the_step_in_progress(tmp_path):
    torch.manual_seed(0)
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, tmp_path, every=1) as run:
        for step in range(3):
            opt.zero_grad()
            for micro in range(4):
                loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
                (loss / 4).backward()
                run.log(micro_loss=float(10 * step + micro))  # logged inside the accumulation
            opt.step()
            run.log(loss=float(step))                          # logged after the step
    scalars = dg.load_run(tmp_path).scalars().set_index("step")
    assert scalars["micro_loss"].tolist() == [3.0, 13.0, 23.0]  # the last micro-batch of each step
    assert scalars["loss"].tolist() == [0.0, 1.0, 2.0]


def test_a_loop_that_never_counts_a_step_warns_and_finds_it(tmp_path, caplog):
    model = dg.mlp(4, [8], 2)
    with dg.watch(model, run_dir=tmp_path) as run:  # no optimizer, and run.step() never called
        for _ in range(3):
            model(torch.randn(8, 4)).sum().backward()
            run.log(loss=1.0)
    assert any("no step was counted" in r.getMessage() for r in caplog.records)
    [f] = [f for f in dg.findings(tmp_path) if f.kind == "no_steps"]
    assert f.severity == "critical" and "run.step()" in f.remedy and f.evidence["forward_passes"] == 3


# -- weights changed after the step (a WGAN critic's clipping) ----------------------------------
@pytest.mark.parametrize("make", [lambda ps: torch.optim.RMSprop(ps, lr=0.05),
                                  lambda ps: torch.optim.SGD(ps, lr=0.05)])
def test_weights_changed_after_the_step_are_measured_correctly(tmp_path, make):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc=nn.Linear(6, 1)))
    opt = make(model.parameters())
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    expected = []

    def clip(m):
        with torch.no_grad():
            for p in m.parameters():
                p.clamp_(-0.01, 0.01)

    with dg.watch(model, opt, tmp_path, every=1):
        for step in range(4):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            delta = [p.detach() - b for p, b in zip(model.parameters(), before)]
            expected.append((step, norm(before), norm(delta) / norm(before)))
            clip(model)
    stats = dg.load_run(tmp_path).layer_stats().set_index(["step", "layer"])
    for step, weight, ratio in expected:
        assert stats.loc[(step, "fc"), "weight_norm"] == pytest.approx(weight, rel=1e-5)
        assert stats.loc[(step, "fc"), "update_ratio"] == pytest.approx(ratio, rel=1e-4)


# -- parametrized layers, no-op modules ---------------------------------------------------------
def test_a_parametrized_layer_is_one_layer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc=nn.utils.parametrizations.weight_norm(nn.Linear(4, 8)), act=nn.ReLU(),
                                      out=nn.utils.parametrizations.spectral_norm(nn.Linear(8, 2))))
    loop(model, torch.optim.Adam(model.parameters(), lr=0.01), torch.randn(16, 4), torch.randint(0, 2, (16,)),
         tmp_path, steps=2)
    stats = dg.load_run(tmp_path).layer_stats()
    assert sorted(stats["layer"].unique()) == ["act", "fc", "out"]
    fc = model.fc
    own = [fc.bias, fc.parametrizations.weight.original0, fc.parametrizations.weight.original1]
    last = stats.set_index(["step", "layer"]).loc[(1, "fc")]
    assert last.grad_norm == pytest.approx(norm([p.grad for p in own]), rel=1e-5)
    assert not math.isnan(last.act_mean)  # fc's output, not the computed weight


def test_modules_that_do_nothing_are_left_out_unless_asked(tmp_path):
    model = nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), idle=nn.Identity(), drop=nn.Dropout(0.0),
                                      real=nn.Dropout(0.5), out=nn.Linear(4, 2)))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    loop(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, tmp_path / "a", steps=1)
    loop(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, tmp_path / "b", steps=1, observe_noops=True)
    assert sorted(dg.load_run(tmp_path / "a").layer_stats()["layer"].unique()) == ["fc", "out", "real"]
    assert sorted(dg.load_run(tmp_path / "b").layer_stats()["layer"].unique()) == ["drop", "fc", "idle", "out", "real"]


# -- nothing inside the watch reaches the training loop -----------------------------------------
def test_every_part_failing_leaves_training_bitwise_unchanged(tmp_path, monkeypatch, caplog):
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))

    def run(run_dir=None):
        torch.manual_seed(0)
        model = dg.mlp(6, [16], 3, dropout=0.2)
        return loop(model, torch.optim.Adam(model.parameters(), lr=0.01), x, y, run_dir, steps=6)

    expected = run()

    def boom(*args, **kwargs):
        raise RuntimeError("injected")
    for cls in STATISTICS.values():  # every statistic raises...
        method = "partial" if issubclass(cls, OutputStatistic) else "compute"
        monkeypatch.setattr(cls, method, boom)
    monkeypatch.setattr(nonfinite.NonFiniteTracker, "check", boom)         # ...the per-step checks,
    monkeypatch.setattr(nonfinite.NonFiniteTracker, "check_one", boom)
    monkeypatch.setattr(nonfinite.NonFiniteTracker, "end_step", boom)      # the step hook's part,
    monkeypatch.setattr(buffer.Buffer, "drain", boom)                      # the buffer,
    monkeypatch.setattr(store.RunWriter, "_apply", lambda *a, **k: boom())  # and every store write
    monkeypatch.setattr(store, "RETRY_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="diagnose"):
        assert run(tmp_path) == expected  # training finished, bitwise the same losses
    assert any("injected" in r.getMessage() for r in caplog.records)


def test_failures_are_recorded_with_the_statistics_they_cost(tmp_path, monkeypatch):
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    torch.manual_seed(0)
    model = dg.mlp(6, [16], 3)

    def boom(*args, **kwargs):
        raise RuntimeError("injected")
    monkeypatch.setattr(STATISTICS.get("grad_norm"), "compute", boom)
    monkeypatch.setattr(STATISTICS.get("zero_fraction"), "partial", boom)
    monkeypatch.setattr(nonfinite.NonFiniteTracker, "keep_for_count", boom)  # inside a forward hook
    loop(model, torch.optim.Adam(model.parameters(), lr=0.01), x, y, tmp_path, steps=4)
    meta = dg.load_run(tmp_path).meta
    assert "GradNorm" in meta["errors"] and "watch: a forward hook" in meta["errors"]
    assert {"grad_norm", "act_zero_frac", "act_mean", "dead_frac"} <= set(meta["missing_statistics"])
    assert "update_ratio" not in meta["missing_statistics"] and meta["complete"] is True
    assert issubclass(STATISTICS.get("update_ratio"), ParameterStatistic)


# -- torch.compile --------------------------------------------------------------------------------
COMPILED = textwrap.dedent("""
    import sys, tempfile, torch, diagnose as dg
    from torch import nn
    torch.manual_seed(0)
    model = dg.mlp(8, [16], 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    compiled = torch.compile(model)
    g = torch.Generator().manual_seed(0)
    run = dg.watch(compiled, opt, sys.argv[2], every=2) if sys.argv[1] == "watched" else None
    losses = []
    for _ in range(6):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if run is not None:
            run.log(loss=loss)
    if run is not None:
        run.close()
    print(" ".join(repr(v) for v in losses))
""")


@pytest.mark.slow
def test_a_compiled_model_is_recorded_under_its_own_names(tmp_path):
    runs = {}
    for mode in ("plain", "watched"):
        proc = subprocess.run([sys.executable, "-c", COMPILED, mode, str(tmp_path / "run")], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0 and "inductor" in proc.stderr.lower() and mode == "plain":
            pytest.skip(f"torch.compile does not work here: {proc.stderr.strip().splitlines()[-1]}")
        assert proc.returncode == 0, proc.stderr
        runs[mode] = [float(v) for v in proc.stdout.split()]
    # measured: equal on this model; inductor may fuse a hooked graph differently (README: Limits)
    assert runs["watched"] == pytest.approx(runs["plain"], rel=1e-5)
    stats = dg.load_run(tmp_path / "run").layer_stats()
    assert sorted(stats["layer"].unique()) == ["act1", "fc1", "out"]  # no "_orig_mod." prefix
    assert stats.set_index("layer").loc["act1", "act_mean"].notna().all()


# -- an overhead budget instead of a cadence ----------------------------------------------------
def test_the_budgeted_cadence_follows_the_measured_costs():
    from diagnose.monitor.schedule import Schedule
    schedule = Schedule(0, 50, 10**6, 1e9, budget=0.03)
    # plain steps of 10 ms; the watch's every-step work 0.1 ms; a sampled step's 5.1 ms
    for step in range(200):
        plan = schedule.plan(step)
        own = 5.1e-3 if plan.sampled else 1e-4
        schedule.step_done(step, plan.sampled, own, 10e-3 + own)
    # (0.1 + 5 / every) / 10 <= 3 %  ->  every >= 5 / (0.3 - 0.1) = 25
    assert schedule.every == 25
    tight = Schedule(0, 50, 10**6, 1e9, budget=0.005)  # the every-step work alone (1 %) is over budget
    for step in range(50):
        plan = tight.plan(step)
        tight.step_done(step, plan.sampled, 1e-4, 10e-3)
    assert tight.every == 5000


def test_the_budget_counts_what_a_sampled_step_costs_outside_the_hooks():
    from diagnose.monitor.schedule import Schedule
    schedule = Schedule(0, 50, 10**6, 1e9, budget=0.03)
    # the hooks time 1 ms of a sampled step, but the step takes 5 ms longer (torch calling the
    # hooks, caches they evicted): the wall-clock extra sets the cadence, 5 / (0.3 - 0.1) = 25
    for step in range(200):
        plan = schedule.plan(step)
        own = 1.1e-3 if plan.sampled else 1e-4
        schedule.step_done(step, plan.sampled, own, 10e-3 + (5.1e-3 if plan.sampled else 1e-4))
    assert schedule.every == 25


def test_a_pause_between_steps_does_not_dilute_the_measured_overhead():
    from diagnose.monitor.schedule import PAUSE, Schedule
    schedule = Schedule(0, 10, 10**6, 1e9)
    for step in range(100):  # 1 ms of own work on 10 ms steps: 10 %
        schedule.step_done(step, schedule.plan(step).sampled, 1e-3, 11e-3)
    schedule.step_done(100, False, 1e-3, 60.0)  # a minute of evaluation before this step
    # the pause counts as PAUSE typical steps at most: 101 ms of own over 1000 + 10 * PAUSE ms
    assert schedule.measured_overhead == pytest.approx(101 / (1000 + 10 * PAUSE), rel=1e-6)


class SlowStatistic(OutputStatistic):
    """Costs 5 ms of a fake clock per call: a costly statistic, deterministically."""

    columns = ("slow",)
    clock = None

    def partial(self, output, module):
        self.clock.now += 5e-3
        return (output.sum(),)

    def finalize(self, values, count):
        return (0.0,)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_a_watch_under_a_budget_sets_its_cadence_and_says_what_it_cost(tmp_path, monkeypatch):
    from diagnose.monitor import watch as watch_module
    clock = FakeClock()
    monkeypatch.setattr(watch_module, "time", clock)
    SlowStatistic.clock = clock
    model = nn.Sequential(OrderedDict(fc=nn.Linear(4, 2)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, tmp_path, overhead=0.03, output_statistics=[SlowStatistic()]):
        for _ in range(120):
            clock.now += 10e-3  # the training step: 10 ms
            opt.zero_grad()
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
    # sampled steps cost 5 ms more: every = 5 / (0.03 x 10) = 16.7 -> 17, after the first two samples
    cadence = dg.load_run(tmp_path).scalars().dropna(subset=["watch_every"])
    assert cadence["step"].tolist() == [0, 10, 27, 44, 61, 78, 95, 112]
    assert cadence["watch_every"].tolist() == [10.0] + [17.0] * 7
    meta = dg.load_run(tmp_path).meta
    assert meta["overhead"]["budget"] == 0.03 and meta["overhead"]["every_at_end"] == 17
    # 8 samples of 5 ms over 119 measured steps of 10 ms (the first step has no start to time)
    assert meta["overhead"]["measured"] == pytest.approx(8 * 5 / (119 * 10), rel=0.05)
    html = dg.report(tmp_path, out=tmp_path / "r.html").read_text()
    assert "watch overhead (measured)" in html and "budget 3 %" in html


def test_a_budget_the_every_step_checks_alone_exceed_is_said_once(tmp_path, monkeypatch, caplog):
    from diagnose.monitor import nonfinite as nonfinite_module
    from diagnose.monitor import watch as watch_module
    clock = FakeClock()
    monkeypatch.setattr(watch_module, "time", clock)
    check_one = nonfinite_module.NonFiniteTracker.check_one

    def slow_check(self, name, tensor):  # the every-step check of the one output: 0.5 ms
        clock.now += 0.5e-3
        check_one(self, name, tensor)
    monkeypatch.setattr(nonfinite_module.NonFiniteTracker, "check_one", slow_check)
    model = nn.Sequential(OrderedDict(fc=nn.Linear(4, 2)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level("WARNING", logger="diagnose"), dg.watch(model, opt, tmp_path, overhead=0.03):
        for _ in range(60):
            clock.now += 10e-3
            opt.zero_grad()
            model(torch.randn(8, 4)).sum().backward()
            opt.step()
    warnings = [r.getMessage() for r in caplog.records if "alone cost" in r.getMessage()]
    assert len(warnings) == 1 and "5.0%" in warnings[0] and "3.0%" in warnings[0]
    meta = dg.load_run(tmp_path).meta
    assert meta["overhead"]["every_step_share"] == pytest.approx(0.05, rel=0.01)
    assert meta["overhead"]["every_at_end"] == 5000 and "alone cost" in meta["overhead_warning"]
    html = dg.report(tmp_path, out=tmp_path / "r.html").read_text()
    assert "checks alone cost 5.0 %" in html
