"""Each finding rule on synthetic run data: its thresholds, de-duplication, and what it skips."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import diagnose as dg
from diagnose.findings import RULES, evaluate
from diagnose.findings import dead_units as dead_rule
from diagnose.findings import exploding_gradient as exploding_rule
from diagnose.findings import loss_plateau as plateau_rule
from diagnose.findings import overfitting as overfit_rule
from diagnose.findings import saturation as saturation_rule
from diagnose.findings import vanishing_gradient as vanishing_rule
from diagnose.findings.base import RunData, Skip


def stats(rows):
    """layer_stats from {layer: {column: [values per step]}}."""
    out = []
    for layer, cols in rows.items():
        n = len(next(iter(cols.values())))
        for step in range(n):
            out.append({"step": step * 10, "layer": layer, **{c: v[step] for c, v in cols.items()}})
    return pd.DataFrame(out).sort_values(["step"], kind="stable")


def data(layer_stats=None, loss=None, val=None, meta=None, train=None):
    scalars = pd.DataFrame({"step": pd.Series(dtype=int)})
    series = None
    if loss is not None:
        scalars = pd.DataFrame({"step": np.arange(len(loss)), "loss": loss})
        series = pd.Series(loss, index=np.arange(len(loss)), dtype=float)
    if val is not None:
        every = len(loss) // len(val)
        steps = [every * (i + 1) - 1 for i in range(len(val))]
        extra = pd.DataFrame({"step": steps, "val_loss": val, "epoch": range(len(val))})
        if train is not None:
            extra["train_loss"] = train
        scalars = scalars.merge(extra, on="step", how="left")
    ls = layer_stats if layer_stats is not None else pd.DataFrame(columns=["step", "layer"])
    return RunData(ls, scalars, meta or {}, series)


def test_every_rule_is_registered():
    assert set(RULES) == {"vanishing_gradient", "exploding_gradient", "dead_units", "saturation", "nonfinite",
                          "divergence", "overfitting", "stalled_learning_rate", "loss_plateau", "loss_spike",
                          "no_steps"}


# -- vanishing ----------------------------------------------------------------------------------
def test_vanishing_lists_every_affected_layer_once():
    n = 20
    # the typical layer is the 75th percentile of the four: 1e-2 + 0.75 * (1 - 1e-2) = 0.2575
    run = data(stats({"fc1": {"grad_norm": [1e-4] * n}, "fc2": {"grad_norm": [2e-4] * n},
                      "fc3": {"grad_norm": [1e-2] * n}, "out": {"grad_norm": [1.0] * n}}))
    [f] = RULES["vanishing_gradient"](run)
    assert f.layer == "fc1" and set(f.evidence["layers"]) == {"fc1", "fc2"} and f.severity == "warning"
    assert f.evidence["typical"] == pytest.approx(0.2575)
    assert f.evidence["layers"]["fc2"] == pytest.approx(2e-4 / 0.2575)
    assert (f.evidence["supporting_steps"], f.evidence["judged_steps"]) == (16, 16)  # after the 20 % warm-up


def test_vanishing_boundary_and_persistence():
    n = 20
    just_above = stats({"fc1": {"grad_norm": [1.01e-3] * n}, "out": {"grad_norm": [1.0] * n}})
    assert RULES["vanishing_gradient"](data(just_above)) == []
    # below the ratio on 70 % of the judged steps only: not persistent
    flicker = [1e-5] * 14 + [1.0] * 6
    flickering = stats({"fc1": {"grad_norm": flicker}, "out": {"grad_norm": [1.0] * n}})
    assert RULES["vanishing_gradient"](data(flickering)) == []
    deep = stats({"fc1": {"grad_norm": [1e-9] * n}, "out": {"grad_norm": [1.0] * n}})
    assert RULES["vanishing_gradient"](data(deep))[0].severity == "critical"


def test_vanishing_needs_two_layers():
    with pytest.raises(Skip):
        RULES["vanishing_gradient"](data(stats({"fc1": {"grad_norm": [1.0] * 5}})))


# -- exploding ----------------------------------------------------------------------------------
def test_exploding_from_update_ratio_and_from_growth():
    n = 20
    big_steps = stats({"fc1": {"grad_norm": [1.0] * n, "weight_norm": [1.0] * n,
                               "update_ratio": [0.5] * n}})
    [f] = RULES["exploding_gradient"](data(big_steps))
    assert f.layer == "fc1" and f.severity == "warning" and f.evidence["layers"]["fc1"]["median_update_ratio"] == 0.5
    healthy = stats({"fc1": {"grad_norm": [1.0] * n, "weight_norm": [10.0] * n, "update_ratio": [1e-3] * n}})
    assert RULES["exploding_gradient"](data(healthy)) == []
    growing = stats({"fc1": {"grad_norm": list(np.logspace(0, 4, n)), "weight_norm": [1e6] * n,
                             "update_ratio": [1e-3] * n}})
    [f] = RULES["exploding_gradient"](data(growing))
    assert f.evidence["growth"] >= exploding_rule.GROWTH_WARNING and f.layer is None


# -- dead units, saturation ---------------------------------------------------------------------
@pytest.mark.parametrize("rule_name, column, module, warn, crit", [
    ("dead_units", "dead_frac", dead_rule, dead_rule.DEAD_WARNING, dead_rule.DEAD_CRITICAL),
    ("saturation", "saturated_frac", saturation_rule, saturation_rule.SATURATION_WARNING,
     saturation_rule.SATURATION_CRITICAL)])
def test_fraction_rules_thresholds(rule_name, column, module, warn, crit):
    n = 10
    run = data(stats({"act1": {column: [warn] * n}, "act2": {column: [warn + 0.01] * n},
                      "act3": {column: [crit] * n}}))  # more than the warning threshold
    found = {f.layer: f.severity for f in RULES[rule_name](run)}
    assert found == {"act2": "warning", "act3": "critical"}


def test_fraction_rules_skip_without_such_layers():
    run = data(stats({"fc1": {"grad_norm": [1.0] * 5}}))
    for name in ("dead_units", "saturation"):
        with pytest.raises(Skip):
            RULES[name](run)


# -- loss-based rules ---------------------------------------------------------------------------
def test_divergence_needs_a_persistent_rise():
    falling = list(np.linspace(2.0, 0.5, 100))
    rising = falling[:50] + list(np.linspace(1.3, 4.0, 50))
    assert RULES["divergence"](data(loss=falling)) == []
    [f] = RULES["divergence"](data(loss=rising))
    assert f.kind == "divergence" and f.evidence["final_loss"] > 2 * f.evidence["best_loss"]
    noisy = list(0.01 + 0.02 * np.abs(np.sin(np.arange(200))))  # tiny, noisy, converged
    assert RULES["divergence"](data(loss=noisy)) == []


def test_plateau_stuck_far_or_converged():
    assert RULES["loss_plateau"](data(loss=[2.3] * 100))[0].evidence["relative_change"] < plateau_rule.FLAT
    converged = list(np.linspace(2.0, 0.1, 70)) + [0.1] * 30
    assert RULES["loss_plateau"](data(loss=converged)) == []
    with pytest.raises(Skip):
        RULES["loss_plateau"](data(loss=[1.0] * 5))


def test_overfitting_names_the_early_stopping_epoch():
    steps = 100
    loss = list(np.linspace(1.0, 0.1, steps))
    val = [1.0, 0.8, 0.7, 0.75, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
    [f] = RULES["overfitting"](data(loss=loss, val=val))
    assert f.evidence["best_epoch"] == 2 and f.evidence["early_stopping_epoch"] == 2 + overfit_rule.PATIENCE
    assert f.severity == "critical" and f.evidence["gap"] > 1.0


def test_overfitting_is_not_divergence_nor_noise():
    loss = list(np.linspace(1.0, 0.1, 100))
    assert RULES["overfitting"](data(loss=loss, val=[1.0, 0.8, 0.7, 0.71, 0.69, 0.7, 0.71, 0.7, 0.7, 0.71])) == []
    rising_train = list(np.linspace(0.1, 1.0, 100))
    assert RULES["overfitting"](data(loss=rising_train, val=[1.0, 0.8, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4])) == []


def test_overfitting_is_not_evaluated_without_validation():
    with pytest.raises(Skip, match="validation"):
        RULES["overfitting"](data(loss=[1.0] * 50))


def test_stall_needs_an_accumulating_optimizer_and_a_stuck_loss():
    n = 20
    eff = stats({"fc1": {"eff_lr": [1e-5] * n}})
    meta = {"optimizer": {"class": "Adagrad", "hyperparameters": {"lr": 0.01}}}
    [f] = RULES["stalled_learning_rate"](data(eff, loss=[0.7] * 200, meta=meta))
    assert f.layer == "fc1" and f.evidence["fraction_of_lr"]["fc1"] == pytest.approx(1e-3)
    assert RULES["stalled_learning_rate"](data(eff, loss=list(np.linspace(0.7, 0.1, 200)), meta=meta)) == []
    adam = {"optimizer": {"class": "Adam", "hyperparameters": {"lr": 0.01}}}  # eff_lr low, not falling
    assert RULES["stalled_learning_rate"](data(eff, loss=[0.7] * 200, meta=adam)) == []


def test_nonfinite_from_the_watch_origin_and_from_the_loss():
    meta = {"first_nonfinite": {"step": 7, "layer": "fc2", "where": "output"}}
    [f] = RULES["nonfinite"](data(stats({"fc2": {"nonfinite": [0, 3]}}), meta=meta))
    assert (f.layer, f.steps[0], f.severity) == ("fc2", 7, "critical") and "output of fc2" in f.message
    [f] = RULES["nonfinite"](data(loss=[1.0, 2.0, float("nan")]))
    assert f.steps[0] == 2 and f.layer is None
    assert RULES["nonfinite"](data(loss=[1.0, 2.0])) == []


# -- whole runs ---------------------------------------------------------------------------------
def test_findings_on_a_run_without_validation_say_what_was_not_evaluated(tmp_path, steps):
    model = dg.mlp(4, [8], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, tmp_path, every=2) as run:
        steps(model, opt, run, 30)
    outcomes = {o.name: o for o in evaluate(tmp_path).outcomes}
    assert "validation" in outcomes["overfitting"].skipped
    assert outcomes["saturation"].skipped and outcomes["vanishing_gradient"].skipped is None
    assert isinstance(dg.load_run(tmp_path).findings(), list)


def test_findings_on_a_run_killed_midway(tmp_path, steps):
    # a watch that is never closed stands for a killed process: the store holds its flushes only
    model = dg.mlp(4, [8], 2)
    with torch.no_grad():
        model.fc1.bias.fill_(-50.0)  # every hidden unit dead
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = dg.watch(model, opt, tmp_path, every=1, flush_every=10)
    steps(model, opt, run, 40)
    run.writer.flush()
    loaded = dg.load_run(tmp_path)
    assert loaded.meta["complete"] is False
    found = loaded.findings()
    assert any(f.kind == "dead_units" and f.layer == "act1" for f in found)
    run.close()


def test_findings_are_ordered_by_severity_then_step():
    # two warnings and a critical, from two rules, that the rules return in another order
    run = data(stats({"act1": {"dead_frac": [0.6] * 10}, "act2": {"dead_frac": [0.95] * 10},
                      "act3": {"dead_frac": [float("nan")] * 4 + [0.6] * 6}}), loss=[1.0] * 10 + [float("nan")])
    evaluation = evaluate(run)
    assert [(f.kind, f.layer) for f in evaluation.findings] == [
        ("nonfinite", None), ("dead_units", "act2"), ("dead_units", "act1"), ("dead_units", "act3")]
    assert [f.severity for f in evaluation.findings] == ["critical", "critical", "warning", "warning"]
    assert evaluation.verdict == "failing" and dg.findings(run) == evaluation.findings


def test_dg_findings_is_the_function():
    assert callable(dg.findings) and dg.findings.__name__ == "findings"
    assert math.isfinite(dead_rule.DEAD_WARNING) and vanishing_rule.RATIO_WARNING == 1e-3


def test_a_nan_logged_as_the_loss_is_a_finding(tmp_path):
    model = dg.mlp(4, [8], 2)
    with dg.watch(model, run_dir=tmp_path, track_nonfinite=False) as run:
        for step in range(6):
            run.step()
            run.log(loss=float("nan") if step == 4 else 1.0)
    assert math.isnan(dg.load_run(tmp_path).scalar("loss")[4])
    [f] = [f for f in dg.findings(tmp_path) if f.kind == "nonfinite"]
    assert f.steps[0] == 4 and "loss" in f.message
