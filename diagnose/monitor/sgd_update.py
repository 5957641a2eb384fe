"""The update of torch.optim.SGD in closed form, so its update ratio needs no parameter copy.

After ``SGD.step()`` the update of each parameter is known exactly from what the step used:
without momentum Δθ = -lr * g; with momentum (not Nesterov) Δθ = -lr * buf, the momentum buffer
the step just wrote (torch/optim/sgd.py; ``maximize`` only flips the sign). So ||Δθ|| is one
``foreach_squares`` over the gradients or the buffers, instead of a copy of every parameter before the step
and two more passes after it (about 3x less memory traffic; see benchmarks/overhead.py). Weight
decay and Nesterov momentum make Δθ depend on the parameters before the step: those fall back to
the copy.
"""

from __future__ import annotations

import torch

from diagnose.monitor.layers import LayerParams, foreach_squares


def supports(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether ``sgd_update_norms`` is exact for this optimizer as configured now."""
    return (type(optimizer) is torch.optim.SGD
            and all(g["weight_decay"] == 0 and not g["nesterov"] for g in optimizer.param_groups))


def sgd_update_norms(optimizer: torch.optim.SGD, layers: LayerParams) -> torch.Tensor:
    """Per-layer ||Δθ|| of the SGD step that just ran (zero for a parameter it did not update)."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    tensors, owners, rates = [], [], []
    for p, layer in zip(layers.params, layers.owner_ids):
        group = group_of.get(id(p))
        if group is None or p.grad is None:
            continue
        moved = optimizer.state.get(p, {}).get("momentum_buffer") if group["momentum"] != 0 else p.grad
        if moved is None:
            continue
        lr = group["lr"]
        tensors.append(moved)  # read under no_grad: no detach() needed
        owners.append(layer)
        rates.append(float(lr))
    if not tensors:
        return torch.zeros(len(layers), device=layers.device)
    scaled = foreach_squares(tensors) * layers.constant([r * r for r in rates])
    return layers.sum_per_layer(scaled, layers.constant(owners, torch.long)).sqrt_()
