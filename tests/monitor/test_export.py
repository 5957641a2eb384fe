"""Exports of a run: Parquet/CSV and TensorBoard."""

import json

import pandas as pd
import pytest
import torch

import diagnose as dg


@pytest.fixture
def run(tmp_path, steps):
    model = dg.mlp(4, [6], 2)
    opt = torch.optim.Adam(model.parameters())
    with dg.watch(model, opt, tmp_path / "run", every=2) as w:
        steps(model, opt, w, 4, rows=8)
    return dg.load_run(tmp_path / "run")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_round_trips(run, tmp_path, fmt):
    paths = run.export(tmp_path / "out", format=fmt)
    assert [p.name for p in paths] == [f"layer_stats.{fmt}", f"scalars.{fmt}", "meta.json"]
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    pd.testing.assert_frame_equal(read(paths[0]), run.layer_stats(), check_dtype=False)
    pd.testing.assert_frame_equal(read(paths[1]), run.scalars(), check_dtype=False)
    assert json.loads(paths[2].read_text())["complete"] is True


def test_export_refuses_an_unknown_format(run, tmp_path):
    with pytest.raises(ValueError, match="format"):
        run.export(tmp_path / "out", format="xlsx")


def test_to_tensorboard_writes_the_scalars_and_layer_statistics(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logdir = run.to_tensorboard(tmp_path / "tb")
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "loss" in tags and "grad_norm/fc1" in tags and "act_mean/act1" in tags
    assert [e.step for e in events.Scalars("loss")] == [0, 1, 2, 3]
    assert [e.step for e in events.Scalars("grad_norm/fc1")] == [0, 2]
