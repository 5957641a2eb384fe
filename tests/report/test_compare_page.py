"""dg.compare / diagnose compare (issue 16): one page comparing runs."""

from __future__ import annotations

import re

import pytest
import torch
from test_report import watched  # the report tests' short watched run (tests/report is on the path)
from torch import nn

import diagnose as dg
from diagnose.cli import main
from diagnose.report.compare import configuration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    data = dg.datasets.cart_abandonment(n=800, seed=0)
    dirs = []
    for name, (optimizer, lr) in {"adam": ("adam", 1e-2), "momentum": ("momentum", 0.05)}.items():
        torch.manual_seed(0)
        dg.Trainer(dg.mlp(data.n_features, [16], 2), optimizer, lr=lr, seed=0, progress=False,
                   run_dir=str(base / name), diagnostics_every=2).fit(data.train, data.val, epochs=4, batch_size=64)
        dirs.append(base / name)
    return base, dirs


def test_two_trainer_runs_side_by_side(trained):
    base, dirs = trained
    html = dg.compare(dirs, out=base / "c.html").read_text()
    for marker in ('id="runs"', 'id="curves"', 'id="configuration"', 'id="findings"', 'id="layers"',
                   "Final and best metrics", "val_loss", "3 layers recorded in every run"):
        assert marker in html, marker
    differing = re.findall(r'<tr class="differs"><td>([^<]+)</td>', html)
    assert "optimizer.name" in differing and "optimizer.hyperparameters.lr" in differing
    assert "epochs" not in differing and "<script" not in html
    assert all(u.startswith(("data:", "#")) for u in re.findall(r'(?:src|href)="([^"]*)"', html))
    best = dg.load_run(dirs[0]).scalars().dropna(subset=["epoch"])["val_loss"].min()
    assert f"{best:.4g} (" in html  # the best val_loss with its epoch


def test_runs_with_different_layers_compare_what_they_share(tmp_path):
    a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    run_a = watched(tmp_path / "a", a, 20, torch.optim.SGD(a.parameters(), lr=0.1), every=1)
    run_b = watched(tmp_path / "b", b, 20, torch.optim.Adam(b.parameters(), lr=1e-3), every=1)
    html = dg.compare([run_a, run_b], out=tmp_path / "c.html", names=["small <net>", "deep"]).read_text()
    assert "3 layers recorded in every run" in html  # 0, 1, 2 by name; b's 3 and 4 are its own
    assert "deep has layers the other runs lack (not compared): 3, 4" in html
    assert "small &lt;net&gt;" in html and "<net>" not in html
    frame = configuration([dg.load_run(run_a).meta, dg.load_run(run_b).meta])
    assert bool(frame.loc["optimizer.class", "differs"]) and not bool(frame.loc["every", "differs"])


def test_the_command_and_its_errors(trained, capsys):
    base, dirs = trained
    assert main(["compare", *map(str, dirs), "-o", str(base / "cli.html")]) == 0
    assert (base / "cli.html").is_file() and "comparison of 2 runs" in capsys.readouterr().out
    assert main(["compare", str(dirs[0])]) == 2
    assert "at least two runs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="names: expected 2 distinct names"):
        dg.compare(dirs, names=["x", "x"])


def test_compare_optimizers_records_each_run_and_writes_the_page(tmp_path):
    data = dg.datasets.digits()
    result = dg.compare_optimizers(lambda: dg.mlp(64, [16], 10), data.train, data.val, optimizers=["adam", "momentum"],
                                   epochs=2, batch_size=64, run_dir=tmp_path / "runs")
    curves, figure = result  # still a (curves, figure) pair
    assert set(curves["optimizer"]) == {"adam", "momentum"}
    assert set(result.run_dirs) == {"adam", "momentum"} and result.page == tmp_path / "runs" / "compare.html"
    html = result.page.read_text()
    assert "<th>adam</th>" in html and "<th>momentum</th>" in html and 'class="differs"' in html
    with pytest.raises(ValueError, match="out: the comparison page needs the runs recorded"):
        dg.compare_optimizers(lambda: dg.mlp(64, [4], 10), data.train, data.val, optimizers=["adam"], epochs=1,
                              out=tmp_path / "x.html")
