"""Attributions against ground truth: closed forms on a linear model, exact Shapley values by
enumeration, completeness, and the reference implementations (shap, Captum)."""

import itertools
import math
import warnings

import numpy as np
import pytest
import shap
import torch
from torch import nn

import diagnose as dg
from diagnose.explain.registry import resolve_method


def settings(method, **candidates):
    """The candidate settings ``method`` takes (an unknown setting is a TypeError)."""
    return {k: v for k, v in candidates.items() if k in resolve_method(method).settings}

ADDITIVE_WITH_BASELINE = ["integrated_gradients", "deeplift", "gradient_shap", "input_x_gradient", "occlusion",
                          "feature_ablation", "shap_deep", "shap_gradient", "shap_kernel", "shap_permutation"]


def linear_model(n_in=6, n_out=3, seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(n_in, n_out)
    return model


@pytest.mark.parametrize("method", ADDITIVE_WITH_BASELINE)
def test_linear_model_gives_w_times_x_minus_baseline(method):
    model = linear_model()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(12, 6, generator=g)
    b = torch.randn(1, 6, generator=g)
    baseline = torch.zeros(1, 6) if method == "input_x_gradient" else b  # input x gradient: zero reference
    exp = dg.explain(model, X, method, baseline=baseline, background=baseline, target=1, checks="none",
                     **settings(method, nsamples=200, max_evals=200))
    expected = (model.weight[1].detach() * (X - baseline)).numpy()
    np.testing.assert_allclose(exp.values, expected, atol=1e-4, rtol=1e-4)
    # the base value is the model's output at the reference
    np.testing.assert_allclose(exp.base_values, model(baseline)[0, 1].item(), atol=1e-5)


def test_saliency_on_a_linear_model_is_the_absolute_weight():
    model = linear_model()
    exp = dg.explain(model, torch.randn(4, 6), "saliency", target=2, checks="none")
    np.testing.assert_allclose(exp.values, np.abs(model.weight[2].detach().numpy())[None].repeat(4, 0), atol=1e-6)


def exact_shapley(f, x, background):
    """Shapley values of v(S) = mean_b f(x_S, b_notS), by enumerating every coalition."""
    n = len(x)
    phi = np.zeros(n)

    def value(subset):
        rows = background.copy()
        rows[:, list(subset)] = x[list(subset)]
        return f(rows).mean()
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            for subset in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                phi[i] += weight * (value(subset + (i,)) - value(subset))
    return phi


@pytest.mark.parametrize("method", ["shap_kernel", "shap_permutation"])
def test_model_agnostic_shap_matches_exact_shapley_values(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(2)
    X, background = torch.randn(3, 6, generator=g), torch.randn(8, 6, generator=g)

    def f(rows):
        with torch.no_grad():
            return model(torch.as_tensor(rows, dtype=torch.float32))[:, 0].double().numpy()
    exp = dg.explain(model, X, method, background=background, checks="none",
                     **settings(method, nsamples=2 ** 6 + 100, max_evals=2000))
    for i in range(len(X)):
        truth = exact_shapley(f, X[i].double().numpy(), background.double().numpy())
        assert np.abs(exp.values[i] - truth).max() <= 0.05 * np.abs(truth).max()


def test_integrated_gradients_completeness_with_default_steps():
    torch.manual_seed(0)
    model = dg.mlp(8, [32, 32], 3)
    exp = dg.explain(model, torch.randn(50, 8), "integrated_gradients", checks="none")
    assert exp.quality["completeness"]["max_abs_gap"] < 1e-2
    assert exp.quality["completeness"]["passed"] and exp.quality["completeness"]["n_steps_max"] <= 200


def test_shap_deep_equals_shap_deepexplainer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    g = torch.Generator().manual_seed(3)
    X, background = torch.randn(40, 10, generator=g), torch.randn(25, 10, generator=g)
    ours = dg.explain(model, X, "shap_deep", background=background, target=2, checks="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = np.asarray(shap.DeepExplainer(model, background).shap_values(X, check_additivity=False))[..., 2]
    assert np.abs(ours.values - reference).max() <= 1e-4 * np.abs(reference).max()
    assert ours.quality["additivity"]["max_abs_gap"] < 1e-4


def test_deeplift_equals_captums_and_handles_a_reused_activation():
    from captum.attr import DeepLift

    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out, self.relu = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 2), nn.ReLU()

        def forward(self, x):
            return self.out(self.relu(self.b(self.relu(self.a(x)))))

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    X, b = torch.randn(20, 5), torch.randn(1, 5)
    ours = dg.explain(plain, X, "deeplift", baseline=b, target=0, checks="none")
    captum = DeepLift(plain).attribute(X.clone(), baselines=b, target=0).detach().numpy()
    np.testing.assert_allclose(ours.values, captum, atol=1e-5, rtol=1e-4)
    # one ReLU module used twice: each use gets its own reference, and the result stays complete
    reuse = Reuse().eval()
    exp = dg.explain(reuse, X, "deeplift", baseline=b, target=0, checks="none")
    assert exp.quality["completeness"]["max_abs_gap"] < 1e-4


def test_deeplift_refuses_a_functional_activation_it_cannot_see():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(5, 16), nn.Linear(16, 1)

        def forward(self, x):
            return self.out(torch.relu(self.a(x)) ** 2)

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="integrated_gradients"):
        dg.explain(Functional(), torch.randn(30, 5), "shap_deep", checks="none")
    with pytest.raises(ValueError, match="integrated_gradients"):
        dg.explain(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1)), torch.randn(5, 4), "deeplift")


