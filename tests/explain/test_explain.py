"""dg.explain on real models: known informative features, images, eval mode, devices, the API,
quality checks, and bad input."""

import numpy as np
import pandas as pd
import pytest
import shap
import torch
from torch import nn

import diagnose as dg
from diagnose.explain.registry import METHODS

GRADIENT_METHODS = [m for m, s in METHODS.items() if s.gradients and not s.images_only]


@pytest.fixture(scope="module")
def cart():
    """A trained model on the generated cart-abandonment data (ground truth: data.informative)."""
    data = dg.datasets.cart_abandonment(n=3000)
    torch.manual_seed(0)
    model = dg.mlp(data.n_features, [32, 16], 2, batch_norm=True, dropout=0.1)
    dg.Trainer(model, "adam", lr=1e-2, seed=0, progress=False).fit(data.train, epochs=15, batch_size=64)
    return model, data


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_rank_the_informative_features_on_top(cart, method):
    model, data = cart
    exp = dg.explain(model, data.X_val[:200], method, background=data.X_train[:100],
                     feature_names=data.feature_names, target=1, checks="none")
    top = set(exp.global_importance().head(len(data.informative))["feature"])
    assert top == set(data.informative), exp.global_importance()


def test_signed_attributions_follow_the_true_effects(cart):
    model, data = cart
    exp = dg.explain(model, data.X_val[:300], "shap_deep", background=data.X_train[:100],
                     feature_names=data.feature_names, target=1, checks="none")
    X = data.X_val[:300].numpy()
    for name, sign in data.informative.items():
        j = data.feature_names.index(name)
        # higher feature value -> attribution toward "abandoned" with the true sign
        corr = np.corrcoef(X[:, j], exp.values[:, j])[0, 1]
        assert np.sign(corr) == sign, (name, corr)


def test_model_mode_inputs_and_flags_come_back_unchanged(cart):
    model, data = cart
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    X = data.X_val[:20].clone()
    before = X.clone()
    rng = torch.get_rng_state()
    for method in ("integrated_gradients", "shap_deep", "gradient_shap"):
        dg.explain(model, X, method)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert not X.requires_grad and torch.equal(X, before)
        assert torch.equal(torch.get_rng_state(), rng)
    model.eval()
    with pytest.raises(ValueError):
        dg.explain(model, X, "integrated_gradients", target=9)
    assert not model.training and not X.requires_grad


def test_batchnorm_and_dropout_are_explained_in_eval_mode(cart):
    model, data = cart
    model.train()
    a = dg.explain(model, data.X_val[:30], "integrated_gradients", checks="none")
    b = dg.explain(model, data.X_val[:30], "integrated_gradients", checks="none")
    np.testing.assert_array_equal(a.values, b.values)  # no dropout noise: eval mode inside
    model.eval()
    with torch.no_grad():
        expected = model(data.X_val[:30]).gather(1, torch.as_tensor(a.targets)[:, None])[:, 0]
    np.testing.assert_allclose(a.outputs, expected.numpy(), rtol=1e-5)


def test_the_explanation_api(cart):
    model, data = cart
    exp = dg.explain(model, data.X_val[:50], "integrated_gradients", feature_names=data.feature_names,
                     class_names=data.class_names)
    g = exp.global_importance()
    assert list(g.columns) == ["feature", "mean_abs", "std_abs", "mean", "rank"] and g["rank"].tolist()[0] == 1
    assert set(exp.global_importance(by_class=True)["class"]) <= {"completed", "abandoned"}
    loc = exp.local(3)
    assert loc.contributions["attribution"].abs().is_monotonic_decreasing
    assert loc.output == pytest.approx(loc.base_value + loc.contributions["attribution"].sum(), abs=1e-2)
    assert loc.probabilities.sum() == pytest.approx(1.0, abs=1e-6) and loc.prediction in (0, 1)
    assert isinstance(exp.to_shap(), shap.Explanation) and exp.to_shap().values.shape == (50, 10)
    frame = exp.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == data.feature_names
    assert "Trust:" in exp.quality["trust"] and "infidelity" in exp.quality and "sensitivity" in exp.quality
    one = dg.explain_prediction(model, data.X_val[7], feature_names=data.feature_names)
    np.testing.assert_allclose(one.contributions.set_index("feature").loc[data.feature_names, "attribution"],
                               dg.explain(model, data.X_val[7:8], feature_names=data.feature_names,
                                          target="predicted").values[0],
                               rtol=1e-5, atol=1e-6)


def test_target_predicted_explains_each_rows_class_and_probability_output(cart):
    model, data = cart
    exp = dg.explain(model, data.X_val[:40], "integrated_gradients", output="probability", checks="none",
                     target="predicted")
    np.testing.assert_array_equal(exp.targets, exp.predictions)
    assert ((exp.outputs >= 0.5 - 1e-6) & (exp.outputs <= 1)).all()  # the predicted class's probability
    assert exp.quality["completeness"]["max_abs_gap"] < 1e-2 and exp.explained == "each row's predicted class"


