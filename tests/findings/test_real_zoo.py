"""Findings on the architectures people train today (transformers configs at tiny sizes): healthy
runs raise no warning, planted pathologies are found with the right layer."""

import pytest

import diagnose as dg
from diagnose.findings import evaluate

from .real_zoo import HEALTHY, PATHOLOGIES, resnet, train


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_architecture_raises_no_warning(tmp_path, name):
    found = dg.findings(train(HEALTHY[name](), tmp_path / "run"))
    assert [(f.kind, f.layer, f.message) for f in found if f.severity != "info"] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PATHOLOGIES))
def test_planted_pathology_is_found(tmp_path, name):
    build, kind, layer, kwargs = PATHOLOGIES[name]
    built = build()
    layer = layer(built[0]) if callable(layer) else layer  # found in the model: names vary by version
    found = dg.findings(train(built, tmp_path / "run", **kwargs))
    matches = [f for f in found if f.kind == kind]
    assert matches, f"{kind} not found; found {[(f.kind, f.layer) for f in found]}"
    assert matches[0].layer == layer and matches[0].severity in ("warning", "critical")


def test_a_short_run_at_the_default_cadence_is_not_judged(tmp_path):
    # 12 steps at every=50 sample step 0 only: a fresh model's first step says nothing
    run = dg.load_run(train(resnet("adamw"), tmp_path / "run", steps=12, every=50))
    outcomes = {o.name: o for o in evaluate(run).outcomes}
    assert all(f.severity == "info" for f in run.findings())
    for rule in ("vanishing_gradient", "exploding_gradient", "dead_units"):
        assert "not enough steps" in outcomes[rule].skipped
