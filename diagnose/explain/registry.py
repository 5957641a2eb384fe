"""The attribution methods by name: one adapter each, all returning the same result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from diagnose.explain.context import ExplainContext
from diagnose.registry import Registry


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
    # The modules of a model the method's rules do not cover (it refuses such a model), or None.
    unsupported: Callable[[nn.Module], list[str]] | None = None
    # A result whose completeness check fails is refused instead of returned: the method's rules
    # met an operation they do not see (e.g. F.relu inside forward for DeepLIFT).
    refuses_incomplete: bool = False
    # The keyword settings ``dg.explain(..., **params)`` passes to this method (others are refused).
    settings: tuple[str, ...] = ()
    # Its values are a random estimate (sampled coalitions, baselines or noise): the quality report
    # estimates the sampling error by running it again with another seed on a few rows.
    sampling: bool = False
    # The adapter for token-id inputs (attributions per token through the embedding), or None
    # when the method does not explain token ids.
    tokens: Adapter | None = None

    def adapter_for(self, token_ids: bool) -> Adapter:
        """The adapter for feature/image inputs, or for token ids (checked before: ``tokens`` set)."""
        if token_ids:
            if self.tokens is None:
                raise ValueError(f"method: {self.name} does not explain token ids")
            return self.tokens
        return self.adapter

    def refuses(self, model: nn.Module) -> list[str]:
        """The parts of ``model`` this method refuses ([] when it handles the whole graph)."""
        return self.unsupported(model) if self.unsupported is not None else []


# Filled by importing diagnose.explain.methods (one module per method), on first use: listing or
# resolving a method imports Captum and SHAP, ``import diagnose`` does not.
METHODS: Registry[MethodSpec] = Registry("method", populate="diagnose.explain.methods")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add an attribution method (tests parametrize over ``METHODS``)."""
    return METHODS.add(spec.name, spec)


def list_methods() -> list[str]:
    """The registered method names."""
    return METHODS.names()


def resolve_method(name: str) -> MethodSpec:
    """The spec of a method name (a ValueError lists the valid names)."""
    return METHODS.get(name)


def captum_forward(ctx: ExplainContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """Captum's forward function: the (n, n_outputs) explained outputs."""
    return ctx.outputs


def reference_outputs(ctx: ExplainContext, refs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean explained output over ``refs`` for each row's target, (n,)."""
    mean = ctx.no_grad_outputs(refs).mean(dim=0)
    return mean[targets]
