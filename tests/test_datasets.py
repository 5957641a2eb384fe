"""Bundled data: shapes, splits, and the cart-abandonment ground truth."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import diagnose as dg
from diagnose.datasets import CART_EFFECTS, CART_NOISE, cart_abandonment_frame


def test_digits_flat_and_images():
    flat = dg.datasets.digits()
    assert flat.X_train.shape[1] == 64 and len(flat.X_train) + len(flat.X_val) == 1797
    assert flat.X_train.dtype == torch.float32 and flat.y_train.dtype == torch.long
    assert 0.0 <= flat.X_train.min() and flat.X_train.max() <= 1.0
    assert flat.n_classes == 10 and flat.n_features == 64
    img = dg.datasets.digits(images=True)
    assert img.X_train.shape[1:] == (1, 8, 8)
    torch.testing.assert_close(img.X_train.reshape(-1, 64), flat.X_train)


def test_splits_are_stratified_and_disjoint():
    d = dg.datasets.breast_cancer(val_size=0.25, seed=3)
    p_train, p_val = d.y_train.float().mean().item(), d.y_val.float().mean().item()
    assert abs(p_train - p_val) < 0.02
    assert len(d.X_val) == pytest.approx(0.25 * 569, abs=1)
    # standardized with the training part's statistics only
    assert d.X_train.mean(0).abs().max() < 1e-5 and d.X_val.mean(0).abs().max() > 1e-3
    assert d.feature_names[0] == "mean radius" and d.class_names == ["malignant", "benign"]


def test_cart_abandonment_is_deterministic_and_named():
    a, b = cart_abandonment_frame(500, seed=1), cart_abandonment_frame(500, seed=1)
    assert a.equals(b) and not a.equals(cart_abandonment_frame(500, seed=2))
    assert set(CART_EFFECTS) | set(CART_NOISE) | {"abandoned"} == set(a.columns)
    split = dg.datasets.cart_abandonment()
    assert split.informative == {"shipping_cost": 1, "cart_value": 1, "discount_shown": -1,
                                 "returning_customer": -1, "pages_viewed": -1}
    assert 0.3 < split.y_train.float().mean().item() < 0.7


def test_cart_abandonment_ground_truth_is_recoverable():
    """A logistic regression on the data recovers the signs of the informative features, and the
    noise features get coefficients near zero."""
    split = dg.datasets.cart_abandonment(n=20000)
    X = np.vstack([split.X_train.numpy(), split.X_val.numpy()])
    y = np.concatenate([split.y_train.numpy(), split.y_val.numpy()])
    coef = dict(zip(split.feature_names, LogisticRegression(C=1e3, max_iter=1000).fit(X, y).coef_[0]))
    for name, sign in split.informative.items():
        assert np.sign(coef[name]) == sign and abs(coef[name]) > 0.3, name
    for name in CART_NOISE:
        assert abs(coef[name]) < 0.06, name


@pytest.mark.parametrize("call, match", [(lambda: dg.datasets.digits(val_size=1.5), "val_size"),
                                         (lambda: cart_abandonment_frame(n=3), "n"),
                                         (lambda: dg.datasets.breast_cancer(seed="a"), "seed")])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
