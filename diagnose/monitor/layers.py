"""A model's parameters grouped by the module that owns them, with fused per-layer reductions."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

ROOT_NAME = "(model)"  # the layer name of the model itself (its named_modules() name is "")
# torch.nn.utils.parametrize moves a parametrized weight into "<module>.parametrizations.<name>":
# those parameters are the module's (weight_norm's direction and magnitude are one weight).
_PARAMETRIZATIONS = re.compile(r"(^|\.)parametrizations(\..*)?$")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_BLAS = (torch.float32, torch.float64)  # dtypes torch.dot takes to BLAS on the CPU


def layer_name(name: str) -> str:
    """The name a layer is recorded under: its ``named_modules()`` name, or ``(model)`` for the root."""
    return name or ROOT_NAME


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose layers are recorded: a ``torch.compile``d model's original, so layer names
    do not gain an ``_orig_mod.`` prefix."""
    return getattr(model, "_orig_mod", model)


def is_parametrization(name: str) -> bool:
    """Whether a ``named_modules()`` name lies inside a ``parametrizations`` container."""
    return _PARAMETRIZATIONS.search(name) is not None


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """The values of a tensor as a dense tensor with the same L2 norm: a sparse gradient (an
    ``nn.Embedding(sparse=True)``) becomes the values of its coalesced form."""
    return tensor.coalesce().values() if tensor.is_sparse else tensor


