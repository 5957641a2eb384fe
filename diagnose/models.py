"""Model builders for the examples and tests: an MLP and a small CNN, with readable layer names.

Layer names (``fc1``, ``act1``, ``bn1``, ``drop1``, ..., ``out``) are what the diagnostics and the
report show, so they are chosen to be read. Activations are separate modules, never in-place, so
every layer's output can be observed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardtanh": nn.Hardtanh,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


def _activation(activation: str | type[nn.Module] | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: unknown name {activation!r}; expected one of {list(ACTIVATIONS)}")
        return ACTIVATIONS[activation]
    if callable(activation):
        return activation
    raise TypeError(f"activation: expected a name or an nn.Module class, got {activation!r}")


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    return dropout


def mlp(
    in_features: int,
    hidden: Sequence[int] = (64,),
    out_features: int = 1,
    activation: str | type[nn.Module] = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron: ``[Linear -> (BatchNorm) -> activation -> (Dropout)] * len(hidden) -> Linear``.

    The output layer has no activation: it returns logits (or regression outputs).
    """
    _check_positive_int("in_features", in_features)
    _check_positive_int("out_features", out_features)
    for i, h in enumerate(hidden):
        _check_positive_int(f"hidden[{i}]", h)
    _check_dropout(dropout)
    act = _activation(activation)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
        layers[f"act{i}"] = act()
        if dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, out_features)
    model = nn.Sequential(layers)
    # how to rebuild this architecture from a run directory (JSON, never a pickle)
    model.diagnose_spec = {"name": "mlp", "kwargs": {
        "in_features": in_features, "hidden": list(hidden), "out_features": out_features,
        "activation": activation if isinstance(activation, str) else None, "batch_norm": batch_norm,
        "dropout": dropout}} if isinstance(activation, str) else None
    return model


def cnn(
    in_channels: int = 1,
    image_size: int = 8,
    num_classes: int = 10,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
    activation: str | type[nn.Module] = "relu",
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A small CNN for square images (8x8 digits, 28x28 MNIST-like):
    ``[Conv3x3 -> (BatchNorm) -> activation -> MaxPool2] * len(channels) -> Linear -> activation
    -> (Dropout) -> Linear``. Each pooling halves the size, so ``image_size`` must be divisible
    by ``2 ** len(channels)``.
    """
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("hidden", hidden)
    _check_dropout(dropout)
    if not channels:
        raise ValueError("channels: expected at least one convolution width")
    if image_size % (2 ** len(channels)) != 0:
        raise ValueError(f"image_size: {image_size} is not divisible by 2**{len(channels)} "
                         f"(one 2x2 pooling per entry of channels={list(channels)})")
    act = _activation(activation)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width, size = in_channels, image_size
    for i, c in enumerate(channels, start=1):
        _check_positive_int(f"channels[{i - 1}]", c)
        layers[f"conv{i}"] = nn.Conv2d(width, c, kernel_size=3, padding=1)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c)
        layers[f"act{i}"] = act()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        width, size = c, size // 2
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(width * size * size, hidden)
    layers["act_fc"] = act()
    if dropout > 0:
        layers["drop"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(hidden, num_classes)
    model = nn.Sequential(layers)
    model.diagnose_spec = {"name": "cnn", "kwargs": {
        "in_channels": in_channels, "image_size": image_size, "num_classes": num_classes, "channels": list(channels),
        "hidden": hidden, "activation": activation, "batch_norm": batch_norm,
        "dropout": dropout}} if isinstance(activation, str) else None
    return model
