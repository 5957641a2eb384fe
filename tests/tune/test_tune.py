"""dg.tune and dg.tune_trainer: strategies on a known function, the grid, errors, pruning,
cross-validation, shared storage across processes, and the course's end project."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import diagnose as dg


def sphere(p):
    """Minimum 0 at x = 1, y = -2."""
    return (p["x"] - 1) ** 2 + (p["y"] + 2) ** 2


SPACE = {"x": (-5.0, 5.0), "y": (-5.0, 5.0)}


def test_grid_runs_each_combination_exactly_once():
    seen = []
    result = dg.tune({"a": [1, 2, 3], "b": ["x", "y"], "c": [[8], [16, 16]]},
                     lambda p: seen.append((p["a"], p["b"], tuple(p["c"]))) or p["a"], strategy="grid", n_trials=None)
    assert len(seen) == 12 and len(set(seen)) == 12
    assert len(result.trials) == 12 and result.best_params["a"] == 1 and result.best_value == 1
    assert result.best_params["c"] in ([8], [16, 16])  # lists come back as lists


@pytest.mark.parametrize("strategy, bound", [("random", 1.0), ("bayes", 0.05), ("bayes_gp", 0.05),
                                             ("evolutionary", 0.1)])
def test_strategies_reach_the_optimum_of_a_known_function(strategy, bound):
    values = [dg.tune(SPACE, sphere, strategy=strategy, n_trials=60, seed=s).best_value for s in (0, 1, 2)]
    assert np.median(values) < bound


def test_bayes_does_at_least_as_well_as_random_seeded():
    for seed in (0, 1, 2):
        bayes = dg.tune(SPACE, sphere, strategy="bayes", n_trials=60, seed=seed).best_value
        random = dg.tune(SPACE, sphere, strategy="random", n_trials=60, seed=seed).best_value
        assert bayes <= random


def test_seed_makes_a_study_reproducible():
    a = dg.tune(SPACE, sphere, strategy="bayes", n_trials=15, seed=3).trials
    b = dg.tune(SPACE, sphere, strategy="bayes", n_trials=15, seed=3).trials
    np.testing.assert_array_equal(a[["x", "y", "value"]].to_numpy(), b[["x", "y", "value"]].to_numpy())


def test_evolutionary_with_categories_uses_a_genetic_sampler():
    result = dg.tune({"x": (-5.0, 5.0), "k": ["a", "b"]}, lambda p: (p["x"] - 1) ** 2 + (p["k"] == "b"),
                     strategy="evolutionary", n_trials=40)
    assert isinstance(result.study.sampler, optuna.samplers.NSGAIISampler) and result.best_value < 0.5


def test_integer_and_log_ranges():
    result = dg.tune({"n": (1, 10), "lr": dg.log_uniform(1e-4, 1.0)},
                     lambda p: abs(p["n"] - 7) + abs(np.log10(p["lr"]) + 2), strategy="bayes", n_trials=40)
    assert isinstance(result.best_params["n"], int) and 1e-4 <= result.best_params["lr"] <= 1.0
    assert result.best_value < 1.0


@pytest.mark.parametrize("space, strategy, error, match", [
    ({}, "random", ValueError, "space: expected a non-empty"),
    ({"x": (-1.0, 1.0)}, "grid", ValueError, "grid.*'x'"),
    ({"x": (2.0, 1.0)}, "random", ValueError, "low < high"),
    ({"x": []}, "random", ValueError, "empty"),
    ({"x": "abc"}, "random", TypeError, "space\\['x'\\]"),
    ({"x": [1, 2]}, "anneal", ValueError, "strategy"),
])
def test_bad_spaces_and_strategies(space, strategy, error, match):
    with pytest.raises(error, match=match):
        dg.tune(space, lambda p: 0.0, strategy=strategy, n_trials=2)


def test_a_non_float_objective_value_is_refused():
    with pytest.raises(TypeError, match="objective: must return a float"):
        dg.tune({"x": [1, 2]}, lambda p: "good", strategy="grid", n_trials=None)
    with pytest.raises(ValueError, match="log_uniform"):
        dg.log_uniform(0.0, 1.0)


def test_objective_can_report_intermediate_values_and_prune():
    def objective(params, trial):
        for step in range(5):
            trial.report(params["x"] + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return params["x"]
    result = dg.tune({"x": (0.0, 10.0)}, objective, strategy="random", n_trials=30,
                     pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    assert (result.trials["state"] == "PRUNED").any() and result.best_value < 2.0


# -- the trainer -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return dg.datasets.digits()


def mlp_fn(params):
    return dg.mlp(64, [params.get("hidden", 16)], 10)


def test_tune_trainer_prunes_diverging_trials_with_a_reason():
    # least squares with a learning rate far above 2 / curvature: the weights blow up geometrically
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g) * 3
    y = X @ torch.randn(8, generator=g)
    space = {"lr": [1e-3, 5.0], "optimizer": ["minibatch_sgd"]}
    result = dg.tune_trainer(lambda: torch.nn.Linear(8, 1), (X, y), (X, y), space, strategy="grid", n_trials=None,
                             epochs=6, batch_size=32, loss="mse")
    trials = result.trials.set_index("lr")
    assert trials.loc[5.0, "state"] == "PRUNED", trials
    assert any(word in trials.loc[5.0, "prune_reason"] for word in ("non-finite", "exploding", "diverged"))
    assert trials.loc[1e-3, "state"] == "COMPLETE" and result.best_params["lr"] == 1e-3
    assert list(result.trials.columns) == ["number", "lr", "optimizer", "value", "state", "duration_s", "prune_reason",
                                           "last_reported", "last_reported_step", "run_dir"]
    assert np.isfinite(trials.loc[1e-3, "last_reported"])  # each epoch's value was reported


def test_tune_trainer_with_k_fold_cross_validation(digits):
    X, y = digits.train
    result = dg.tune_trainer(mlp_fn, (X[:300], y[:300]), None, {"lr": [1e-3, 1e-2]}, strategy="grid", n_trials=None,
                             epochs=2, folds=3, metric="val_accuracy", optimizer="adam", batch_size=32)
    assert result.direction == "maximize" and len(result.trials) == 2 and 0 < result.best_value <= 1
    with pytest.raises(ValueError, match="val"):
        dg.tune_trainer(mlp_fn, (X, y), None, {"lr": [1e-3]}, strategy="grid")


@pytest.mark.slow
def test_the_end_project_tuned_beats_the_untuned_default(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "tuning_digits.py"
    proc = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the example asserts tuned > untuned itself
    assert "validation accuracy: untuned default" in proc.stdout


CONFIG = textwrap.dedent("""
    dataset: digits
    space:
      hidden: [16, 32, 64]
      lr: {log_uniform: [0.001, 0.1]}
      optimizer: [adam, momentum]
    strategy: random
    epochs: 2
    metric: val_accuracy
