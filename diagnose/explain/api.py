"""``dg.explain``, ``dg.explain_prediction`` and ``dg.compare_methods``: one interface to Captum's
and SHAP's attribution methods, with the model and inputs left as they were."""

from __future__ import annotations

import difflib
import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from diagnose import validate
from diagnose.explain import quality as q
from diagnose.explain.context import (
    ExplainContext,
    ModelGuard,
    Output,
    OutputKeyError,
    check_feature_names,
    check_finite,
    describe_target,
    model_device_dtype,
    resolve_targets,
    seeded,
    to_tensor,
)
from diagnose.explain.explanation import Explanation, LocalExplanation
from diagnose.explain.registry import METHODS, MethodSpec, References, resolve_method
from diagnose.explain.tokens import (
    TOKEN_METHODS,
    TokenInputs,
    baseline_ids,
    find_embedding,
    is_token_input,
    split_forward_kwargs,
    token_strings,
    valid_positions,
)

# Default background: up to 100 rows of X (SHAP's own examples use 50-100), and 20 for the
# model-agnostic samplers, whose cost grows with every background row.
DEFAULT_BACKGROUND_ROWS, DEFAULT_SAMPLER_BACKGROUND_ROWS = 100, 20


class _CallableModel(nn.Module):
    """A plain callable (e.g. a NumPy or scikit-learn predict function) as a module."""

    def __init__(self, fn: Callable[[np.ndarray], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(out), dtype=torch.float32)


def _first_layer_width(model: nn.Module) -> str:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return f"; its first layer expects {module.in_features} features"
        if isinstance(module, nn.Conv2d):
            return f"; its first layer expects {module.in_channels} channels"
    return ""


def _check_model_accepts(ctx: ExplainContext, x: torch.Tensor, spec: MethodSpec) -> torch.Tensor:
    """Run one forward pass on two rows: a clear error for a wrong input shape or for a gradient
    method on a model without gradients. Returns the outputs of every row."""
    try:
        with torch.no_grad():
            outputs = ctx.no_grad_outputs(x)
    except OutputKeyError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"X: the model rejected inputs shaped {tuple(x.shape[1:])}{_first_layer_width(ctx.model)} "
                         f"({str(err).splitlines()[0]})") from err
    if spec.gradients and ctx.token is None:  # token ids: the gradient is taken at the embedding
        probe = x[:2].clone().requires_grad_(True)
        with torch.enable_grad():
            out = ctx.outputs(probe)
        if not out.requires_grad:
            raise TypeError(f"method: {spec.name} needs gradients, but the model's output does not depend "
                            "differentiably on its input; use shap_kernel or shap_permutation, which only call it")
    return outputs


def _references(x: torch.Tensor, background: Any, baseline: Any, device: torch.device, dtype: torch.dtype,
                seed: int, rows: int = DEFAULT_BACKGROUND_ROWS) -> References:
    shape = tuple(x.shape[1:])
    if background is None:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x), generator=g)[:rows].to(x.device)
        bg = x[idx]
    else:
        bg = to_tensor(background, "background", device, dtype)
        if bg.ndim == len(shape):
            bg = bg.unsqueeze(0)
        if tuple(bg.shape[1:]) != shape or len(bg) == 0:
            raise ValueError(f"background: expected rows shaped {shape} like X, got {tuple(bg.shape)}")
        check_finite(bg, "background")
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        base = torch.zeros((1, *shape), device=device, dtype=dtype)
    elif isinstance(baseline, str) and baseline == "mean":
        base = bg.mean(dim=0, keepdim=True)
    else:
        base = to_tensor(baseline, "baseline", device, dtype)
        if tuple(base.shape) == shape:
            base = base.unsqueeze(0)
        if tuple(base.shape) != (1, *shape):
            raise ValueError(f"baseline: expected one row shaped {shape}, 'zeros' or 'mean', got {tuple(base.shape)}")
    return References(base, bg)


