"""Run metadata: what was trained, with what, by which library versions."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Layers (qualified name, type, own parameter count) and parameter totals (of a compiled
    model's original: names without ``_orig_mod.``)."""
    model = getattr(model, "_orig_mod", model)
    layers = [{"name": name, "type": type(m).__name__,
               "params": sum(p.numel() for p in m.parameters(recurse=False))}
              for name, m in model.named_modules() if name]
    return {"class": type(model).__name__, "layers": layers,
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def optimizer_summary(optimizer: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    """The optimizer's class and the hyperparameters of each parameter group."""
    if optimizer is None:
        return None
    groups = [{k: _jsonable(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"class": type(optimizer).__name__, "hyperparameters": groups[0] if groups else {},
            "param_groups": groups}


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import numpy
    import pandas

    from diagnose import __version__
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "diagnose": __version__}


def now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def distributed_rank() -> tuple[int | None, int]:
    """(rank, world size) under torch.distributed, else (None, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None, 1