""")


def test_tune_command_errors(tmp_path, capsys):
    from diagnose.cli import main
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: mnist\nspace: {lr: [0.1]}\n")
    assert main(["tune", str(bad)]) == 2
    assert "dataset must be one of" in capsys.readouterr().err
    bad.write_text("epochs: 3\n")
    assert main(["tune", str(bad)]) == 2
    assert "needs a 'space'" in capsys.readouterr().err


def test_the_report_has_a_tuning_section(digits, tmp_path):
    result = dg.tune_trainer(mlp_fn, digits.train, digits.val, {"lr": dg.log_uniform(1e-3, 1e-1), "hidden": [8, 16]},
                             strategy="random", n_trials=6, epochs=2, metric="val_accuracy", optimizer="adam",
                             run_dir=tmp_path / "trials")
    assert sorted(result.run_dirs) == list(range(6)) and result.param_names == ["lr", "hidden"]
    assert all((d / "run.sqlite").exists() for d in result.run_dirs.values())  # each trial's diagnostics
    model = dg.mlp(64, [8], 10)
    opt = torch.optim.Adam(model.parameters())
    with dg.watch(model, opt, tmp_path / "run") as run:
        for _ in range(3):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(digits.X_train[:32]), digits.y_train[:32])
            loss.backward()
            opt.step()
            run.log(loss=loss)
    out = dg.report(tmp_path / "run", tuning=result, out=tmp_path / "reports" / "r.html")
    html = out.read_text()
    for marker in ('id="tuning"', "Hyperparameter search", "trial history", "Best trials", "Curves of the best trial",
                   "training health (its recorded run)", 'href="r-best-trials.html"'):
        assert marker in html, marker
    assert "parameter importances" in html and "last_reported</th>" not in html  # bookkeeping is not a parameter
    best = int(result.best_trials(1)["number"].iloc[0])
    assert f'href="../trials/trial-{best:04d}"' in html  # the best trial's run, linked relative to the report
    page = (tmp_path / "reports" / "r-best-trials.html").read_text()
    assert f"trial-{best:04d}" in page and page.count("<h3>") >= 1  # the best three side by side


def test_comparing_the_best_trials_needs_recorded_runs(digits):
    from diagnose.report.compare import compare_trials
    result = dg.tune_trainer(mlp_fn, digits.train, digits.val, {"lr": [1e-3, 1e-2]}, strategy="grid", n_trials=None,
                             epochs=1, optimizer="adam")
    assert result.best_run_dirs(3) == []
    with pytest.raises(ValueError, match="pass run_dir= to tune_trainer"):
        compare_trials(result)
