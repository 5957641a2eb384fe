"""The run store: round trip, merging, durability against SIGKILL, and the recorded norms."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import diagnose as dg
from diagnose.monitor.store import LAYER_STAT_COLUMNS, RunWriter


def test_round_trip_and_merge(tmp_path):
    w = RunWriter(tmp_path, {"note": "x"})
    w.write_scalars([(0, "loss", 1.5), (1, "loss", 1.25), (1, "val_loss", 2.0)])
    w.write_layer_stats([{"step": 0, "layer": "fc1", "grad_norm": 0.5},
                         {"step": 0, "layer": "fc2", "grad_norm": float("nan"), "weight_norm": 3.0}])
    # a later write for the same (step, layer) fills in other statistics, keeping the earlier ones
    w.write_layer_stats([{"step": 0, "layer": "fc1", "weight_norm": 2.0, "custom_stat": 7.0}])
    w.flush()
    run = dg.load_run(tmp_path)
    assert run.meta["complete"] is False  # readable while the writer is still open
    w.close()
    assert run.meta == {"note": "x", "complete": True}
    s = run.scalars()
    assert list(s.columns) == ["step", "loss", "val_loss", "rank"]
    assert s["loss"].tolist() == [1.5, 1.25] and math.isnan(s["val_loss"][0]) and s["val_loss"][1] == 2.0
    ls = run.layer_stats()
    assert list(ls.columns[:2]) == ["step", "layer"] and set(LAYER_STAT_COLUMNS) <= set(ls.columns)
    fc1 = ls[ls.layer == "fc1"].iloc[0]
    assert (fc1.grad_norm, fc1.weight_norm, fc1.custom_stat) == (0.5, 2.0, 7.0)
    assert math.isnan(ls[ls.layer == "fc2"].iloc[0].grad_norm) and math.isnan(fc1.update_ratio)
    w.close()  # twice is fine


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_dir"):
        dg.load_run(tmp_path / "nope")


def test_trainer_records_per_step_loss_and_exact_layer_norms(tmp_path):
    X, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    model = dg.mlp(5, [8], 3, batch_norm=True)
    model.fc1.bias.requires_grad_(False)  # a frozen parameter is not an error

    class Oracle(dg.Callback):
        rows = []

        def on_step_end(self, trainer, step, loss):
            for name in ("fc1", "bn1", "out"):
                m = getattr(model, name)
                grads = [p.grad for p in m.parameters() if p.grad is not None]
                self.rows.append((step, name, torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item(),
                                  torch.linalg.vector_norm(torch.cat([p.detach().flatten()
                                                                      for p in m.parameters()])).item(),
                                  loss.item()))

    trainer = dg.Trainer(model, "adam", callbacks=[Oracle()], run_dir=str(tmp_path), diagnostics_every=1,
                         progress=False)
    trainer.fit((X, y), epochs=2, batch_size=16)
    run = dg.load_run(tmp_path)
    stats = run.layer_stats().set_index(["step", "layer"])
    assert sorted(stats.index.get_level_values("layer").unique()) == ["act1", "bn1", "fc1", "out"]
    for step, name, g, w, _ in Oracle.rows:
        assert stats.loc[(step, name), "grad_norm"] == pytest.approx(g, rel=1e-5)
        # a step's weight norm is of the weights before its update, i.e. after the previous step's
        if step + 1 < 6:
            assert stats.loc[(step + 1, name), "weight_norm"] == pytest.approx(w, rel=1e-5)
    scalars = run.scalars().set_index("step")
    assert len(scalars) == 6 and scalars["loss"].tolist() == pytest.approx([r[4] for r in Oracle.rows[::3]])
    # epoch metrics are logged at the epoch's last step
    assert scalars["epoch"].dropna().tolist() == [0, 1] and scalars["train_loss"].notna().sum() == 2
    meta = run.meta
    assert meta["complete"] is True and meta["optimizer"]["name"] == "adam"
    assert meta["optimizer"]["hyperparameters"]["lr"] == 1e-3 and meta["steps"] == 6
    assert meta["model"]["params"] == sum(p.numel() for p in model.parameters())
    assert meta["versions"]["torch"] == torch.__version__


def test_a_failed_fit_marks_the_run_incomplete(tmp_path):
    X, y = torch.randn(20, 5), torch.randint(0, 3, (20,))

    class Boom(dg.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        dg.Trainer(dg.mlp(5, [4], 3), "adam", callbacks=[Boom()], run_dir=str(tmp_path), progress=False).fit((X, y))
    run = dg.load_run(tmp_path)
    assert run.meta["complete"] is False and len(run.scalars()) > 0
    assert run.state() == "incomplete: the training raised RuntimeError: boom"


CHILD = textwrap.dedent("""
    import torch, diagnose as dg

    class Committed(dg.Callback):  # the handshake: says which epoch is on disk
        def on_epoch_end(self, trainer, epoch, logs):
            trainer.watch.flush()
            trainer.watch.writer.flush()
            print(epoch + 1, flush=True)

    X, y = torch.randn(256, 10), torch.randint(0, 2, (256,))
    dg.Trainer(dg.mlp(10, [32], 2), "adam", run_dir={run_dir!r}, progress=False,
               callbacks=[Committed()]).fit((X, y), epochs=100000)
""")


@pytest.mark.slow
def test_a_killed_run_keeps_what_was_committed(tmp_path, read_line):
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(run_dir=run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 3:
            line = read_line(proc, deadline)
            assert line, "the child never committed three epochs"
            seen = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    run = dg.load_run(run_dir)
    assert run.meta["complete"] is False and run.state().startswith("incomplete: its writer never closed it")
    assert run.scalars()["epoch"].notna().sum() >= seen
    assert len(run.layer_stats()) > 0
