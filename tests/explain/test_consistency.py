"""dg.explanation_consistency (issue 14, point 5): rank and sign agreement of explanations across
retrained models, checked on closed forms (linear models) and on k-fold models of generated data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import diagnose as dg


def linear(weights: list[float]) -> nn.Module:
    model = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]))
    return model


X = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))


def test_closed_forms_of_linear_models():
    """IG from zeros on a linear model is w*x: flipping w flips every sign (sign agreement 0) and
    keeps the ranking (Spearman 1); a permuted w has the ranking of its |w| (exact Spearman)."""
    w = [3.0, -2.0, 1.0, 0.5]
    result = dg.explanation_consistency({"a": linear(w), "flipped": linear([-v for v in w]),
                                         "permuted": linear([0.5, 1.0, -2.0, 3.0])}, X)
    assert result.rank_agreement.loc["a", "flipped"] == pytest.approx(1.0)
    assert result.rank_agreement.loc["a", "permuted"] == pytest.approx(-1.0)  # the order reversed exactly
    assert list(result.rank_agreement.index) == ["a", "flipped", "permuted"]
    same = dg.explanation_consistency([linear(w), linear(w)], X)
    np.testing.assert_allclose(same.sign_agreement["sign_agreement"], 1.0)
    assert same.summary()["consistent"]
    flipped = dg.explanation_consistency([linear(w), linear([-v for v in w])], X)
    assert (flipped.sign_agreement["sign_agreement"] == 0).all() and len(flipped.sign_agreement) == 300
    s = flipped.summary()
    assert not s["consistent"] and "direction of the effects depends" in s["text"] and s["rank_agreement_mean"] == 1.0
    assert s["least_stable_features"] == ["x0", "x1", "x2"]  # every sign flips; ties keep the feature order
    assert same.summary()["least_stable_features"] == []


def test_rank_agreement_is_decided_by_the_features_the_models_use():
    """Same order of the two features that matter, reversed order of six negligible ones: the
    importance-weighted agreement stays near 1, plain Spearman falls (closed form of |w| E|x|)."""
    x = torch.randn(2000, 8, generator=torch.Generator().manual_seed(1)).sign()  # |x| = 1: importance = |w|
    tiny = [1e-4 * k for k in range(1, 7)]
    a, b = linear([5.0, 3.0, *tiny]), linear([5.0, 3.0, *tiny[::-1]])
    result = dg.explanation_consistency([a, b], x)
    assert result.rank_agreement.loc["model0", "model1"] > 0.99
    ranks_a, ranks_b = np.array([1, 2, 8, 7, 6, 5, 4, 3]), np.array([1, 2, 3, 4, 5, 6, 7, 8])
    assert result.spearman.loc["model0", "model1"] == pytest.approx(np.corrcoef(ranks_a, ranks_b)[0, 1])
    assert result.spearman.loc["model0", "model1"] < 0.2


def test_sign_agreement_weights_features_by_their_attribution():
    """Two models agreeing on a strong feature and disagreeing on a negligible one: agreement is
    the strong feature's share of the attribution mass, not one half."""
    a, b = linear([1.0, 1e-3, 0.0, 0.0]), linear([1.0, -1e-3, 0.0, 0.0])
    result = dg.explanation_consistency([a, b], X)
    x = X.numpy()
    expected = np.abs(x[:, 0]) / (np.abs(x[:, 0]) + 1e-3 * np.abs(x[:, 1]))
    np.testing.assert_allclose(result.sign_agreement["sign_agreement"], expected, rtol=1e-4)


def test_k_fold_models_on_generated_data_agree_and_an_untrained_one_does_not():
    data = dg.datasets.cart_abandonment(n=1500)
    cv = dg.cross_validate(lambda: dg.mlp(data.n_features, [32], 2), (data.X_train, data.y_train), k=3, epochs=8,
                           optimizer="adam", lr=1e-2, batch_size=64, keep_models=True, progress=False)
    assert len(cv.models) == 3
    result = dg.explanation_consistency(cv, data.X_val[:200], feature_names=data.feature_names)
    s = result.summary()
    assert s["consistent"] and s["rank_agreement_min"] > 0.6 and s["sign_agreement_mean"] > 0.9, s
    top = [set(e.global_importance().head(5)["feature"]) for e in result.explanations.values()]
    assert top[0] == top[1] == top[2] == set(data.informative)
    torch.manual_seed(1)
    mixed = dg.explanation_consistency({"fold0": cv.models[0], "untrained": dg.mlp(data.n_features, [32], 2)},
                                       data.X_val[:200], feature_names=data.feature_names)
    assert mixed.rank_agreement.loc["fold0", "untrained"] < s["rank_agreement_min"]
    assert mixed.summary()["sign_agreement_mean"] < s["sign_agreement_mean"]


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="models: consistency needs at least two models, got 1"):
        dg.explanation_consistency([linear([1.0] * 4)], X)
    with pytest.raises(TypeError, match="models: model1 is not an nn.Module"):
        dg.explanation_consistency([linear([1.0] * 4), "nope"], X)
    with pytest.raises(ValueError, match="target: 'predicted'"):
        dg.explanation_consistency([linear([1.0] * 4)] * 2, X, target="predicted")
    with pytest.raises(ValueError, match="models: model1 explains outputs shaped"):
        dg.explanation_consistency([nn.Linear(4, 2), nn.Linear(4, 3)], X)
    cv = dg.cross_validate(lambda: nn.Linear(4, 2), (X, (X[:, 0] > 0).long()), k=2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="keep_models=True"):
        dg.explanation_consistency(cv, X)
