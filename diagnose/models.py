"""Model builders for the examples and tests: an MLP and a small CNN, with readable layer names.

Layer names (``fc1``, ``act1``, ``bn1``, ``drop1``, ..., ``out``) are what the diagnostics and the
report show, so they are chosen to be read. Activations are separate modules, never in-place, so
every layer's output can be observed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from diagnose import validate

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


def _remember(model: nn.Module, spec: dict | None) -> None:
    """Keep how to rebuild ``model`` on it (a plain attribute: nn.Module types its attributes as
    tensors or modules, so it is set through ``__dict__``)."""
    model.__dict__["diagnose_spec"] = spec


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
    validate.positive_int("in_features", in_features)
    validate.positive_int("out_features", out_features)
    for i, h in enumerate(hidden):
        validate.positive_int(f"hidden[{i}]", h)
    validate.fraction("dropout", dropout, closed=True)
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
    spec = {"name": "mlp", "kwargs": {
        "in_features": in_features, "hidden": list(hidden), "out_features": out_features,
        "activation": activation if isinstance(activation, str) else None, "batch_norm": batch_norm,
        "dropout": dropout}} if isinstance(activation, str) else None
    _remember(model, spec)
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
    validate.positive_int("in_channels", in_channels)
    validate.positive_int("num_classes", num_classes)
    validate.positive_int("hidden", hidden)
    validate.fraction("dropout", dropout, closed=True)
    if not channels:
        raise ValueError("channels: expected at least one convolution width")
    if image_size % (2 ** len(channels)) != 0:
        raise ValueError(f"image_size: {image_size} is not divisible by 2**{len(channels)} "
                         f"(one 2x2 pooling per entry of channels={list(channels)})")
    act = _activation(activation)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width, size = in_channels, image_size
    for i, c in enumerate(channels, start=1):
        validate.positive_int(f"channels[{i - 1}]", c)
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
    spec = {"name": "cnn", "kwargs": {
        "in_channels": in_channels, "image_size": image_size, "num_classes": num_classes, "channels": list(channels),
        "hidden": hidden, "activation": activation, "batch_norm": batch_norm,
        "dropout": dropout}} if isinstance(activation, str) else None
    _remember(model, spec)
    return model