# -- max pooling and softmax in the DeepLIFT engine (issue 14, point 4) ------------------------
def pool_cnn(kernel: int, stride: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(kernel, stride), nn.Flatten(),
                          nn.Linear(4 * ((8 - kernel) // stride + 1) ** 2, 3))
    return model.eval()


def test_max_pooling_follows_shaps_rule_and_stays_complete_where_windows_overlap():
    g = torch.Generator().manual_seed(0)
    x, background = torch.randn(20, 1, 8, 8, generator=g), torch.randn(10, 1, 8, 8, generator=g)
    model = pool_cnn(2, 2)  # non-overlapping windows: shap.DeepExplainer's rule, the same values
    ours = dg.explain(model, x, "shap_deep", background=background, target=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(shap.DeepExplainer(model, background).shap_values(x, check_additivity=False))[..., 2]
    np.testing.assert_allclose(ours.values, theirs, atol=1e-6)
    assert ours.quality["additivity"]["max_relative_gap"] < 1e-5
    overlapping = pool_cnn(3, 1)  # shap's unpooling overwrites shared arg-maxes: 73 % of the output lost
    exp = dg.explain(overlapping, x, "shap_deep", background=background, target=1, checks="none")
    assert exp.quality["additivity"]["max_relative_gap"] < 1e-5
    one = dg.explain(overlapping, x, "deeplift", target=1, checks="none")
    assert one.quality["completeness"]["max_relative_gap"] < 1e-5
    adaptive = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert dg.explain(adaptive.eval(), x, "deeplift", target=1, checks="none").quality["completeness"]["passed"]


def test_softmax_credits_every_logit_it_reads():
    """Softmax after a linear layer: the average Jacobian over the segment makes DeepLIFT equal
    to Integrated Gradients there (closed form of the path). Feature 1 moves only logit 0, so it
    changes p2 through the normalisation: it must be credited (shap's elementwise secant gives it 0)."""
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.5, 0.0, 0.0]]))
    for head, target in ((nn.Softmax(dim=1), 2), (nn.LogSoftmax(dim=1), 2)):
        model = nn.Sequential(layer, head).eval()
        x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1)) * 2
        ours = dg.explain(model, x, "deeplift", target=target, checks="none")
        ig = dg.explain(model, x, "integrated_gradients", target=target, n_steps=400, checks="none")
        np.testing.assert_allclose(ours.values, ig.values, atol=2e-5)
        assert ours.quality["completeness"]["max_relative_gap"] < 1e-5
        assert np.abs(ours.values[:, 1]).mean() > 0.05  # feature 1 reaches p2 only through the softmax
    inner = nn.Sequential(nn.Linear(5, 8), nn.Softmax(dim=1), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    exp = dg.explain(inner, torch.randn(30, 5) * 2, "shap_deep", target=1, checks="none")
    assert exp.quality["additivity"]["max_relative_gap"] < 1e-5
