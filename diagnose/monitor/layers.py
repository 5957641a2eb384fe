"""A model's parameters grouped by the module that owns them, with fused per-layer reductions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ROOT_NAME = "(model)"  # the layer name of the model itself (its named_modules() name is "")


def layer_name(name: str) -> str:
    """The name a layer is recorded under: its ``named_modules()`` name, or ``(model)`` for the root."""
    return name or ROOT_NAME


class LayerParams:
    """Parameters grouped by owning module (``parameters(recurse=False)``), in ``named_modules`` order.

    A parameter shared by several modules belongs to the first that owns it.
    """

    def __init__(self, model: nn.Module) -> None:
        self.names: list[str] = []
        self.modules: list[nn.Module] = []
        self.params: list[nn.Parameter] = []
        owner: list[int] = []
        seen: set[int] = set()
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            if not own:
                continue
            seen.update(id(p) for p in own)
            self.names.append(layer_name(name))
            self.modules.append(module)
            owner.extend([len(self.names) - 1] * len(own))
            self.params.extend(own)
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

    def __len__(self) -> int:
        return len(self.names)

    def sum_per_layer(self, values: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """Sum per-parameter values into per-layer totals (one ``index_add_``)."""
        owner = self.owner if owner is None else owner
        return torch.zeros(len(self.names), device=values.device, dtype=values.dtype).index_add_(0, owner, values)

    def norms(self, tensors: Sequence[torch.Tensor], owner: torch.Tensor | None = None) -> torch.Tensor:
        """Per-layer L2 norm of per-parameter tensors (one fused ``_foreach_norm``)."""
        if not tensors:
            return torch.zeros(len(self.names), device=self.device)
        squares = torch.stack(torch._foreach_norm(list(tensors))).float().pow_(2)
        return self.sum_per_layer(squares, owner).sqrt_()

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
        return [p.grad.detach() for p in self.params if p.grad is not None], self._grad_owner

    def mask_missing(self, values: torch.Tensor) -> torch.Tensor:
        """NaN where a layer had no gradient at the last ``grads()`` call."""
        return torch.where(self._has_grad, values, torch.full_like(values, float("nan")))

    @property
    def all_grads(self) -> bool:
        """Whether every parameter had a gradient at the last ``grads()`` call."""
        return self._all_grads