def explain(
    model: nn.Module | Callable[[np.ndarray], Any],
    X: Any,
    method: str = "integrated_gradients",
    *,
    background: Any = None,
    baseline: Any = None,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    target: Any = None,
    output: Output = "logit",
    output_key: str | None = None,
    forward_kwargs: dict[str, Any] | None = None,
    tokens: Any = None,
    batch_size: int = 256,
    checks: str = "fast",
    progress: bool = False,
    seed: int = 0,
    **params: Any,
) -> Explanation:
    """Attribute the model's output for each row of ``X`` to its input features.

    Args:
        model: an ``nn.Module`` (any device; left in the mode it was in), or for ``shap_kernel`` /
            ``shap_permutation`` any callable from a NumPy array to outputs.
        X: inputs, (rows, features) or images (rows, C, H, W); arrays, tensors or DataFrames.
        method: one of ``dg.list_methods()``.
        background: reference rows for SHAP methods and GradientShap (default: up to 100 rows of X).
        baseline: one reference row for Captum methods: ``"zeros"`` (default), ``"mean"`` of the
            background, or a row.
        feature_names, class_names: names to report (one per flattened feature / per class); a
            DataFrame ``X`` names its features by its columns unless ``feature_names`` is given.
        target: which output to explain. None: one fixed output for every row (a single output;
            class 1, the positive class, of a two-class model; every class when there are more);
            an int: that class; ``"predicted"``: each row's predicted class; ``"all"``: every
            class (one explained row per input row and class, see ``Explanation.rows``); or one
            class per row.
        output: ``"logit"`` (the model's raw output, default) or ``"probability"`` (softmax, or
            sigmoid for one output).
        output_key: for a model that returns a dict or a ``transformers`` ModelOutput, the entry
            to explain (default ``"logits"`` when there is one; otherwise this is required).
        forward_kwargs: keyword arguments for ``model(...)`` on every call; a tensor with one entry
            per row of ``X`` (an ``attention_mask``) goes with its rows (token inputs only).
        tokens: for token-id inputs, the strings to show per position: a tokenizer, a vocabulary
            (list or dict from id), or per-row lists of strings (default: the ids). Integer ``X``
            read by an ``nn.Embedding`` is token ids: attributions are per token, through the
            embedding (methods: ``diagnose.explain.tokens.TOKEN_METHODS``); ``baseline`` is then
            the reference token (default the pad token; a tokenizer's special tokens are kept).
        batch_size: rows per attribution call (bounds memory; IG also takes ``internal_batch_size``).
        checks: ``"fast"`` (completeness/additivity, infidelity, and for methods that are not
            sampling-based the randomization and sensitivity checks), ``"all"``, or ``"none"``.
        progress: show a progress bar over batches.
        seed: seeds torch's, NumPy's and Python's generators for the sampling methods and the
            checks (the caller's generator states are restored after).
        params: method settings (another name is a TypeError that lists the method's): ``n_steps``
            (IG; unset: 50, doubled up to 1600 for the rows that do not add up), ``integration``,
            ``internal_batch_size`` (IG), ``n_samples``/``stdevs`` (gradient_shap),
            ``nsamples`` (shap_kernel, shap_gradient), ``l1_reg`` (shap_kernel: default False, every
            feature kept; ``"num_features(10)"`` keeps 10), ``max_evals`` (shap_permutation),
            ``window``/``strides`` (occlusion), ``layer`` (grad_cam), ``abs`` (saliency),
            ``feature_mask`` (feature_ablation), ``perturbations_per_eval`` (occlusion,
            feature_ablation), ``pair_batch`` (deeplift, shap_deep).
    """
    spec = resolve_method(method)
    check_settings(spec, params)
    validate.one_of("output", output, ("logit", "probability"))
    validate.one_of("checks", checks, ("fast", "all", "none"))
    validate.positive_int("batch_size", batch_size)
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model: expected an nn.Module or a callable, got {type(model).__name__}")
        if spec.gradients:
            raise TypeError(f"method: {method} needs a differentiable torch model; for a plain callable "
                            "use shap_kernel or shap_permutation")
        model = _CallableModel(model)
    device, dtype = model_device_dtype(model)
    token_input = is_token_input(model, X)
    if token_input and spec.tokens is None:
        raise ValueError(f"method: {method} does not explain token ids (integer inputs read by an nn.Embedding); "
                         f"use one of {', '.join(TOKEN_METHODS)}")
    if tokens is not None and not token_input:
        raise ValueError("tokens: given, but X is not token ids (integer inputs read by an nn.Embedding of the model)")
    x = to_tensor(X, "X", device, torch.long if token_input else dtype)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"X: expected a batch of rows (rows, features...), got shape {tuple(x.shape)}")
    if token_input and x.ndim != 2:
        raise ValueError(f"X: token ids are expected as (rows, positions), got shape {tuple(x.shape)}")
    if token_input and background is not None:
        raise ValueError("background: token inputs are explained against a reference token (baseline=, default "
                         "the pad token), not background rows")
    check_finite(x, "X")
    static_kwargs, row_kwargs = split_forward_kwargs(forward_kwargs, len(x), device, token_input)
    if spec.images_only and x.ndim != 4:
        raise ValueError(f"method: {method} needs image inputs (N, C, H, W), got shape {tuple(x.shape)}; "
                         "use integrated_gradients or shap_deep")
    refused = spec.refuses(model)
    if refused:
        raise ValueError(
            f"method: {method}'s rules cover elementwise activations, max pooling, softmax and linear layers only; "
            "this model also has "
            f"{', '.join(refused[:5])}{' ...' if len(refused) > 5 else ''}. Use integrated_gradients, gradient_shap "
            "or shap_kernel, which make no assumption about the layers")
    n_features = int(np.prod(x.shape[1:]))
    if feature_names is None and hasattr(X, "columns") and len(X.columns) == n_features:
        feature_names = [str(c) for c in X.columns]  # a DataFrame's columns name its features
    if token_input and feature_names is None:
        feature_names = [f"pos{i}" for i in range(n_features)]  # global importance groups by token string
    names = check_feature_names(feature_names, n_features)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), seeded(seed), ModelGuard(model):
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)  # the model's device: fork_rng restores that one
        ctx = ExplainContext(model, device, dtype, output, 1, tuple(x.shape[1:]), progress, seed, dict(params),
                             output_key, static_kwargs, row_kwargs)
        if token_input:
            ctx.token = _token_inputs(ctx, x, baseline, tokens)
        outputs_all = _check_model_accepts(ctx, x, spec)
        ctx.n_outputs = outputs_all.shape[1]
        targets, rows = resolve_targets(target, outputs_all)
        if class_names is not None and len(class_names) != ctx.n_outputs:
            raise ValueError(f"class_names: got {len(class_names)} names for {ctx.n_outputs} outputs")
        refs = (References(ctx.token.baseline[:1], ctx.token.baseline[:1]) if token_input else
                _references(x, background, baseline, device, dtype, seed,
                            DEFAULT_SAMPLER_BACKGROUND_ROWS if spec.costly else DEFAULT_BACKGROUND_ROWS))
        if rows is not None:  # every class: one explained row per (input row, class)
            x, outputs_all, ctx = x[rows], outputs_all[rows], ctx.for_rows(rows)
        values, base, extras = _run(spec, ctx, x, targets, refs, batch_size, progress)
        explained = outputs_all.gather(1, targets[:, None])[:, 0]
        raw = outputs_all if output == "logit" else replace(ctx, output="logit").no_grad_outputs(x)
        probabilities = (torch.softmax(raw, 1) if raw.shape[1] > 1 else None)
        predictions = raw.argmax(1) if raw.shape[1] > 1 else raw[:, 0]
        quality = _quality(spec, ctx, x, targets, values, base, explained, extras, refs, checks)
    return Explanation(
        values=values.detach().cpu().numpy(), base_values=base.detach().cpu().double().numpy(),
        outputs=explained.detach().cpu().double().numpy(), targets=targets.cpu().numpy(),
        data=x.detach().cpu().numpy(), feature_names=names, method=method,
        params={"output": output, "batch_size": batch_size, "seed": seed, **params,
                "baseline": ("given" if baseline is not None and not isinstance(baseline, str)
                             else (baseline or "zeros")),
                "background_rows": len(refs.background)},
        output_kind=output, predictions=predictions.cpu().numpy(),
        probabilities=None if probabilities is None else probabilities.cpu().numpy(), quality=quality,
        class_names=list(class_names) if class_names is not None else None,
        tokens=ctx.token.strings if token_input else None,
        token_mask=ctx.token.valid.cpu().numpy() if token_input else None,
        rows=None if rows is None else rows.cpu().numpy(), explained=describe_target(target, ctx.n_outputs))