def blas_ready(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s sum of squares is best one BLAS dot: a contiguous float32/float64
    tensor on the CPU (2-3x faster there than ``vector_norm`` or a reduction over a mask, and
    1.6x faster than ``_foreach_norm``, whose CPU kernel is a loop of ``vector_norm`` calls)."""
    return tensor.device.type == "cpu" and tensor.dtype in _BLAS and tensor.is_contiguous()


def cpu_self_dot(tensor: torch.Tensor) -> torch.Tensor | None:
    """The sum of squares of ``tensor`` as one BLAS dot where ``blas_ready``; None elsewhere."""
    if blas_ready(tensor):
        flat = tensor.view(-1)
        return torch.dot(flat, flat)
    return None


def foreach_squares(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The squared L2 norm of each tensor, as float32: a BLAS dot each where ``blas_ready``,
    elsewhere a fused ``_foreach_norm`` per dtype (half and bfloat16 accumulate in float32, float64
    in float64), sparse tensors by their values."""
    tensors = [dense(t) for t in tensors]
    if all(blas_ready(t) for t in tensors):
        squares = torch.stack([torch.dot(flat, flat) for t in tensors for flat in (t.view(-1),)])
        return squares if squares.dtype == torch.float32 else squares.float()
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    if len(by_dtype) == 1 and tensors[0].dtype not in _LOW_PRECISION:
        stacked = torch.stack(torch._foreach_norm(tensors))
        return (stacked if stacked.dtype == torch.float32 else stacked.float()).square_()
    out: list[torch.Tensor] = [torch.empty(0)] * len(tensors)
    for dtype, indices in by_dtype.items():
        group = [tensors[i] for i in indices]
        norms = torch._foreach_norm(group, 2, dtype=torch.float32) if dtype in _LOW_PRECISION \
            else torch._foreach_norm(group)
        for i, norm in zip(indices, norms):
            out[i] = norm.float()
    return torch.stack(out).square_()


class LayerParams:
    """Parameters grouped by owning module (``parameters(recurse=False)``), in ``named_modules`` order.

    A parameter shared by several modules belongs to the first that owns it; the parameters of a
    parametrization (weight_norm, spectral_norm) belong to the module it parametrizes.
    """

    def __init__(self, model: nn.Module) -> None:
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, module in unwrap(model).named_modules():
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            if not own:
                continue
            seen.update(id(p) for p in own)
            groups.setdefault(layer_name(_PARAMETRIZATIONS.sub("", name)), []).extend(own)
        self.names: list[str] = list(groups)
        self.params: list[nn.Parameter] = [p for group in groups.values() for p in group]
        owner = [i for i, group in enumerate(groups.values()) for _ in group]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.owner_ids: list[int] = owner  # on the host: statistics read it without a device copy
        self.owner = torch.tensor(owner, dtype=torch.long, device=self.device)
        self.numel = torch.zeros(len(self.names), device=self.device).index_add_(
            0, self.owner, torch.tensor([float(p.numel()) for p in self.params], device=self.device))
        self._present: tuple[bool, ...] | None = None
        self._grad_owner = self.owner
        self._has_grad = torch.ones(len(self.names), dtype=torch.bool, device=self.device)
        self._all_grads = True
        self.missing: frozenset[int] = frozenset()  # layers with no gradient at the last grads() call
        self._constants: dict[tuple, torch.Tensor] = {}

    def constant(self, values: Sequence[float] | Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``torch.tensor(values)`` on the layers' device, made once per distinct value (owners,
        learning rates): a sampled step then builds no tensor from host lists."""
        key = (dtype, tuple(values))
        tensor = self._constants.get(key)
        if tensor is None:
            if len(self._constants) >= 64:  # learning-rate schedules make new values: keep the recent
                self._constants.pop(next(iter(self._constants)))
            tensor = self._constants[key] = torch.tensor(key[1], dtype=dtype, device=self.device)
        return tensor

    def __len__(self) -> int:
        return len(self.names)

    def sum_per_layer(self, values: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """Sum per-parameter values into per-layer totals (one ``index_add_``)."""
        owner = self.owner if owner is None else owner
        return torch.zeros(len(self.names), device=values.device, dtype=values.dtype).index_add_(0, owner, values)

    def norms(self, tensors: Sequence[torch.Tensor], owner: torch.Tensor | None = None) -> torch.Tensor:
        """Per-layer L2 norm of per-parameter tensors (``foreach_squares``, one ``index_add_``)."""
        if not tensors:
            return torch.zeros(len(self.names), device=self.device)
        return self.sum_per_layer(foreach_squares(list(tensors)), owner).sqrt_()

    def update_norms(self, before: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer ||Δθ|| from the parameters ``before`` the update, which become -Δθ (in place:
        no allocation). On the CPU each tensor's difference and dot run back to back, while it is
        in the cache; elsewhere one fused subtraction, then ``norms``."""
        params: list[torch.Tensor] = list(self.params)
        if all(blas_ready(t) for t in before):
            stacked = torch.stack([torch.dot(flat, flat) for old, new in zip(before, params)
                                   for flat in (old.sub_(new).view(-1),)])
            return self.sum_per_layer(stacked if stacked.dtype == torch.float32 else stacked.float()).sqrt_()
        torch._foreach_sub_(before, params)
        return self.norms(before)

    def grads(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The parameters' gradients that exist, and the owning layer of each."""
        present = tuple(p.grad is not None for p in self.params)
        if present != self._present:  # recomputed only when the set of gradients changes
            self._present = present
            mask = torch.tensor(present, dtype=torch.bool, device=self.device)
            self._grad_owner = self.owner[mask]
            self._has_grad = torch.zeros(len(self.names), dtype=torch.bool, device=self.device)
            self._has_grad[self._grad_owner] = True
            self._all_grads = all(present)
            with_grad = {i for i, has in zip(self.owner_ids, present) if has}
            self.missing = frozenset(range(len(self.names))) - with_grad
        # detach() only a gradient that is part of a graph (backward(create_graph=True))
        return [g if not (g := p.grad).requires_grad else g.detach() for p in self.params if p.grad is not None], \
            self._grad_owner

    def mask_missing(self, values: torch.Tensor) -> torch.Tensor:
        """NaN where a layer had no gradient at the last ``grads()`` call."""
        return torch.where(self._has_grad, values, torch.full_like(values, float("nan")))

    @property
    def all_grads(self) -> bool:
        """Whether every parameter had a gradient at the last ``grads()`` call."""
        return self._all_grads
