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

    def _group_norms(self, tensors: list[torch.Tensor], present: list[bool]) -> torch.Tensor:
        """L2 norm per layer of the given per-parameter tensors; NaN for a layer with none present."""
        n = len(self.names)
        if not tensors:
            return torch.full((n,), float("nan"))
        norms = torch.stack(torch._foreach_norm(tensors)).float()
        index = self._owner[torch.tensor(present, device=self._owner.device)]
        squares = torch.zeros(n, device=norms.device).index_add_(0, index, norms.pow(2))
        counts = torch.zeros(n, device=norms.device).index_add_(0, index, torch.ones_like(norms))
        return torch.where(counts > 0, squares.sqrt(), torch.full_like(squares, float("nan")))

    def grad_norms(self) -> torch.Tensor:
        """Per-layer gradient L2 norm (NaN for layers with no gradient, e.g. frozen ones)."""
        present = [p.grad is not None for p in self.params]
        grads = [p.grad.detach() for p in self.params if p.grad is not None]
        return self._group_norms(grads, present)

    def weight_norms(self) -> torch.Tensor:
        """Per-layer L2 norm of the parameters."""
        return self._group_norms([p.detach() for p in self.params], [True] * len(self.params))


class StepRecorder:
    """Buffers per-step loss and layer norms on the device; writes them every ``flush_every`` steps."""

    def __init__(self, model: nn.Module, writer: RunWriter, flush_every: int = 100) -> None:
        self.layers = LayerParams(model)
        self.writer = writer
        self.flush_every = flush_every
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []
        self._grads: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []
        self._pending_grads: torch.Tensor | None = None

    def after_backward(self) -> None:
        """Take the gradient norms now (before clipping: the raw gradient is the diagnostic)."""
        self._pending_grads = self.layers.grad_norms()

    def after_step(self, step: int, loss: torch.Tensor) -> None:
        """Record the step's loss, the gradient norms taken before it and the updated weights' norms."""
        n = len(self.layers.names)
        self._steps.append(step)
        self._losses.append(loss.detach().float().reshape(()))
        grads = self._pending_grads if self._pending_grads is not None else torch.full((n,), float("nan"))
        self._grads.append(grads)
        self._weights.append(self.layers.weight_norms())
        self._pending_grads = None
        if len(self._steps) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Copy the buffered statistics to the host in one transfer and hand them to the writer."""
        if not self._steps:
            return
        losses = torch.stack(self._losses).cpu().tolist()  # note: one host sync per flush
        grads = torch.stack([g.to(self._losses[0].device) for g in self._grads]).cpu().tolist()
        weights = torch.stack([w.to(self._losses[0].device) for w in self._weights]).cpu().tolist()
        self.writer.write_scalars((s, "loss", v) for s, v in zip(self._steps, losses))
        self.writer.write_layer_stats(
            {"step": s, "layer": name, "grad_norm": g, "weight_norm": w}
            for s, gs, ws in zip(self._steps, grads, weights)
            for name, g, w in zip(self.layers.names, gs, ws)
        )
        self._steps, self._losses, self._grads, self._weights = [], [], [], []
