"""What every attribution adapter needs: the model in eval mode on its device, the explained output
as a function of the input, targets, references, and checked inputs.

The model and the user's tensors come back unchanged: we work on copies of the inputs, and the
model's train/eval mode and ``requires_grad`` flags are restored on exit, also after an error
(Captum's DeepLift leaves ``requires_grad=True`` on an input it failed on).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Output = Literal["logit", "probability"]


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Refuse rows holding NaN or Inf with one error naming them: an attribution of a NaN input is
    NaN or silently wrong, and each method fails differently on it."""
    if not tensor.is_floating_point() or tensor.ndim == 0:
        return
    bad = (~torch.isfinite(tensor.reshape(len(tensor), -1))).any(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().reshape(-1).tolist()
        shown = ", ".join(str(r) for r in rows[:10]) + (f" ... ({len(rows)} rows)" if len(rows) > 10 else "")
        raise ValueError(f"{name}: rows {shown} hold NaN or Inf values; explanations need finite inputs "
                         "(impute them, or drop those rows)")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's CPU generator and NumPy's and Python's global ones seeded with ``seed`` inside, their
    states restored after: shap and Captum draw from all three (GradientShap's baselines,
    KernelExplainer's coalitions), so ``seed=`` alone makes every method reproducible."""
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def to_tensor(value: Any, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A detached copy of ``value`` as a tensor on ``device`` (floating inputs take ``dtype``)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().clone()
    else:
        if hasattr(value, "to_numpy"):
            value = value.to_numpy()
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: expected an array or tensor, got {type(value).__name__}") from err
    if tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.bool):
        tensor = tensor.to(dtype) if not tensor.is_floating_point() or tensor.dtype != dtype else tensor
    return tensor.to(device)


@dataclass
class ExplainContext:
    """The model and data of one ``explain`` call, as the adapters see them."""

    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    output: Output
    n_outputs: int
    feature_shape: tuple[int, ...]
    progress: bool = False
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    output_key: str | None = None
    forward_kwargs: dict[str, Any] = field(default_factory=dict)       # passed on every call
    row_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)  # one entry per bound row
    token: Any = None  # diagnose.explain.tokens.TokenInputs of the bound rows, for token-id inputs

    def for_rows(self, index: slice | torch.Tensor) -> ExplainContext:
        """This context bound to a slice of the explained rows (their per-row arguments)."""
        if not self.row_kwargs and self.token is None:
            return self
        return replace(self, row_kwargs={k: v[index] for k, v in self.row_kwargs.items()},
                       token=None if self.token is None else self.token.rows(index))

    def outputs(self, x: torch.Tensor, *row_args: torch.Tensor) -> torch.Tensor:
        """The explained outputs for every class, (n, n_outputs): logits, or probabilities.
        ``row_args``: the per-row keyword arguments expanded like ``x`` (Captum passes them); by
        default those of the bound rows, which must then be the rows of ``x``."""
        kwargs = dict(self.forward_kwargs)
        if self.row_kwargs:
            if not row_args:
                row_args = tuple(self.row_kwargs.values())
                if len(row_args[0]) != len(x):
                    raise RuntimeError(f"{len(x)} inputs for {len(row_args[0])} rows of per-row forward_kwargs")
            kwargs.update(zip(self.row_kwargs, row_args))
        out = select_output(self.model(x, **kwargs), self.output_key)
        out = out.reshape(len(x), -1)
        if self.output == "probability":
            out = torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
        return out

    def target_output(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One explained output per row: the target's (n,)."""
        return self.outputs(x).gather(1, targets.reshape(-1, 1).to(x.device))[:, 0]

    def no_grad_outputs(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.for_rows(slice(i, i + batch_size)).outputs(x[i:i + batch_size])
                              for i in range(0, len(x), batch_size)])

    def numpy_function(self) -> Callable[[np.ndarray], np.ndarray]:
        """``f(X: ndarray (m, n_features_flat)) -> ndarray (m, n_outputs)``, batched, without gradients."""
        def f(array: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.asarray(array), dtype=self.dtype, device=self.device)
            x = x.reshape(len(x), *self.feature_shape)
            return self.no_grad_outputs(x).double().cpu().numpy()
        return f


class OutputKeyError(ValueError):
    """The model's output has no tensor to explain under the given (or default) key."""


def select_output(out: Any, key: str | None) -> torch.Tensor:
    """The tensor to explain in a model's output: the first of a tuple, or of a dict or
    ``transformers`` ModelOutput the ``key`` entry (``"logits"`` by default, when there is one)."""
    if isinstance(out, Mapping):
        keys = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        name = key if key is not None else ("logits" if "logits" in keys else None)
        if name is None or name not in keys:
            wanted = f"has no tensor {key!r}" if key is not None else "has no 'logits'"
            raise OutputKeyError(f"output_key: the model returns a {type(out).__name__} that {wanted}; "
                             f"pass output_key= one of {keys}")
        return out[name]
    if key is not None:
        raise OutputKeyError(f"output_key: the model returns a {type(out).__name__}, not a dict or ModelOutput; "
                         "leave output_key=None")
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


class ModelGuard:
    """Eval mode and ``requires_grad`` of every parameter restored on exit, whatever happens."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = {m: m.training for m in self.model.modules()}
        self.flags = {p: p.requires_grad for p in self.model.parameters()}
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes.items():
            m.training = training
        for p, flag in self.flags.items():
            p.requires_grad_(flag)
            if p.grad is not None and not flag:
                p.grad = None


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's parameters (CPU float32 if it has none)."""
    for p in model.parameters():
        return p.device, p.dtype if p.is_floating_point() else torch.float32
    for b in model.buffers():
        return b.device, torch.float32
    return torch.device("cpu"), torch.float32


def resolve_targets(target: Any, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The class explained per explained row, and for every class the input row of each explained
    row (None when they are the input rows). None: one fixed output (0 of a single output, the
    positive class 1 of two, every class of more); ``"predicted"``; ``"all"``; an int; or one per row."""
    n, n_out = outputs.shape
    named = target if isinstance(target, str) else None
    if named is not None and named not in ("predicted", "all"):
        raise ValueError(f"target: expected None, 'predicted', 'all', an int or one int per row, got {target!r}")
    if named == "all" or (target is None and n_out > 2):
        rows = torch.arange(n, device=outputs.device).repeat_interleave(n_out)
        return torch.arange(n_out, device=outputs.device).repeat(n), rows
    if named == "predicted":
        return outputs.argmax(dim=1) if n_out > 1 else torch.zeros(n, dtype=torch.long, device=outputs.device), None
    if target is None:
        return torch.full((n,), 1 if n_out == 2 else 0, dtype=torch.long, device=outputs.device), None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        targets = torch.full((n,), int(target), dtype=torch.long, device=outputs.device)
    else:
        try:
            targets = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target))
        except (TypeError, ValueError) as err:
            raise TypeError("target: expected None, 'predicted', 'all', an int or one int per row, "
                            f"got {type(target).__name__}") from err
        if targets.is_floating_point() or targets.ndim != 1 or len(targets) != n:
            raise ValueError(f"target: expected None, 'predicted', 'all', an int, or {n} integer class indices "
                             f"(one per row), got shape {tuple(targets.shape)} of {targets.dtype}")
        targets = targets.long().to(outputs.device)
    if len(targets) and (targets.min() < 0 or targets.max() >= n_out):
        raise ValueError(f"target: class indices must be in [0, {n_out - 1}] (the model has {n_out} "
                         f"output{'s' if n_out > 1 else ''}), got {sorted(set(targets.tolist()))[:5]}")
    return targets, None


def describe_target(target: Any, n_outputs: int) -> str:
    """In words, which output an explanation explains (the report prints it beside each figure)."""
    named = target if isinstance(target, str) else None
    if named == "all" or (target is None and n_outputs > 2):
        return "every class (one explanation per row and class)"
    if named == "predicted":
        return "each row's predicted class"
    if target is None:
        return "class 1 (the positive class)" if n_outputs == 2 else "the model's output"
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return f"class {int(target)}"
    return "the class given for each row"


def check_feature_names(names: Sequence[str] | None, n_features: int) -> list[str]:
    """Feature names: the given ones (one per feature), or ``x0``, ``x1``, ..."""
    if names is None:
        return [f"x{i}" for i in range(n_features)]
    names = [str(n) for n in names]
    if len(names) != n_features:
        raise ValueError(f"feature_names: got {len(names)} names for {n_features} features")
    return names