def _token_inputs(ctx: ExplainContext, x: torch.Tensor, baseline: Any, tokens: Any) -> TokenInputs:
    """The embedding that reads the ids, the reference ids, valid positions and token strings."""
    try:
        layer = find_embedding(ctx.model, x[:2], ctx.for_rows(slice(0, 2)).outputs)
    except OutputKeyError:
        raise
    except (RuntimeError, TypeError, IndexError) as err:
        sizes = [m.num_embeddings for m in ctx.model.modules() if isinstance(m, nn.Embedding)]
        if int(x.min()) < 0 or int(x.max()) >= max(sizes):
            raise ValueError(f"X: token ids must be in [0, {max(sizes) - 1}] (the embedding's size), got ids from "
                             f"{int(x.min())} to {int(x.max())}") from err
        raise ValueError(f"X: the model rejected token ids shaped {tuple(x.shape[1:])} "
                         f"({str(err).splitlines()[0]})") from err
    module = ctx.model.get_submodule(layer)
    vocab = getattr(module, "num_embeddings", None)
    if vocab is not None and (int(x.min()) < 0 or int(x.max()) >= vocab):
        raise ValueError(f"X: token ids must be in [0, {vocab - 1}] (the size of the embedding {layer!r}), "
                         f"got ids from {int(x.min())} to {int(x.max())}")
    strings, special = token_strings(tokens, x)
    valid = valid_positions(ctx.row_kwargs, x)
    return TokenInputs(layer, baseline_ids(baseline, x, ctx.model, module, special, valid), valid, strings)


