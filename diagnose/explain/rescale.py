"""DeepLIFT's Rescale rule with many references, computed in large batched passes.

DeepLIFT (Shrikumar et al., 2017) attributes f(x) - f(r) to the inputs by replacing, in the
backward pass, the derivative of each elementwise nonlinearity g by the secant
(g(z_x) - g(z_r)) / (z_x - z_r) between the input's and the reference's pre-activations; linear
layers keep their weights. Averaged over a background of references this is SHAP's
DeepExplainer (Lundberg & Lee, 2017).

shap.DeepExplainer runs one small pass per explained row, and Captum's DeepLift, though
batched, re-runs the references for every pair and pays heavy hook machinery. Here:

- the references' pre-activations are computed once per call and re-used for every row;
- rows x references are laid out in one large batch per pass (bounded by ``pair_batch``);
- the secant is applied by a small autograd Function inserted by forward hooks, so the backward
  pass is plain autograd.

Hooks are per call, so a module used twice in one forward pass (a reused ReLU) gets the right
reference for each use: the graphs shap and Captum mishandle (shap 3363, captum 578). An in-place
activation gets a copy of its input to overwrite, so its pre-activation stays intact.

Beyond elementwise nonlinearities:

- max pooling (shap's rule): each window's output difference y - r goes to the input's arg-max
  when y >= r, else to the reference's, divided by the input difference there; windows that
  overlap add up (shap's unpooling overwrites, and loses completeness there);
- softmax and log-softmax: the multiplier is the Jacobian averaged over the segment from the
  reference's to the input's pre-activation (Gauss-Legendre, 64 nodes), the secant of a vector
  function: exact completeness, where shap's elementwise secant on softmax is not complete. With
  a linear layer before it this is Integrated Gradients there.

A model with other nonlinear modules (attention, normalization over features) is refused, and
every result's completeness gap is measured by the caller.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

# Elementwise nonlinearities the Rescale rule applies to.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
)
# Modules that are linear (affine) at inference, through which plain gradients are DeepLIFT's.
LINEAR: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten,
    nn.Identity, nn.modules.dropout._DropoutNd, nn.Embedding, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
)
MAX_POOLING: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
SOFTMAX: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax)
# The modules whose backward pass the engine replaces (each call recorded on the references).
RULES = ELEMENTWISE + MAX_POOLING + SOFTMAX
# Small |z_x - z_r|: the secant is ill-conditioned, use the derivative (as shap and Captum do).
EPS = 1e-7
# Gauss-Legendre nodes and weights on [0, 1] for the softmax's average Jacobian.
_NODES = (np.polynomial.legendre.leggauss(64)[0] + 1) / 2
_WEIGHTS = np.polynomial.legendre.leggauss(64)[1] / 2


def unsupported_modules(model: nn.Module) -> list[str]:
    """Leaf modules the Rescale engine cannot treat exactly (named, for the error message)."""
    bad = []
    for name, module in model.named_modules():
        if next(iter(module.children()), None) is not None:
            continue
        if not isinstance(module, RULES + LINEAR) or (isinstance(module, MAX_POOLING) and module.return_indices):
            bad.append(f"{name or '(model)'} ({type(module).__name__})")
    return bad


class _Secant(torch.autograd.Function):
    """Forward: the nonlinearity's output. Backward: the upstream gradient times the secant
    between input and reference (the derivative where they nearly coincide)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, out: torch.Tensor, z_ref: torch.Tensor, out_ref: torch.Tensor,
                derivative: torch.Tensor) -> torch.Tensor:
        dz = z - z_ref
        close = dz.abs() < EPS
        ctx.save_for_backward(torch.where(close, derivative, (out - out_ref) / torch.where(close, 1.0, dz)))
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None, None


class _MaxPoolRule(torch.autograd.Function):
    """Forward: the pooled output. Backward: each window's share of y - r, routed to the input's
    arg-max (y >= r) or the reference's (y < r) and divided by the input difference there."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, out: torch.Tensor, z_ref: torch.Tensor, out_ref: torch.Tensor,
                index: torch.Tensor, index_ref: torch.Tensor) -> torch.Tensor:
        cross = torch.maximum(out, out_ref)
        ctx.save_for_backward(z - z_ref, cross - out_ref, out - cross, index, index_ref)
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        delta, part_x, part_r, index, index_ref = ctx.saved_tensors
        n, c = delta.shape[:2]
        routed = torch.zeros((n, c, delta[0, 0].numel()), dtype=delta.dtype, device=delta.device)
        routed.scatter_add_(2, index.reshape(n, c, -1), (grad * part_x).reshape(n, c, -1))
        routed.scatter_add_(2, index_ref.reshape(n, c, -1), (grad * part_r).reshape(n, c, -1))
        small = delta.abs() < EPS
        g = torch.where(small, 0.0, routed.reshape(delta.shape) / torch.where(small, 1.0, delta))
        return g, None, None, None, None, None


class _SoftmaxRule(torch.autograd.Function):
    """Forward: the (log-)softmax output. Backward: the upstream gradient times the Jacobian
    averaged over the segment from the reference's input to this input."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, out: torch.Tensor, z_ref: torch.Tensor, dim: int,
                log: bool) -> torch.Tensor:
        ctx.save_for_backward(z, z_ref)
        ctx.dim, ctx.log = dim, log
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, z_ref = ctx.saved_tensors
        delta = z - z_ref
        total = torch.zeros_like(grad)
        for t, w in zip(_NODES, _WEIGHTS, strict=True):
            y = torch.softmax(z_ref + float(t) * delta, dim=ctx.dim)
            if ctx.log:
                total += float(w) * (grad - y * grad.sum(dim=ctx.dim, keepdim=True))
            else:
                total += float(w) * (y * (grad - (grad * y).sum(dim=ctx.dim, keepdim=True)))
        return total, None, None, None, None


