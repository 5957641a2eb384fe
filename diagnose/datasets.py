"""Demo data that needs no download: scikit-learn's bundled sets as ready train/val splits, and a
generated "cart abandonment" table whose label depends on a known subset of features with known
signs (the ground truth the explanation tests check against).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from diagnose import validate


@dataclass
class DataSplit:
    """A train/validation split as tensors, with names and (for generated data) the ground truth.

    ``informative`` maps each feature the label truly depends on to the sign of its effect on the
    positive class; features not in it have no effect.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    feature_names: list[str]
    class_names: list[str]
    informative: dict[str, int] = field(default_factory=dict)
    scaler: StandardScaler | None = None

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train

    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_val, self.y_val

    @property
    def n_features(self) -> int:
        return int(self.X_train[0].numel())

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def _check_split_args(val_size: float, seed: int) -> None:
    validate.fraction("val_size", val_size)
    validate.integer("seed", seed)


def _split(name: str, X: np.ndarray, y: np.ndarray, feature_names: list[str], class_names: list[str],
           val_size: float, seed: int, standardize: bool, **extra: object) -> DataSplit:
    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=val_size, random_state=seed, stratify=y)
    scaler = None
    if standardize:  # fitted on the training part only, so no validation information leaks
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_va = scaler.transform(X_tr), scaler.transform(X_va)
    return DataSplit(name, torch.tensor(X_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.long),
                     torch.tensor(X_va, dtype=torch.float32), torch.tensor(y_va, dtype=torch.long),
                     feature_names, class_names, scaler=scaler, **extra)  # type: ignore[arg-type]


def digits(val_size: float = 0.2, seed: int = 0, images: bool = False) -> DataSplit:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1].

    ``images=True`` gives inputs shaped (N, 1, 8, 8) for a CNN; otherwise (N, 64).
    """
    _check_split_args(val_size, seed)
    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    split = _split("digits", X, data.target, names, [str(c) for c in data.target_names], val_size, seed, False)
    if images:
        split.X_train = split.X_train.reshape(-1, 1, 8, 8)
        split.X_val = split.X_val.reshape(-1, 1, 8, 8)
    return split


def breast_cancer(val_size: float = 0.2, seed: int = 0) -> DataSplit:
    """scikit-learn's Wisconsin breast-cancer set (569 rows, 30 features, 2 classes), standardized."""
    _check_split_args(val_size, seed)
    data = load_breast_cancer()
    return _split("breast_cancer", data.data, data.target, list(data.feature_names),
                  list(data.target_names), val_size, seed, True)


# Cart abandonment: the generating model. The log-odds of abandoning are linear in these
# (transformed, population-standardized) features; every other column is independent noise.
CART_EFFECTS: dict[str, float] = {
    "shipping_cost": 1.4,        # higher shipping cost -> more abandonment
    "cart_value": 0.9,           # (log) larger carts -> more abandonment (sticker shock)
    "discount_shown": -1.6,      # a discount shown -> less abandonment
    "returning_customer": -1.2,  # returning customers complete more often
    "pages_viewed": -0.8,        # (log) engaged sessions complete more often
}
CART_NOISE: tuple[str, ...] = ("session_length_min", "num_items", "hour_of_day", "device_mobile",
                               "account_age_days")


def cart_abandonment_frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """The raw generated table: 10 named features and the label ``abandoned`` (1 = abandoned)."""
    validate.integer("n", n, minimum=10)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "session_length_min": rng.lognormal(np.log(8.0), 0.6, n).round(1),
        "pages_viewed": 1 + rng.poisson(6.0, n),
        "cart_value": rng.lognormal(np.log(60.0), 0.7, n).round(2),
        "discount_shown": rng.binomial(1, 0.3, n),
        "returning_customer": rng.binomial(1, 0.4, n),
        "shipping_cost": rng.choice([0.0, 4.99, 9.99, 14.99], n, p=[0.3, 0.3, 0.25, 0.15]),
        "num_items": 1 + rng.poisson(2.0, n),
        "hour_of_day": rng.integers(0, 24, n),
        "device_mobile": rng.binomial(1, 0.55, n),
        "account_age_days": rng.exponential(400.0, n).round(0),
    })
    # Population standardization with the generating distributions' own moments, so each effect
    # size above is "per standard deviation" (binary features: per 0 -> 1 change).
    z = {
        "shipping_cost": (frame["shipping_cost"] - 6.243) / 5.2106,
        "cart_value": (np.log(frame["cart_value"]) - np.log(60.0)) / 0.7,
        "discount_shown": frame["discount_shown"] - 0.3,
        "returning_customer": frame["returning_customer"] - 0.4,
        "pages_viewed": (np.log(frame["pages_viewed"]) - 1.8777) / 0.3862,
    }
    logit = sum(CART_EFFECTS[k] * z[k] for k in CART_EFFECTS)
    frame["abandoned"] = rng.binomial(1, 1.0 / (1.0 + np.exp(-logit)))
    return frame


def cart_abandonment(n: int = 4000, val_size: float = 0.2, seed: int = 0) -> DataSplit:
    """The generated cart-abandonment set, standardized, split into train/val.

    ``split.informative`` holds the ground truth: feature -> sign of its effect on abandoning.
    """
    _check_split_args(val_size, seed)
    frame = cart_abandonment_frame(n, seed)
    names = [c for c in frame.columns if c != "abandoned"]
    informative = {k: int(np.sign(v)) for k, v in CART_EFFECTS.items()}
    return _split("cart_abandonment", frame[names].to_numpy(np.float64), frame["abandoned"].to_numpy(),
                  names, ["completed", "abandoned"], val_size, seed, True, informative=informative)
