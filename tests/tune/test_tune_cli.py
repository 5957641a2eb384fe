"""``diagnose tune`` and ``diagnose tune-status``: the config checked like code, local workers on
one study, workers joining a PostgreSQL study, per-trial runs and the best trials' comparison."""

import subprocess
import sys
import textwrap
import uuid

import optuna
import pytest

from diagnose.cli import build_parser, main

CONFIG = textwrap.dedent("""
    dataset: digits
    space:
      hidden: [16, 32]
      lr: {log_uniform: [0.003, 0.03]}
    strategy: random
    epochs: 1
    metric: val_accuracy
""")


def write(tmp_path, text, name="tune.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, message", [
    ("stratgy: random\nspace: {lr: [0.1]}\n", "unknown key 'stratgy' (did you mean 'strategy'?)"),
    ("trails: 5\nspace: {lr: [0.1]}\n", "unknown key 'trails' (did you mean 'trials'?)"),
    ("epoch: 5\nspace: {lr: [0.1]}\n", "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("metrc: val_loss\nspace: {lr: [0.1]}\n", "unknown key 'metrc' (did you mean 'metric'?)"),
    ("space: {hiden: [16, 32]}\n", "space.hiden is not a parameter this run uses (did you mean 'hidden'?)"),
    ("space: {optimiser: [adam, sgd]}\n", "space.optimiser is not a parameter this run uses (did you mean "
                                         "'optimizer'?)"),
    ("metric: val_acc\nspace: {lr: [0.1]}\n", "metric must be one of ['val_loss', 'val_accuracy'], got 'val_acc' "
                                             "(did you mean 'val_accuracy'?)"),
    ("space:\n  - lr\n  - hidden\n", "space must be a mapping of parameter -> values"),
    ("model: {hiden: 3}\nspace: {lr: [0.1]}\n", "model.hiden is not a model setting (did you mean 'hidden'?)"),
    ("space: {lr: {range: [0.1]}}\n", "space.lr: expected [low, high]"),
    ("dataset: mnist\nspace: {lr: [0.1]}\n", "dataset must be one of"),
    ("epochs: 3\n", "needs a 'space'"),
    ("trials: 0\nspace: {lr: [0.1]}\n", "trials must be a positive integer"),
])
def test_a_config_mistake_is_an_error_naming_the_key_before_any_trial(tmp_path, capsys, text, message):
    assert main(["tune", str(write(tmp_path, text)), "--no-runs"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_two_number_list_is_two_categories_and_the_help_says_how_to_write_a_range(tmp_path, caplog):
    from diagnose.tune.config import load
    path = write(tmp_path, "space: {dropout: [0.0, 0.5], lr: {range: [0.001, 0.1]}, hidden: {range: [8, 64]}}\n")
    with caplog.at_level("WARNING"):
        config = load(path)
    assert config.space["dropout"] == [0.0, 0.5] and "for a range write {range: [0.0, 0.5]}" in caplog.text
    assert config.space["lr"] == (0.001, 0.1) and config.space["hidden"] == (8, 64)  # uniform; integers
    help_text = build_parser()._subparsers._group_actions[0].choices["tune"].format_help()
    assert "{range: [low, high]}" in help_text and "A list = categories (always" in help_text


@pytest.mark.slow
def test_local_workers_share_one_sqlite_study_whose_folder_is_created(tmp_path):
    config = write(tmp_path, CONFIG)
    out = subprocess.run([sys.executable, "-m", "diagnose.cli", "tune", str(config), "--workers", "2",
                          "--storage", "sqlite:///new/folder/tune.db", "--trials", "4"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "study: 4 trials in all" in out.stdout
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{tmp_path / 'new/folder/tune.db'}")
    assert len(study.trials) == 4 and len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    runs = sorted(p.name for p in (tmp_path / "runs/tune/tune").iterdir())
    assert runs == [f"trial-{n:04d}" for n in range(4)]  # one diagnostics run per trial
    assert (tmp_path / "reports/tune-best-trials.html").exists()


@pytest.mark.slow
def test_workers_join_a_postgresql_study_and_tune_status_follows_it(tmp_path, postgres_url):
    config = write(tmp_path, CONFIG)
    study = f"pg-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "diagnose.cli", "tune", str(config), "--storage", postgres_url, "--study", study,
           "--trials", "6"]
    # two "machines": two commands started together on the same storage and study
    machines = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    for machine in machines:
        _, err = machine.communicate(timeout=600)
        assert machine.returncode == 0, err[-3000:]
    loaded = optuna.load_study(study_name=study, storage=postgres_url)
    assert len(loaded.trials) == 6  # the study's budget, not 6 per command
    assert all(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in loaded.trials)
    assert all((tmp_path / "runs/tune" / study / f"trial-{n:04d}").is_dir() for n in range(6))
    status = subprocess.run([sys.executable, "-m", "diagnose.cli", "tune-status", postgres_url, study],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert f"study '{study}' (maximize): 6 of 6 trials finished" in status.stdout and "best so far" in status.stdout
    missing = subprocess.run([sys.executable, "-m", "diagnose.cli", "tune-status", postgres_url, study + "x"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and f"(did you mean '{study}'?)" in missing.stderr


@pytest.mark.slow
def test_diagnostics_aware_pruning_works_the_same_across_workers(tmp_path, postgres_url):
    study = f"prune-{uuid.uuid4().hex[:8]}"
    config = write(tmp_path, """
        dataset: digits
        space:
          lr: [100000.0]
          hidden: [16, 32]
        strategy: random
        epochs: 2
        metric: val_accuracy
    """)  # every trial blows up: Adam at lr 1e5
    out = subprocess.run([sys.executable, "-m", "diagnose.cli", "tune", str(config), "--workers", "2",
                          "--storage", postgres_url, "--study", study, "--trials", "4"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "completed; see the trials' states" in out.stderr, out.stderr[-3000:]
    assert "pruned: trial" in out.stderr and "diverged at epoch 0" in out.stderr  # tune-status's reasons
    trials = optuna.load_study(study_name=study, storage=postgres_url).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    # whichever worker ran it, each trial was stopped by the same diagnostics, the reason kept in the storage
    assert all("diverged at epoch 0" in t.user_attrs["prune_reason"] for t in trials)