def check_settings(spec: MethodSpec, params: dict[str, Any]) -> None:
    """A TypeError naming every setting ``spec`` does not take, the closest valid name, and the
    settings it does take (a misspelt ``n_step=`` would otherwise be ignored)."""
    unknown = [name for name in params if name not in spec.settings]
    if not unknown:
        return
    hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, spec.settings, 1))
             else name for name in unknown]
    raise TypeError(f"{spec.name}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                    f"its settings are {', '.join(spec.settings) if spec.settings else 'none'}")


def _run(spec: MethodSpec, ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References,
         batch_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    size = len(x) if not spec.chunked else batch_size
    starts = range(0, len(x), size)
    values: list[torch.Tensor] = []
    bases: list[torch.Tensor] = []
    extras: dict[str, list[Any]] = {}
    for start in tqdm(starts, desc=spec.name, unit="batch", disable=not progress or len(starts) < 2, leave=False):
        rows = x[start:start + size]
        if spec.gradients and ctx.token is None:  # our own copy: Captum would otherwise flip requires_grad
            rows = rows.detach().requires_grad_(True)
        adapter = spec.adapter_for(ctx.token is not None)
        result = adapter(ctx.for_rows(slice(start, start + size)), rows, targets[start:start + size], refs)
        values.append(result.values.detach())
        bases.append(result.base.detach().to(x.device).double().reshape(-1))
        for k, v in result.extras.items():
            extras.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else v)
    return torch.cat(values), torch.cat(bases), extras


def _quality(spec: MethodSpec, ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, values: torch.Tensor,
             base: torch.Tensor, explained: torch.Tensor, extras: dict, refs: References,
             checks: str) -> dict[str, Any]:
    key = "additivity" if spec.library == "shap" else "completeness"
    v, o, b = values.detach().cpu().double().numpy(), explained.cpu().double().numpy(), base.cpu().double().numpy()
    quality: dict[str, Any] = {key: q.completeness(v, o, b) if spec.additive else q.not_additive(spec.name)}
    if "n_steps" in extras:  # integrated gradients: the steps each row took (more where 50 missed)
        steps = torch.cat([s.reshape(-1) for s in extras["n_steps"]])
        quality[key]["n_steps_max"] = int(steps.max())
        quality[key]["rows_refined"] = int((steps > steps.min()).sum()) if len(steps) else 0
    if spec.refuses_incomplete and not quality[key]["passed"]:
        raise ValueError(
            f"{spec.name}: the attributions miss up to {100 * quality[key]['max_relative_gap']:.1f}% of the output "
            f"they explain, so the model has operations the {spec.name} rules do not see (functional activations "
            "such as F.relu inside forward, or other nonlinear operations); use integrated_gradients or shap_kernel")
    if len(o) > 1 and float(np.ptp(o)) <= 1e-9 * max(1.0, float(np.abs(o).max())):
        quality["constant_output"] = True  # the checks below compare rankings of nothing
    if checks == "none":
        return quality
    tokens = ctx.token is not None
    adapter = spec.adapter_for(tokens)
    continuous = ("token ids are discrete: this check perturbs the input continuously, which has no meaning "
                  "for them")
    if tokens:
        quality["infidelity"] = {"skipped": continuous}
    else:
        quality["infidelity"] = q.infidelity_check(ctx.outputs, x, values.to(x.dtype), targets, ctx.seed)
    if spec.sampling:  # the same rows again with another seed: how far the sample moves the values
        rows = slice(0, q.SAMPLING_ROWS)
        other = replace(ctx.for_rows(rows), progress=False, seed=ctx.seed + 1)
        with seeded(ctx.seed + 1):
            again = adapter(other, x[rows].detach().requires_grad_(spec.gradients and not tokens), targets[rows],
                            refs).values
        quality["sampling_error"] = q.sampling_error(v[rows], again.detach().cpu().double().numpy())
    if checks == "all" or not spec.costly:
        # several randomized copies, each on its share of the rows: one random draw alone moves the
        # mean rank correlation by +-0.2 on a trained MLP
        per = max(1, q.RANDOMIZATION_ROWS // q.RANDOMIZATION_COPIES)
        original, randomized, masks = [], [], []
        for k in range(q.RANDOMIZATION_COPIES):
            idx = torch.arange(k * per, (k + 1) * per, device=x.device) % len(x)
            with ModelGuard(q.randomized_copy(ctx.model, ctx.seed + k)) as clone:
                rctx = replace(ctx.for_rows(idx), model=clone, progress=False)
                randomized.append(adapter(rctx, x[idx], targets[idx], refs).values.detach().cpu().numpy())
            original.append(v[idx.cpu().numpy()])
            if tokens:
                masks.append(ctx.token.valid[idx].cpu().numpy())
        quality["randomization"] = (
            {"skipped": "the model's output does not vary over the rows explained"} if quality.get("constant_output")
            else q.randomization_check(np.concatenate(original), np.concatenate(randomized),
                                       np.concatenate(masks) if masks else None))
        if tokens:
            quality["sensitivity"] = {"skipped": continuous}
        elif spec.gradients or checks == "all":
            def rerun(inputs: torch.Tensor | tuple, target: torch.Tensor) -> tuple[torch.Tensor]:
                inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # Captum passes a tuple
                if target.numel() == 1 and len(inputs) > 1:  # Captum does not expand a one-row target
                    target = target.reshape(1).expand(len(inputs))
                with torch.enable_grad():  # sensitivity_max runs this under no_grad
                    return (spec.adapter(ctx, inputs, target, refs).values,)
            quality["sensitivity"] = q.sensitivity_check(rerun, x, targets, ctx.seed)
    else:
        quality["randomization"] = {"skipped": f"{spec.name} samples the model many times; pass checks='all'"}
    quality["trust"] = q.trust_note(quality)
    return quality


def explain_prediction(model: nn.Module | Callable, x: Any, method: str = "integrated_gradients",
                       **kwargs: Any) -> LocalExplanation:
    """Explain one input (a row of features, one image (C, H, W), or one row of token ids):
    prediction, probabilities, contributions sorted by magnitude, base value, and the attribution
    map. By default the predicted class is explained (``target=`` as in ``explain``)."""
    kwargs.setdefault("target", "predicted")
    if isinstance(x, pd.Series) and "feature_names" not in kwargs:
        kwargs["feature_names"] = [str(i) for i in x.index]  # a pandas Series: its index names the features
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x))
    tensor = x
    rows = kwargs.get("forward_kwargs") or {}
    if tensor.ndim in (1, 3):
        kwargs["forward_kwargs"] = {k: v[None] if isinstance(v, torch.Tensor | np.ndarray) and v.shape == tensor.shape
                                    else v for k, v in rows.items()} or None  # one row's mask gets its row axis
        tensor = tensor.unsqueeze(0)
    if len(tensor) != 1:
        raise ValueError(f"x: expected one input (a row or one image), got a batch of {len(tensor)}; use dg.explain")
    return explain(model, tensor, method, **kwargs).local(0)