def _softmax_dim(module: nn.Module, z: torch.Tensor) -> int:
    """The dimension a Softmax module normalises (torch's implicit choice when ``dim`` is None)."""
    dim = getattr(module, "dim", None)
    return int(dim) if dim is not None else (0 if z.ndim in (0, 1, 3) else 1)


def _pool_indices(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The arg-max positions of each pooling window (flat over the spatial dimensions)."""
    pool = copy.copy(module)
    object.__setattr__(pool, "return_indices", True)  # a plain attribute of the pooling modules
    with torch.no_grad():
        return pool.forward(z)[1]


def _derivative(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        z_ = z.detach().requires_grad_(True)
        # forward(): no hooks; on a copy, which an in-place activation may overwrite (not the leaf)
        (g,) = torch.autograd.grad(module.forward(z_.clone()).sum(), z_)
    return g


def _hook_inputs(modules: list[nn.Module], inputs: list[torch.Tensor]) -> list[Any]:
    """Forward pre-hooks that keep each call's input before the module runs: an in-place
    activation (``ReLU(inplace=True)``) gets a copy to overwrite, so the pre-activation it was
    given stays intact, for the secant and for the gradient through it."""
    def keep(module: nn.Module, args: tuple) -> tuple | None:
        inputs.append(args[0])
        return (args[0].clone(), *args[1:]) if getattr(module, "inplace", False) else None
    return [m.register_forward_pre_hook(keep) for m in modules]


class RescaleEngine:
    """Computes DeepLIFT-Rescale attributions of ``forward`` (model outputs -> one scalar per row)
    for rows against a set of references; see the module docstring."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 pair_batch: int = 65536) -> None:
        # the methods on this engine declare unsupported_modules in their registry entry: the
        # caller refuses such models before an engine is built
        self.model, self.forward = model, forward
        self.pair_batch = pair_batch
        self.nonlinear = [m for m in model.modules() if isinstance(m, RULES)]

    def _record_references(self, refs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each nonlinearity call's (input, output) on the references, in call order."""
        calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        inputs: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            calls.append((inputs.pop().detach(), out.detach()))
        handles = _hook_inputs(self.nonlinear, inputs) + [m.register_forward_hook(hook) for m in self.nonlinear]
        try:
            with torch.no_grad():
                self.model(refs)
        finally:
            for h in handles:
                h.remove()
        return calls

    def attribute(self, x: torch.Tensor, refs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attributions of each row of ``x`` averaged over ``refs``: shaped like ``x``."""
        n_refs = len(refs)
        ref_calls = self._record_references(refs)
        rows_per_pass = max(1, self.pair_batch // n_refs)
        out = []
        for start in range(0, len(x), rows_per_pass):
            rows = slice(start, start + rows_per_pass)
            out.append(self._chunk(x[rows], refs, targets[rows], ref_calls))
        return torch.cat(out)

    def _chunk(self, x: torch.Tensor, refs: torch.Tensor, targets: torch.Tensor,
               ref_calls: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        n, b = len(x), len(refs)
        pairs_x = x.repeat_interleave(b, dim=0).detach().requires_grad_(True)  # row i, ref j at i*b + j
        pairs_t = targets.repeat_interleave(b, dim=0)
        position = [0]
        inputs: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            z_ref, out_ref = ref_calls[position[0]]
            position[0] += 1
            tile = (n,) + (1,) * (z_ref.ndim - 1)
            z, z_r, o_r = inputs.pop(), z_ref.repeat(tile), out_ref.repeat(tile)
            if isinstance(module, MAX_POOLING):
                return _MaxPoolRule.apply(z, output, z_r, o_r, _pool_indices(module, z), _pool_indices(module, z_r))
            if isinstance(module, SOFTMAX):
                return _SoftmaxRule.apply(z, output, z_r, _softmax_dim(module, z), isinstance(module, nn.LogSoftmax))
            return _Secant.apply(z, output, z_r, o_r, _derivative(module, z))
        handles = _hook_inputs(self.nonlinear, inputs) + [m.register_forward_hook(hook) for m in self.nonlinear]
        try:
            with torch.enable_grad():
                value = self.forward(pairs_x, pairs_t)
                (grad,) = torch.autograd.grad(value.sum(), pairs_x)
        finally:
            for h in handles:
                h.remove()
        if position[0] != len(ref_calls):
            raise RuntimeError("the model called its activations in a different order for the references "
                               "than for the inputs; the DeepLIFT engine needs a fixed graph")
        tile = (n,) + (1,) * (refs.ndim - 1)
        contrib = grad * (pairs_x.detach() - refs.repeat(tile))
        return contrib.reshape(n, b, *x.shape[1:]).mean(dim=1)
