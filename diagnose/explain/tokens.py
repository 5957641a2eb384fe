"""Token-id inputs: attributions per token through the model's input embedding.

Integer inputs to a model with an ``nn.Embedding`` are token ids: they are kept as integers, the
gradient methods run Captum's layer methods on the embedding that reads them (the ids themselves
have no gradient), and the perturbation methods replace tokens by a reference token (the pad token
by default). Forward keyword arguments whose first dimension is the number of rows (an attention
mask, token type ids) travel with their rows through every batch and every perturbed copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# Methods that explain token ids (the others need continuous inputs or elementwise rules).
TOKEN_METHODS = ("integrated_gradients", "input_x_gradient", "saliency", "feature_ablation", "occlusion",
                 "shap_permutation", "shap_kernel")


@dataclass
class TokenInputs:
    """What token methods need besides the ids: the embedding layer (its module path, so that a
    randomized copy of the model resolves its own), per-row reference ids, and the positions that
    hold tokens (attention mask 1)."""

    layer: str
    baseline: torch.Tensor                      # (n, L) reference ids, one row per explained row
    valid: torch.Tensor                         # (n, L) bool: positions that hold a token
    strings: list[list[str]] = field(default_factory=list)

    def rows(self, index: slice | torch.Tensor) -> TokenInputs:
        strings = self.strings[index] if isinstance(index, slice) else [self.strings[i] for i in index.tolist()]
        return TokenInputs(self.layer, self.baseline[index], self.valid[index], strings)


def is_token_input(model: Any, X: Any) -> bool:
    """Integer inputs to a torch model with an ``nn.Embedding``: token ids."""
    if not isinstance(model, nn.Module) or not any(isinstance(m, nn.Embedding) for m in model.modules()):
        return False
    dtype = X.dtype if isinstance(X, torch.Tensor) else np.asarray(
        X.to_numpy() if hasattr(X, "to_numpy") else X).dtype
    if isinstance(dtype, torch.dtype):
        return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    return np.issubdtype(dtype, np.integer)


def split_forward_kwargs(forward_kwargs: Mapping[str, Any] | None, n_rows: int, device: torch.device,
                         tokens: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(static keyword arguments, per-row ones): a tensor or array whose first dimension is the
    number of rows goes with its rows; anything else is passed as it is on every call."""
    if forward_kwargs is None:
        return {}, {}
    if not isinstance(forward_kwargs, Mapping):
        raise TypeError(f"forward_kwargs: expected a dict of keyword arguments for model(...), "
                        f"got {type(forward_kwargs).__name__}")
    static: dict[str, Any] = {}
    per_row: dict[str, torch.Tensor] = {}
    for name, value in forward_kwargs.items():
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value)
        if isinstance(value, torch.Tensor):
            value = value.detach().to(device)
            if value.ndim >= 1 and len(value) == n_rows:
                per_row[name] = value
                continue
        static[name] = value
    if per_row and not tokens:
        raise ValueError(f"forward_kwargs: {', '.join(per_row)} hold one entry per row of X; per-row arguments "
                         "are passed along with token-id inputs only (for feature inputs, make them part of X "
                         "or bind them in a wrapper module)")
    return static, per_row


