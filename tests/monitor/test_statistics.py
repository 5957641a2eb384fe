"""Every registered statistic against its own float64 oracle, on a run recorded at every step.

The oracle sees what plain hooks saw (outputs, parameters before and after the update, gradients,
the optimizer): a new statistic is tested the moment it is registered, and the test fails if
the harness model has no layer the statistic applies to.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg
from diagnose.monitor.statistics import STATISTICS, Observation, OutputStatistic

STEPS = 4


def harness_model():
    """Every kind of layer the built-in statistics look at: rectifiers with dead units, tanh and
    sigmoid in saturation, batch norm, a frozen layer."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        fc1=nn.Linear(6, 16), act1=nn.ReLU(), fc2=nn.Linear(16, 16), bn=nn.BatchNorm1d(16), act2=nn.Tanh(),
        fc3=nn.Linear(16, 8), act3=nn.Sigmoid(), out=nn.Linear(8, 3)))
    with torch.no_grad():
        model.fc1.bias[:6] = -20.0     # 6 of 16 rectifier units dead
        model.fc2.weight.mul_(8.0)     # tanh and sigmoid partly in their tails
        model.fc3.weight.mul_(6.0)
    return model


class Recorder:
    """Plain hooks: each module's outputs of the step, and each layer's parameters and grads."""

    def __init__(self, model):
        self.model = model
        self.outputs = {}
        self.handles = [m.register_forward_hook(self.hook(name)) for name, m in model.named_modules() if name]

    def hook(self, name):
        def record(module, args, output):
            self.outputs.setdefault(name, []).append(output.detach().clone())
        return record

    def own(self, name):
        return list(dict(self.model.named_modules())[name].parameters(recurse=False))


@pytest.fixture(scope="module", params=["adam", "momentum"])
def recorded(request, tmp_path_factory):
    """(recorded layer_stats, {(step, layer): expected values per statistic name})."""
    model = harness_model()
    opt = (torch.optim.Adam(model.parameters(), lr=0.05) if request.param == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    stats = {name: cls() for name, cls in STATISTICS.items()}
    rec = Recorder(model)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    expected = {}
    run_dir = tmp_path_factory.mktemp("stats") / "run"
    with dg.watch(model, opt, run_dir, every=1, output_statistics=[s for s in stats.values()
                                                                   if isinstance(s, OutputStatistic)],
                  parameter_statistics=[s for s in stats.values() if not isinstance(s, OutputStatistic)]):
        for step in range(STEPS):
            rec.outputs = {}
            before = {n: [p.detach().clone() for p in rec.own(n)] for n, _ in model.named_modules() if n}
            opt.zero_grad()
            if step == 2:  # two micro-batches: each module runs twice, then once again at step 3
                for half in (slice(0, 16), slice(16, 32)):
                    (nn.functional.cross_entropy(model(x[half]), y[half]) / 2).backward()
            else:
                nn.functional.cross_entropy(model(x), y).backward()
            grads = {n: [p.grad.detach().clone() for p in rec.own(n) if p.grad is not None] for n in before}
            opt.step()
            for name, module in model.named_modules():
                if not name:
                    continue
                obs = Observation(module=module, outputs=rec.outputs.get(name, []), before=before[name],
                                  after=[p.detach().clone() for p in rec.own(name)], grads=grads[name],
                                  optimizer=opt, params=rec.own(name))
                for stat_name, stat in stats.items():
                    is_output = isinstance(stat, OutputStatistic)
                    if is_output and not stat.applies_to(module) or not is_output and not obs.params:
                        continue
                    value = stat.oracle(obs)
                    if value is not None:
                        expected.setdefault(stat_name, []).append((step, name, value))
    for handle in rec.handles:
        handle.remove()
    return dg.load_run(run_dir).layer_stats().set_index(["step", "layer"]), expected


@pytest.mark.parametrize("name", STATISTICS.names())
def test_every_statistic_matches_its_oracle(recorded, name):
    stats, expected = recorded
    cls = STATISTICS.get(name)
    assert expected.get(name), f"the harness model has no layer that {name} applies to: add one"
    for step, layer, values in expected[name]:
        for column, value in zip(cls.columns, values):
            got = stats.loc[(step, layer), column]
            assert got == pytest.approx(value, rel=1e-4, abs=1e-6), (name, step, layer, column)
    # the harness exercises the statistic: a value other than 0 (no dead unit, no saturation) and NaN
    assert any(np.isfinite(v) and v != 0 for _, _, values in expected[name] for v in values)


def test_the_store_and_the_report_follow_the_registry():
    from diagnose.monitor.statistics import statistic_columns, statistic_plots
    from diagnose.monitor.store import LAYER_STAT_COLUMNS, STORE_COLUMNS
    assert set(statistic_columns()) | {"nonfinite"} >= set(LAYER_STAT_COLUMNS)  # the API's columns, produced
    assert set(statistic_columns()) <= set(STORE_COLUMNS)
    assert all(column in statistic_columns() for column, _, _ in statistic_plots())
    assert dg.list_statistics() == STATISTICS.names()
