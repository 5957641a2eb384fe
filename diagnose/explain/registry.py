"""The attribution methods by name: one adapter each, all returning the same result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from diagnose.explain.context import ExplainContext


@dataclass
class References:
    """What attributions are measured against: one baseline row, and a background sample."""

    baseline: torch.Tensor    # (1, *features)
    background: torch.Tensor  # (B, *features)


@dataclass
class AdapterResult:
    values: torch.Tensor                 # shaped like the inputs
    base: torch.Tensor                   # (n,) reference output of each row's target
    extras: dict[str, Any] = field(default_factory=dict)


Adapter = Callable[[ExplainContext, torch.Tensor, torch.Tensor, References], AdapterResult]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its adapter and what the callers need to know about it."""

    name: str
    adapter: Adapter
    library: Literal["captum", "shap", "diagnose"]
    additive: bool            # attributions add up to f(x) - base: completeness is measured
    gradients: bool           # needs a differentiable torch model
    reference: Literal["baseline", "background"]
    summary: str
    images_only: bool = False
    chunked: bool = True      # False: the adapter gets every row and bounds its own memory
    costly: bool = False      # model-agnostic sampling: the quality re-runs are skipped by default


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add an attribution method (tests parametrize over the registry)."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def list_methods() -> list[str]:
    """The registered method names."""
    return list(METHODS)


def resolve_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"method: unknown name {name!r}; expected one of {list_methods()}")
    return METHODS[name]


def captum_forward(ctx: ExplainContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """Captum's forward function: the (n, n_outputs) explained outputs."""
    return ctx.outputs


def reference_outputs(ctx: ExplainContext, refs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean explained output over ``refs`` for each row's target, (n,)."""
    mean = ctx.no_grad_outputs(refs).mean(dim=0)
    return mean[targets]
