"""The pathology zoo: each pathology is found (kind and layer); healthy models raise nothing."""

import pytest

import diagnose as dg

from .zoo import HEALTHY, PATHOLOGIES


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(PATHOLOGIES))
def test_pathology_is_found(tmp_path, kind):
    build, layer = PATHOLOGIES[kind]
    found = dg.load_run(build(tmp_path / "run")).findings()
    matches = [f for f in found if f.kind == kind]
    assert matches, f"{kind} not found; found {[(f.kind, f.layer) for f in found]}"
    f = matches[0]
    assert f.severity in ("warning", "critical")
    assert f.layer == layer
    assert f.message and f.remedy and f.evidence and f.steps is not None
    if kind in ("vanishing_gradient", "exploding_gradient", "dead_units", "saturation"):
        # per-layer findings say how many sampled steps they rest on
        assert f.evidence["supporting_steps"] >= 0.8 * f.evidence["judged_steps"] >= 4
        assert f.support == f"{f.evidence['supporting_steps']} of {f.evidence['judged_steps']} sampled steps"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_model_raises_no_warning(tmp_path, name):
    found = dg.findings(HEALTHY[name](tmp_path / "run"))
    assert [(f.kind, f.layer, f.message) for f in found if f.severity != "info"] == []
