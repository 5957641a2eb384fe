"""Optimizers by their textbook names, as validated factories over torch.optim.

Each name is an entry in a registry of frozen specs: which torch.optim class implements the
update, with which defaults, and how the trainer batches data for it (full batch, one example,
or mini-batches). We wrap torch.optim's fused kernels; we never re-implement an update.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from diagnose import validate
from diagnose.registry import Registry

BatchMode = Literal["full", "single", "mini"]


@dataclass(frozen=True)
class OptimizerSpec:
    """One registered optimizer name: the torch class, its defaults and its batching."""

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: dict[str, Any] = field(default_factory=dict)
    batch_mode: BatchMode = "mini"
    summary: str = ""


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")


def register_optimizer(spec: OptimizerSpec) -> OptimizerSpec:
    """Add a named optimizer (tests parametrize over ``OPTIMIZERS``)."""
    return OPTIMIZERS.add(spec.name, spec)


# Learning-rate defaults: 0.01 for the SGD family (Keras' SGD default), the torch / paper
# defaults for the adaptive methods. RMSProp uses rho = 0.9 as in Hinton's lecture 6e and Keras
# (torch's own default alpha is 0.99).
register_optimizer(OptimizerSpec(
    "gd", torch.optim.SGD, {"lr": 0.01}, "full",
    "batch gradient descent: one step per epoch on the gradient of the whole training set"))
register_optimizer(OptimizerSpec(
    "sgd", torch.optim.SGD, {"lr": 0.01}, "single",
    "stochastic gradient descent: one step per training example"))
register_optimizer(OptimizerSpec(
    "minibatch_sgd", torch.optim.SGD, {"lr": 0.01}, "mini",
    "mini-batch SGD: one step per batch"))
register_optimizer(OptimizerSpec(
    "momentum", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, "mini",
    "SGD with momentum: V = γV + α∇J(θ); θ = θ − V (γ = 0.9)"))
register_optimizer(OptimizerSpec(
    "nag", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}, "mini",
    "Nesterov accelerated gradient: the gradient is taken at the look-ahead point θ − γV"))
register_optimizer(OptimizerSpec(
    "adagrad", torch.optim.Adagrad, {"lr": 0.01, "eps": 1e-10}, "mini",
    "AdaGrad: per-parameter step α/√(Σg²) from the accumulated squared gradients"))
register_optimizer(OptimizerSpec(
    "rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-8}, "mini",
    "RMSProp: step α/√E[g²] with an exponential moving average of squared gradients"))
register_optimizer(OptimizerSpec(
    "adadelta", torch.optim.Adadelta, {"lr": 1.0, "rho": 0.9, "eps": 1e-6}, "mini",
    "Adadelta: step RMS[Δθ]/RMS[g] from two moving averages; no learning rate to tune"))
register_optimizer(OptimizerSpec(
    "adam", torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}, "mini",
    "Adam: bias-corrected first and second moment estimates"))


def list_optimizers() -> list[str]:
    """The registered optimizer names (any torch.optim class name is accepted too)."""
    return OPTIMIZERS.names()


def _torch_optimizer_classes() -> dict[str, type[torch.optim.Optimizer]]:
    return {
        name: obj for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    }


def resolve_optimizer(name: str) -> OptimizerSpec:
    """Spec for a registered name or a torch.optim class name (e.g. ``"AdamW"``).

    Raises:
        ValueError: the name is neither, with the valid names listed.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name or a torch.optim.Optimizer, got {type(name).__name__}")
    if name in OPTIMIZERS:
        return OPTIMIZERS.get(name)
    classes = _torch_optimizer_classes()
    if name in classes:
        return OptimizerSpec(name, classes[name], {}, "mini", f"torch.optim.{name}")
    raise ValueError(
        f"optimizer: unknown name {name!r}; expected one of {list_optimizers()} "
        f"or a torch.optim class name such as {sorted(classes)[:6]}"
    )


def build_optimizer(
    spec: OptimizerSpec,
    params: Iterable[torch.nn.Parameter],
    lr: float | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Instantiate ``spec`` over ``params``; ``lr`` and ``kwargs`` override its defaults."""
    options = dict(spec.defaults)
    if lr is not None:
        options["lr"] = lr
    options.update(kwargs)
    if "lr" in options:
        validate.number("lr", options["lr"], 0)
    accepted = inspect.signature(spec.cls.__init__).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise TypeError(
            f"optimizer_kwargs: {spec.cls.__name__} does not accept {unknown}; "
            f"it takes {[k for k in accepted if k not in ('self', 'params')]}"
        )
    return spec.cls(params, **options)
