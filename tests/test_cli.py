"""The diagnose command."""

import subprocess
import sys

import pytest

import diagnose as dg
from diagnose.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_demo_in_process(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run_dir), "--epochs", "3", "--rows", "600", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "adadelta" in out
    run = dg.load_run(run_dir)
    assert run.meta["complete"] and run.meta["optimizer"]["name"] == "adadelta"
    assert len(run.layer_stats()) > 0
    # a second demo into a user-chosen directory does not destroy it without --overwrite
    assert main(["demo", "--run-dir", str(run_dir), "--epochs", "1", "--rows", "600", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["demo", "--run-dir", str(run_dir), "--epochs", "1", "--rows", "600", "--quiet", "--overwrite"]) == 0


@pytest.mark.slow
def test_console_script_demo_end_to_end(tmp_path):
    """The installed `diagnose demo` (full size) runs, early-stops and records its run."""
    proc = subprocess.run([sys.executable, "-m", "diagnose.cli", "demo", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "stopped at epoch" in proc.stdout
    run = dg.load_run(tmp_path / "runs" / "demo")
    assert run.meta["complete"] and run.meta["best_epoch"] is not None


def test_findings_command(tmp_path, capsys, steps):
    import torch
    model = dg.mlp(4, [8], 2)
    with torch.no_grad():
        model.fc1.bias.fill_(-50.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dg.watch(model, opt, tmp_path, every=1) as run:
        steps(model, opt, run, 30)
    assert main(["findings", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[CRITICAL] dead_units in act1, steps 6-29 (supported by 24 of 24 sampled steps)" in out
    assert "Remedy:" in out
    assert "Not evaluated:" in out and "overfitting: no validation loss" in out


def test_findings_on_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["findings", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnose: run_dir: no recorded run") and "Traceback" not in err
