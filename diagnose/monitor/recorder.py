"""Per-step recording of the loss and per-layer gradient and weight norms into the run store.

Norms are computed on the parameters' device with fused multi-tensor ops and kept there; the
host sees them once per flush (one copy for ``flush_every`` steps), and the disk write happens on
the store's writer thread.
"""

from __future__ import annotations

import torch
from torch import nn

from diagnose.monitor.store import RunWriter


class LayerParams:
    """A model's parameters grouped by the module that owns them (``named_modules`` names)."""

    def __init__(self, model: nn.Module) -> None:
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        owner: list[int] = []
        seen: set[int] = set()
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            if not own:
                continue
            seen.update(id(p) for p in own)
            self.names.append(name or type(module).__name__)
            owner.extend([len(self.names) - 1] * len(own))
            self.params.extend(own)
        device = self.params[0].device if self.params else torch.device("cpu")
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)
        self._present: tuple[bool, ...] | None = None  # which parameters had a gradient last time
        self._index = self._has_grad = self._owner
        self._all_grads = False

    def norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer L2 norms of the gradients and of the parameters, as two (layers,) tensors.

        One fused ``_foreach_norm`` over every gradient and parameter, one ``index_add_`` to sum
        squares per layer: a handful of kernel launches per step, whatever the depth. A layer
        with no gradient (frozen, or unused this step) reads NaN.
        """
        n = len(self.names)
        present = tuple(p.grad is not None for p in self.params)
        if present != self._present:
            self._present = present
            grad_owner = self._owner[torch.tensor(present, dtype=torch.bool, device=self._owner.device)]
            self._index = torch.cat([grad_owner, self._owner + n])
            has_grad = torch.zeros(n, dtype=torch.bool, device=self._owner.device)
            has_grad[grad_owner] = True
            self._has_grad = has_grad
            self._all_grads = all(present)
        tensors = [p.grad.detach() for p in self.params if p.grad is not None]
        tensors += [p.detach() for p in self.params]
        squares = torch.stack(torch._foreach_norm(tensors)).float().pow_(2)
        per_layer = torch.zeros(2 * n, device=squares.device).index_add_(0, self._index, squares).sqrt_()
        grads = per_layer[:n]
        if not self._all_grads:
            grads = torch.where(self._has_grad, grads, torch.full_like(grads, float("nan")))
        return grads, per_layer[n:]

    def grad_norms(self) -> torch.Tensor:
        """Per-layer gradient L2 norm (NaN for layers with no gradient, e.g. frozen ones)."""
        return self.norms()[0]

    def weight_norms(self) -> torch.Tensor:
        """Per-layer L2 norm of the parameters."""
        return self.norms()[1]


class StepRecorder:
    """Buffers per-step loss and layer norms on the device; writes them every ``flush_every`` steps.

    Gradient and weight norms are taken together after backward (before clipping and before the
    update), so a step's row describes one parameter state: the weights that produced its loss
    and the raw gradient of that loss.
    """

    def __init__(self, model: nn.Module, writer: RunWriter, flush_every: int = 100) -> None:
        self.layers = LayerParams(model)
        self.writer = writer
        self.flush_every = flush_every
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def after_backward(self) -> None:
        """Take the gradient and weight norms of this step (stays on the device)."""
        self._pending = torch.cat(self.layers.norms())

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """Buffer the step's loss with the norms taken after its backward pass."""
        if self._pending is None:  # no backward this step (e.g. an optimizer without gradients)
            grads = torch.full((len(self.layers.names),), float("nan"))
            self._pending = torch.cat([grads.to(self.layers.weight_norms().device), self.layers.weight_norms()])
        self._steps.append(step)
        self._losses.append(loss.detach().float().reshape(()))
        self._norms.append(self._pending)
        self._pending = None
        if len(self._steps) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Copy the buffered statistics to the host in one transfer and hand them to the writer."""
        if not self._steps:
            return
        n = len(self.layers.names)
        device = self._norms[0].device
        # note: one host sync per flush
        block = torch.cat([torch.stack(self._losses).to(device)[:, None], torch.stack(self._norms)], 1).cpu().tolist()
        self.writer.write_scalars((s, "loss", row[0]) for s, row in zip(self._steps, block))
        self.writer.write_layer_stats(
            {"step": s, "layer": name, "grad_norm": row[1 + i], "weight_norm": row[1 + n + i]}
            for s, row in zip(self._steps, block)
            for i, name in enumerate(self.layers.names)
        )
        self._steps, self._losses, self._norms = [], [], []