@dataclass
class MethodComparison:
    """Several methods on the same rows: their explanations, global importances side by side, and
    how well their rankings agree (Spearman's and Kendall's rank correlations, and Spearman's with
    each feature weighted by its share of the importance, which the order of unused features
    does not decide)."""

    explanations: dict[str, Explanation]
    importance: pd.DataFrame
    agreement: pd.DataFrame


def compare_methods(model: nn.Module, X: Any,
                    methods: Sequence[str] = ("integrated_gradients", "shap_deep", "gradient_shap"),
                    **kwargs: Any) -> MethodComparison:
    """Run several methods on ``X`` and compare their global feature rankings. ``kwargs`` are
    ``explain``'s arguments; a method setting goes to the methods that take it."""
    from scipy.stats import kendalltau, spearmanr  # here: import diagnose does not load scipy
    if len(methods) < 2:
        raise ValueError("methods: expected at least two methods to compare")
    specs = [resolve_method(m) for m in methods]
    own = set(inspect.signature(explain).parameters) - {"params"}
    settings = {k: v for k, v in kwargs.items() if k not in own}
    unused = [k for k in settings if not any(k in spec.settings for spec in specs)]
    if unused:
        raise TypeError(f"compare_methods: no method of {', '.join(methods)} takes {', '.join(unused)}")
    shared = {k: v for k, v in kwargs.items() if k in own}
    explanations = {spec.name: explain(model, X, spec.name, **shared,
                                       **{k: v for k, v in settings.items() if k in spec.settings})
                    for spec in specs}
    first = next(iter(explanations.values()))
    if first.tokens is not None:  # token ids: the features are the token strings
        importance = pd.DataFrame({"feature": first.global_importance()["feature"]})
        for m, e in explanations.items():
            importance[m] = importance["feature"].map(e.global_importance().set_index("feature")["mean_abs"])
    else:
        importance = pd.DataFrame({"feature": first.feature_names})
        for m, e in explanations.items():
            importance[m] = np.abs(e.flat_values).mean(axis=0)
    rows = []
    for a, b in itertools.combinations(methods, 2):
        rows.append({"method_a": a, "method_b": b,
                     "spearman": float(spearmanr(importance[a], importance[b]).statistic),
                     "kendall": float(kendalltau(importance[a], importance[b]).statistic),
                     "weighted_spearman": q.weighted_rank_correlation(importance[a], importance[b])})
    return MethodComparison(explanations, importance, pd.DataFrame(rows))


__all__ = ["METHODS", "MethodComparison", "compare_methods", "explain", "explain_prediction"]