def find_embedding(model: nn.Module, x: torch.Tensor, call: Callable[[torch.Tensor], Any]) -> str:
    """The module path of the embedding that reads the token ids: the model's
    ``get_input_embeddings()`` (transformers), else the first ``nn.Embedding`` whose input is ``x``."""
    names = {m: n for n, m in model.named_modules()}
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            layer = getter()
        except (NotImplementedError, AttributeError):
            layer = None
        if isinstance(layer, nn.Module) and layer in names:
            return names[layer]
    seen: list[nn.Module] = []

    def record(module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].shape == x.shape \
                and torch.equal(inputs[0], x):
            seen.append(module)
    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        with torch.no_grad():
            call(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("X: integer inputs look like token ids, but no nn.Embedding of the model reads them "
                         "(pass float features if they are not token ids)")
    return names[seen[0]]


def pad_id(model: nn.Module, layer: nn.Module) -> int:
    """The reference token: the embedding's ``padding_idx``, the model config's ``pad_token_id``, or 0."""
    if isinstance(layer, nn.Embedding) and layer.padding_idx is not None:
        return int(layer.padding_idx)
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    return int(pad) if isinstance(pad, (int, np.integer)) else 0


def baseline_ids(baseline: Any, x: torch.Tensor, model: nn.Module, layer: nn.Module, special: set[int],
                 valid: torch.Tensor) -> torch.Tensor:
    """Per-row reference ids: every token replaced by the reference token (``baseline``: None or
    ``"pad"`` for the pad token, an int id, or one row of ids); special tokens of a tokenizer
    (CLS, SEP) and positions outside the attention mask keep their ids, as Captum's tutorials do."""
    if baseline is None or (isinstance(baseline, str) and baseline == "pad"):
        base = torch.full_like(x, pad_id(model, layer))
    elif isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        base = torch.full_like(x, int(baseline))
    elif isinstance(baseline, str):
        raise ValueError(f"baseline: token inputs take 'pad', a token id or one row of ids, got {baseline!r}")
    else:
        row = torch.as_tensor(np.asarray(baseline.cpu() if isinstance(baseline, torch.Tensor) else baseline))
        if row.is_floating_point() or row.shape[-1:] != x.shape[1:] or row.ndim > 2 or (
                row.ndim == 2 and len(row) != 1):
            raise ValueError(f"baseline: expected 'pad', a token id or one row of {x.shape[1]} token ids, "
                             f"got shape {tuple(row.shape)} of {row.dtype}")
        base = row.reshape(1, -1).to(x.device, x.dtype).expand_as(x).clone()
    vocab = getattr(layer, "num_embeddings", None)
    if vocab is not None and (base.min() < 0 or base.max() >= vocab):
        raise ValueError(f"baseline: reference token ids must be in [0, {vocab - 1}] (the embedding's size)")
    keep = ~valid
    if special:
        keep |= torch.isin(x, torch.tensor(sorted(special), device=x.device, dtype=x.dtype))
    return torch.where(keep, x, base)


def token_strings(tokens: Any, x: torch.Tensor) -> tuple[list[list[str]], set[int]]:
    """Token strings per row and position, and the special ids a tokenizer names.

    ``tokens``: None (the ids as text), a tokenizer (``convert_ids_to_tokens``), a vocabulary (a
    list indexed by id, or a dict from id to string), per-row lists of strings, or for one row a
    flat list of its strings."""
    ids = x.detach().cpu().tolist()
    n, length = x.shape
    if tokens is None:
        return [[str(i) for i in row] for row in ids], set()
    convert = getattr(tokens, "convert_ids_to_tokens", None)
    if callable(convert):
        special = {int(i) for i in getattr(tokens, "all_special_ids", []) or []}
        return [[str(t) for t in convert(row)] for row in ids], special
    if isinstance(tokens, Mapping):
        return [[str(tokens.get(i, i)) for i in row] for row in ids], set()
    if isinstance(tokens, str) or not isinstance(tokens, Sequence | np.ndarray):
        raise TypeError(f"tokens: expected a tokenizer, a vocabulary or token strings per row, got "
                        f"{type(tokens).__name__}")
    items = list(tokens)
    if items and all(isinstance(t, str) for t in items):
        if n == 1 and len(items) == length:
            return [items], set()  # one row's strings
        largest = max(max(row) for row in ids)
        if len(items) <= largest:
            raise ValueError(f"tokens: a vocabulary of {len(items)} strings does not cover token id {largest} "
                             f"(for one row's strings, pass exactly {length})")
        return [[items[i] for i in row] for row in ids], set()
    rows = [[str(t) for t in row] for row in items]
    if len(rows) != n or any(len(r) != length for r in rows):
        raise ValueError(f"tokens: expected {n} rows of {length} strings (one per position), got "
                         f"{len(rows)} rows of lengths {sorted({len(r) for r in rows})[:5]}")
    return rows, set()


def valid_positions(per_row: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Positions that hold a token: the attention mask's 1s where one is given, else all."""
    mask = per_row.get("attention_mask")
    if mask is not None and tuple(mask.shape) == tuple(x.shape):
        return mask.bool()
    return torch.ones_like(x, dtype=torch.bool)


def embedding_layer(ctx: Any) -> nn.Module:
    """The embedding module of the context's model (also of a randomized copy)."""
    return ctx.model.get_submodule(ctx.token.layer)


def forward(ctx: Any) -> Callable[..., torch.Tensor]:
    """Captum's forward function for ids: the per-row keyword arguments come as extra positional
    arguments, which Captum expands along with the inputs."""
    return ctx.outputs


def extra_args(ctx: Any) -> tuple[torch.Tensor, ...] | None:
    """The per-row keyword arguments of the bound rows, in order (Captum's additional_forward_args)."""
    return tuple(ctx.row_kwargs.values()) or None


def base_outputs(ctx: Any, targets: torch.Tensor) -> torch.Tensor:
    """The explained output at each row's reference ids, (n,)."""
    return ctx.no_grad_outputs(ctx.token.baseline).gather(1, targets.reshape(-1, 1).to(ctx.device))[:, 0]


def layer_base_outputs(ctx: Any, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The explained output where the layer methods' path starts: the input ids, with the
    embedding's output replaced by that of the reference ids. A model that reads the ids
    elsewhere too (GPT-2 pools at the last non-pad token) differs there from a plain forward pass
    on the reference ids, and Captum's layer attributions add up to this one."""
    layer = embedding_layer(ctx)
    with torch.no_grad():
        reference = layer(ctx.token.baseline)
    handle = layer.register_forward_hook(lambda module, inputs, output: reference)
    try:
        with torch.no_grad():
            out = ctx.outputs(x)
    finally:
        handle.remove()
    return out.gather(1, targets.reshape(-1, 1).to(out.device))[:, 0]


def row_function(ctx: Any, x: torch.Tensor, i: int) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray,
                                                                np.ndarray]:
    """For SHAP on row ``i``: a function of the row's token positions (as floats; masked positions
    hold the reference ids), that row's ids and its reference ids at those positions. Positions
    outside the attention mask stay as they are and are not features."""
    positions = ctx.token.valid[i].nonzero().reshape(-1)
    full = ctx.token.baseline[i:i + 1]  # outside the mask it holds the row's own ids
    row_ctx = ctx.for_rows(slice(i, i + 1))

    def f(array: np.ndarray) -> np.ndarray:
        chosen = torch.as_tensor(np.rint(np.asarray(array)), dtype=full.dtype, device=full.device)
        ids = full.expand(len(chosen), -1).clone()
        ids[:, positions] = chosen
        args = tuple(v.expand(len(ids), *v.shape[1:]) for v in row_ctx.row_kwargs.values())
        out = []
        with torch.no_grad():
            for s in range(0, len(ids), 512):
                out.append(row_ctx.outputs(ids[s:s + 512], *(a[s:s + 512] for a in args)))
        return torch.cat(out).double().cpu().numpy()
    x_row = x[i, positions].double().cpu().numpy()
    base_row = ctx.token.baseline[i, positions].double().cpu().numpy()
    return f, x_row, base_row


def scatter_rows(ctx: Any, per_row: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    """Per-row values over the valid positions back to (n, L), zero elsewhere."""
    values = torch.zeros(ctx.token.valid.shape, dtype=dtype)
    for i, v in enumerate(per_row):
        values[i, ctx.token.valid[i].cpu()] = torch.as_tensor(v, dtype=dtype)
    return values.to(ctx.device)