def test_compare_methods_reports_rank_agreement(cart):
    model, data = cart
    cmp = dg.compare_methods(model, data.X_val[:100], ["integrated_gradients", "shap_deep", "gradient_shap"],
                             background=data.X_train[:50], feature_names=data.feature_names, target=1, checks="none")
    assert list(cmp.agreement.columns) == ["method_a", "method_b", "spearman", "kendall", "weighted_spearman"]
    assert len(cmp.agreement) == 3
    assert (cmp.agreement["spearman"] > 0.8).all()
    assert list(cmp.importance.columns) == ["feature", "integrated_gradients", "shap_deep", "gradient_shap"]


def test_randomization_sanity_check_passes_for_a_trained_model(cart):
    model, data = cart
    exp = dg.explain(model, data.X_val[:40], "integrated_gradients")
    rnd = exp.quality["randomization"]
    assert rnd["passed"] is True and rnd["mean_rank_correlation"] < 0.5


# -- images -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_cnn():
    data = dg.datasets.digits(images=True)
    torch.manual_seed(0)
    model = dg.cnn(1, 8, 10, channels=(8, 16), batch_norm=True)
    dg.Trainer(model, "adam", lr=1e-2, seed=0, progress=False).fit(data.train, epochs=4, batch_size=64)
    return model, data


@pytest.mark.parametrize("method", ["grad_cam", "integrated_gradients", "occlusion", "saliency"])
def test_image_maps_are_8x8(digits_cnn, method):
    model, data = digits_cnn
    exp = dg.explain(model, data.X_val[:6], method, checks="none")  # ten classes: every class by default
    assert exp.values.shape == (60, 1, 8, 8) and np.isfinite(exp.values).all() and exp.n_rows == 6
    assert exp.local(0).attribution_map.shape == (1, 8, 8)
    if method == "grad_cam":
        assert (exp.values >= 0).all() and exp.values.max() > 0
    if method == "integrated_gradients":
        assert exp.quality["completeness"]["max_relative_gap"] < 5e-2  # max pooling kinks: relative


def test_grad_cam_needs_a_convolution():
    with pytest.raises(ValueError, match="grad_cam"):
        dg.explain(dg.mlp(4, [8], 2), torch.randn(3, 4), "grad_cam")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_model_on_another_device():
    torch.manual_seed(0)
    model = dg.mlp(6, [16], 3).cuda()
    X = torch.randn(20, 6)
    for method in ("integrated_gradients", "shap_deep", "shap_kernel"):
        exp = dg.explain(model, X, method, checks="none")
        assert exp.values.shape == (20, 6)
        assert next(model.parameters()).device.type == "cuda"


# -- model-agnostic and bad input -------------------------------------------------------------
def test_a_plain_callable_with_model_agnostic_methods():
    w = np.array([1.0, -2.0, 0.5])

    def predict(rows):
        return rows @ w
    exp = dg.explain(predict, np.random.default_rng(0).normal(size=(5, 3)), "shap_kernel",
                     background=np.zeros((1, 3)), checks="none")
    np.testing.assert_allclose(exp.values, exp.data * w, atol=1e-6)
    with pytest.raises(TypeError, match="shap_kernel"):
        dg.explain(predict, np.zeros((2, 3)), "integrated_gradients")


class NotDifferentiable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(x)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"X": torch.randn(4, 5)}, ValueError, r"X: the model rejected inputs shaped \(5,\); its first layer expects 3"),
    ({"feature_names": ["a", "b"]}, ValueError, "feature_names: got 2 names for 3 features"),
    ({"target": 2}, ValueError, r"target: class indices must be in \[0, 1\]"),
    ({"target": [0, 1]}, ValueError, "target: expected None, 'predicted', 'all', an int, or 4"),
    ({"target": "predict"}, ValueError, "target: expected None, 'predicted', 'all'"),
    ({"background": torch.randn(10, 4)}, ValueError, r"background: expected rows shaped \(3,\)"),
    ({"method": "lime"}, ValueError, "method: unknown name 'lime'"),
    ({"output": "odds"}, ValueError, "output"),
])
def test_bad_input(kwargs, error, match):
    args = {"model": nn.Linear(3, 2), "X": torch.randn(4, 3), "method": "integrated_gradients", **kwargs}
    with pytest.raises(error, match=match):
        dg.explain(args.pop("model"), args.pop("X"), args.pop("method"), **args)


def test_a_non_differentiable_model_with_a_gradient_method_suggests_alternatives():
    with pytest.raises(TypeError, match="shap_kernel or shap_permutation"):
        dg.explain(NotDifferentiable(), torch.randn(4, 3), "saliency")
    exp = dg.explain(NotDifferentiable(), torch.randn(4, 3), "shap_kernel", checks="none")
    assert exp.values.shape == (4, 3)
