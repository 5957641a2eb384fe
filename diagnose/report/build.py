"""Report data: a run (and optionally a model and data) turned into plain, format-free structures
the templates render. No HTML here: every string goes to Jinja2 with autoescape."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from diagnose.explain.api import compare_methods, explain
from diagnose.explain.registry import METHODS
from diagnose.explain.tokens import is_token_input
from diagnose.findings import RunData, evaluate
from diagnose.monitor.run import Run, load_run
from diagnose.monitor.statistics import histogram, statistic_plots
from diagnose.monitor.store import LAYER_STAT_COLUMNS, RunFileError
from diagnose.report import plots, svg

EXPLAIN_ROWS = 500      # rows explained for the global view
LOCAL_CASES = 4         # rows shown one by one


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in list(value.items())[:6])
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value[:8]) + (" ..." if len(value) > 8 else "")
    return str(value)


def _duration(meta: dict[str, Any], run: Run) -> str:
    """The run's wall time; for a run that never closed, at least the time from its start to the
    store's last write (the files' modification time)."""
    try:
        start = datetime.fromisoformat(meta["start_time"])
    except (KeyError, TypeError, ValueError):
        return "unknown (no start time was recorded)"
    try:
        seconds = (datetime.fromisoformat(meta["end_time"]) - start).total_seconds()
        return f"{seconds:.0f} s" if seconds >= 1 else "under 1 s (times are recorded to the second)"
    except (KeyError, TypeError, ValueError):
        pass
    written = [p.stat().st_mtime for p in run.paths if p.exists()]
    if not written:
        return "unknown (no end time was recorded)"
    seconds = max(written) - start.timestamp()
    return f"at least {max(seconds, 0.0):.0f} s (from its start to the last write)"


def recorded_steps(meta: dict[str, Any], data: RunData) -> str:
    """How many steps the run holds, in words: the writer's count, or for a run that never closed
    the steps recorded up to its last flush."""
    if meta.get("steps") is not None:
        return f"{meta['steps']} steps"
    last = data.scalars["step"].max() if len(data.scalars) else None
    last_stat = data.last_step
    known = [int(v) for v in (last, last_stat) if v is not None and v == v]
    return f"{max(known) + 1} steps recorded (to the last flush)" if known else "no steps recorded"


def _overhead(info: dict[str, Any]) -> str | None:
    """The watch's measured cost, in words."""
    measured, budget = info.get("measured"), info.get("budget")
    if measured is None:
        return None
    text = f"{100 * measured:.1f} % of the training steps' time, spent in its hooks"
    if budget is None:
        return text
    text += f" (budget {100 * budget:.0f} %, cadence every {info.get('every_at_end')} steps at the end)"
    share = info.get("every_step_share")
    if share is not None and share > budget:
        text += (f"; the every-step NaN/Inf checks alone cost {100 * share:.1f} %, over the budget: "
                 "a larger budget or track_nonfinite=False would meet it")
    return text


def shown_verdict(verdict: str, meta: dict[str, Any]) -> str:
    """The verdict a page shows: a run that did not finish is not called healthy."""
    return "no problems so far" if verdict == "healthy" and not meta.get("complete") else verdict


def summary(run: Run, data: RunData) -> dict[str, Any]:
    """Verdict, findings, final metrics and run metadata."""
    meta = data.meta
    evaluation = evaluate(data)
    scalars = data.scalars
    epoch_cols = [c for c in scalars.columns if c not in ("step", "rank", "loss")]
    final = {}
    restored = meta.get("restored_epoch")
    kept = (scalars[scalars["epoch"] == restored] if restored is not None and "epoch" in scalars
            else scalars.iloc[:0])
    for column in epoch_cols:
        values = (kept if len(kept) else scalars)[column].dropna()
        if len(values):
            final[column] = _fmt(float(values.iloc[-1]))
    final_caption = (f"epoch {restored}: the best epoch, whose weights early stopping restored (the model kept)"
                     if len(kept) else "the last logged values")
    optimizer = meta.get("optimizer") or {}
    model = meta.get("model") or {}
    verdict = shown_verdict(evaluation.verdict, meta)
    return {
        "verdict": verdict, "final_caption": final_caption,
        "findings": [{"severity": f.severity, "kind": f.kind, "layer": f.layer,
                      "steps": f"{f.steps[0]}-{f.steps[1]}" if f.steps else "", "message": f.message,
                      "support": f.support, "remedy": f.remedy,
                      "evidence": {k: _fmt(v) for k, v in f.evidence.items()
                                   if k not in ("supporting_steps", "judged_steps")}}
                     for f in evaluation.findings],
        "not_evaluated": [{"rule": rule, "why": why} for rule, why in evaluation.skipped],
        "final": final,
        "early_stopping": {"best_epoch": meta.get("best_epoch"), "stopped_epoch": meta.get("stopped_epoch")},
        "meta": {
            "complete": bool(meta.get("complete")), "state": run.state(meta), "steps": recorded_steps(meta, data),
            "source": meta.get("source"),
            "start": meta.get("start_time"), "end": meta.get("end_time", "-"), "duration": _duration(meta, run),
            "every": meta.get("every"), "world_size": meta.get("world_size", 1),
            "overhead": _overhead(meta.get("overhead") or {}),
            "optimizer": optimizer.get("name") or optimizer.get("class"),
            "hyperparameters": {k: _fmt(v) for k, v in (optimizer.get("hyperparameters") or {}).items()
                                if v is not None and k not in ("foreach", "differentiable", "fused", "capturable")},
            "versions": meta.get("versions", {}),
            "model_class": model.get("class"), "params": model.get("params"),
            "layers": model.get("layers", []),
            "first_nonfinite": meta.get("first_nonfinite"), "errors": meta.get("errors") or {},
        },
    }


SPARK_POINTS = 60  # points of a per-layer trend line
SPARK_NAMES = {"grad_norm": "gradient norm", "act_std": "activation std"}


def training(run: Run, data: RunData) -> dict[str, Any]:
    """Curves, heatmaps and the per-layer table. Reads only what it draws: the heatmaps' step bins
    are averaged inside the store, the table reads each layer's last values."""
    scalars = data.scalars
    out: dict[str, Any] = {"missing": [], "curves": None, "lr": None, "recorded_steps": 0, "downsampled": False,
                           "heatmaps": [], "layers": [], "columns": [], "ratio_lines": None}
    epochs = scalars.dropna(subset=["epoch"]) if "epoch" in scalars else pd.DataFrame()
    steps = data.loss if "loss" in scalars else None
    if len(epochs) or (steps is not None and len(steps)):
        out["curves"] = svg.training_curves(epochs, steps)
    else:
        out["missing"].append("No loss or epoch metrics were logged (run.log(loss=...)), so there are no curves.")
    if "val_loss" not in scalars:
        out["missing"].append("No validation loss was logged: overfitting cannot be judged.")
    if "lr" in scalars and scalars["lr"].notna().any():
        out["lr"] = _fmt(float(scalars["lr"].dropna().iloc[-1]))
    # layers in the order the forward pass runs them (recording order groups them by kind)
    forward = [name for name in data.meta.get("forward_order") or [] if name in set(data.layer_order)]
    order = forward + [name for name in data.layer_order if name not in set(forward)]
    if not order:
        out["missing"].append("No per-layer statistics were recorded.")
        return out
    heatmaps = statistic_plots()  # each registered statistic's per-layer plots
    tables, width = run.binned_layer_stats([c for c, _, _ in heatmaps], plots.MAX_POINTS, order=order)
    out["recorded_steps"] = data.recorded_steps
    out["downsampled"] = width > 1
    for column, title, log in heatmaps:
        table = tables.get(column)
        if table is None or not np.isfinite(table.to_numpy(dtype=float)).any():
            out["heatmaps"].append({"title": title, "uri": None, "note": f"{title}: not recorded for any layer"})
            continue
        out["heatmaps"].append({"title": title, "note": None, "uri": plots.data_uri(
            plots.heatmap(table, title, log, width, fraction=column.endswith("_frac")), palette=True)})
    ratio = tables.get("update_ratio")
    out["ratio_lines"] = (svg.update_ratio(ratio, plots.HEALTHY_UPDATE_RATIO, width)
                          if ratio is not None and np.isfinite(ratio.to_numpy(dtype=float)).any() else None)
    last = run.last_layer_values(LAYER_STAT_COLUMNS)
    for layer in order:
        spark_column = "grad_norm" if layer in tables.get("grad_norm", ()) else "act_std"
        recorded = layer in tables.get(spark_column, ())
        series = tables[spark_column][layer].dropna() if recorded else pd.Series(dtype=float)
        series = plots.downsample(series.to_frame(spark_column), SPARK_POINTS)[0][spark_column].tolist()
        out["layers"].append({
            "name": layer, "values": {c: _fmt(float(last.loc[layer, c])) for c in LAYER_STAT_COLUMNS if c in last},
            "spark": plots.sparkline(series), "spark_of": SPARK_NAMES.get(spark_column, spark_column)})
    out["columns"] = [c for c in LAYER_STAT_COLUMNS if c in last]
    return out


# Layers drawn per kind of histogram: the ones findings name first, then evenly spaced in forward order.
HISTOGRAM_LAYERS = 6


def pick_layers(layers: list[str], flagged: list[str], n: int) -> list[str]:
    """Up to ``n`` of ``layers``: those in ``flagged`` first (at most half), then evenly spaced
    (first and last included); returned in the order of ``layers``."""
    known = set(layers)
    chosen = [layer for layer in dict.fromkeys(flagged) if layer in known][: n // 2]
    rest = [layer for layer in layers if layer not in chosen]
    room = n - len(chosen)
    if room > 0 and rest:
        picks = np.unique(np.linspace(0, len(rest) - 1, min(room, len(rest))).round().astype(int))
        chosen += [rest[i] for i in picks]
    keep = set(chosen)
    return [layer for layer in layers if layer in keep]


def distributions(run: Run, data: RunData, flagged: list[str]) -> dict[str, Any] | None:
    """Each kind's histograms over time for a few layers (``HISTOGRAM_LAYERS``); None when the run
    recorded none."""
    position = {name: i for i, name in enumerate(data.meta.get("forward_order") or [])}
    kinds = []
    for kind in histogram.KINDS:
        recorded = run.histogram_layers(kind)
        if not recorded:
            continue
        ordered = sorted(recorded, key=lambda name: position.get(name, len(position)))
        chosen = pick_layers(ordered, flagged, HISTOGRAM_LAYERS)
        frames = [(layer, run.histograms(kind, layer)) for layer in chosen]
        steps = len(frames[0][1])
        kinds.append({"kind": kind, "title": histogram.KIND_TITLES[kind], "layers": len(recorded),
                      "shown": len(chosen), "steps": steps,
                      "uri": plots.data_uri(plots.histogram_panels(frames, histogram.KIND_TITLES[kind]),
                                            palette=True)})
    if not kinds:
        return None
    every = (data.meta.get("histograms") or {}).get("every")
    return {"kinds": kinds, "every": every, "max_layers": HISTOGRAM_LAYERS}


def _pick_cases(exp: Any, labels: np.ndarray | None) -> list[tuple[str, int]]:
    """Rows worth showing: a correct and a misclassified one (with labels), the most and the least
    confident."""
    cases: list[tuple[str, int]] = []
    one = slice(None) if exp.rows is None else np.flatnonzero(exp.targets == 0)  # one entry per input row
    if exp.probabilities is not None:
        confidence = exp.probabilities[one].max(axis=1)
        predictions = exp.predictions[one]
        if labels is not None:
            correct = np.flatnonzero(predictions == labels)
            wrong = np.flatnonzero(predictions != labels)
            if len(correct):
                cases.append(("correct", int(correct[np.argmax(confidence[correct])])))
            if len(wrong):
                cases.append(("misclassified", int(wrong[np.argmax(confidence[wrong])])))
        cases.append(("most confident", int(np.argmax(confidence))))
        cases.append(("least confident", int(np.argmin(confidence))))
    else:
        cases = [("first row", 0), ("largest output", int(np.argmax(exp.outputs)))]
    seen, unique = set(), []
    for name, i in cases:
        if i not in seen:
            seen.add(i)
            unique.append((name, i))
    return unique[:LOCAL_CASES]


def default_methods(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Two methods that suit the model: Grad-CAM for CNNs, DeepLIFT-SHAP where its rules apply,
    for token ids layer IG and the ablation of each token."""
    if is_token_input(model, x):
        return ["integrated_gradients", "feature_ablation"]
    if x.ndim == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return ["integrated_gradients", "grad_cam"]
    if not METHODS.get("shap_deep").refuses(model):
        return ["shap_deep", "integrated_gradients"]
    return ["integrated_gradients", "gradient_shap"]


def explanations(model: nn.Module, X: Any, labels: Any, feature_names: list[str] | None,
                 class_names: list[str] | None, methods: list[str] | None,
                 forward_kwargs: dict[str, Any] | None = None, tokens: Any = None,
                 scaler: Any = None) -> dict[str, Any]:
    """Global importance from several methods with their agreement, a beeswarm, local cases,
    image maps, highlighted text for token inputs, and the quality checks."""
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    n = len(x)
    # every class of a many-class model is explained: as many (row, class) pairs as rows otherwise
    classes = _n_classes(model, x[:2], _rows(forward_kwargs, n, slice(0, 2)))
    keep = EXPLAIN_ROWS // classes if classes > 2 else EXPLAIN_ROWS
    x = x[:keep]
    y = None if labels is None else np.asarray(torch.as_tensor(labels)[:keep])
    forward_kwargs = _rows(forward_kwargs, n, slice(0, keep))
    tokens = _rows({"t": tokens}, n, slice(0, keep))["t"] if isinstance(tokens, list | tuple) else tokens
    methods = methods or default_methods(model, x)
    extra: dict[str, Any] = {"forward_kwargs": forward_kwargs} if forward_kwargs else {}
    if tokens is not None:
        extra["tokens"] = tokens
    cmp = compare_methods(model, x, methods, feature_names=feature_names, class_names=class_names, **extra)
    # a method whose attributions do not add up is shown after those that do, and said to be
    # incomplete wherever it appears beside them
    incomplete = {m: _completeness(e.quality)["max_relative_gap"] for m, e in cmp.explanations.items()
                  if _completeness(e.quality).get("applies") and not _completeness(e.quality)["passed"]}
    methods = sorted(methods, key=lambda m: m in incomplete)
    first = cmp.explanations[methods[0]]
    text = first.tokens is not None
    image = x.ndim == 4
    importance = cmp.importance.sort_values(methods[0], ascending=False).reset_index(drop=True)
    out: dict[str, Any] = {
        "methods": methods, "rows": len(x), "output_kind": first.output_kind, "image": image,
        "explained": first.explained, "raw": scaler is not None and not text and not image,
        "incomplete": [{"method": m, "gap": f"{100 * g:.1f} %"} for m, g in incomplete.items()],
        "labels": {m: m + (" (incomplete)" if m in incomplete else "") for m in methods},
        "importance_plot": plots.data_uri(plots.importance_bars(importance, methods)) if not image else None,
        "importance": [{"feature": r["feature"], **{m: _fmt(float(r[m])) for m in methods}}
                       for _, r in importance.head(15).iterrows()],
        "agreement": [{k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
                      for row in cmp.agreement.to_dict("records")],
        "text": text,
        "beeswarm": None if image or text or first.rows is not None else plots.data_uri(
            plots.beeswarm(first.flat_values, first.data.reshape(len(x), -1), first.feature_names)),
        "quality": [], "cases": [], "maps": None,
    }
    for method in methods:
        q = cmp.explanations[method].quality
        comp = _completeness(q)
        out["quality"].append({
            "method": method,
            "gap": (f"{100 * comp['max_relative_gap']:.2g} % of the output difference (largest "
                    f"{_fmt(comp['max_abs_gap'])})" if comp.get("applies") else "not additive"),
            "infidelity": _fmt(q.get("infidelity", {}).get("mean", float("nan"))),
            "sensitivity": _fmt(q.get("sensitivity", {}).get("mean", float("nan"))),
            "randomization": _fmt(q.get("randomization", {}).get("mean_rank_correlation", float("nan"))),
            "trust": q.get("trust", "")})
    names = class_names

    def label(i: int | None) -> str:
        if i is None:
            return "-"
        return str(names[int(i)]) if names and 0 <= int(i) < len(names) else str(i)
    cases = _pick_cases(first, y)
    # single predictions explain each row's predicted class (the global view explains a fixed one)
    idx = [i for _, i in cases]
    case_extra: dict[str, Any] = {"forward_kwargs": _rows(forward_kwargs, len(x), idx)} if forward_kwargs else {}
    if tokens is not None:
        case_extra["tokens"] = _rows({"t": tokens}, len(x), idx)["t"] if isinstance(tokens, list | tuple) else tokens
    if not text:
        case_extra["background"] = x[:100]
    singles = {m: explain(model, x[idx], m, target="predicted", feature_names=feature_names, class_names=class_names,
                          checks="none", **case_extra)
               for m in (methods if image else methods[:1])}
    token_scale = float(np.abs(singles[methods[0]].values).max()) if text else None
    for k, (name, i) in enumerate(cases):
        local = singles[methods[0]].local(k)
        probabilities = None
        if local.probabilities is not None:
            top = np.argsort(-local.probabilities)[:3]
            probabilities = ", ".join(f"{label(k)}: {local.probabilities[k]:.3f}" for k in top)
        out["cases"].append({
            "name": name, "index": i, "prediction": label(int(local.prediction)) if first.probabilities is not None
            else _fmt(float(local.prediction)), "truth": label(y[i]) if y is not None else "-",
            "probabilities": probabilities, "output": _fmt(local.output), "base": _fmt(local.base_value),
            "contributions": contribution_rows(local, first.feature_names, None if text or image else scaler, 8),
            "plot": None if image or text else plots.data_uri(plots.contributions(local.contributions)),
            "tokens": highlighted(local, token_scale) if text else None,
        })
    if image:
        out["maps"] = {m: plots.data_uri(plots.image_maps(x[idx].numpy(), e.values,
                                                          [f"{n} ({label(e.predictions[k])})"
                                                           for k, (n, _) in enumerate(cases)]))
                       for m, e in singles.items()}
    return out


def _rows(kwargs: dict[str, Any] | None, n: int, index: slice | list[int]) -> dict[str, Any]:
    """The entries of ``kwargs`` that hold one item per row (of ``n``), cut to ``index``."""
    out: dict[str, Any] = {}
    for k, v in (kwargs or {}).items():
        if hasattr(v, "__len__") and not isinstance(v, str | dict) and len(v) == n:
            v = [v[i] for i in index] if isinstance(v, list | tuple) and isinstance(index, list) else v[index]
        out[k] = v
    return out


def _n_classes(model: nn.Module, x: torch.Tensor, forward_kwargs: dict[str, Any]) -> int:
    """The model's output width, from one forward pass on two rows in eval mode (restored)."""
    from diagnose.explain.context import ModelGuard, model_device_dtype, select_output, to_tensor
    device, dtype = model_device_dtype(model)
    inputs = x.to(device) if is_token_input(model, x) else to_tensor(x, "X", device, dtype)
    kwargs = {k: torch.as_tensor(np.asarray(v)).to(device) if hasattr(v, "__len__") and not isinstance(v, str)
              else v for k, v in forward_kwargs.items()}
    with torch.no_grad(), ModelGuard(model):
        try:
            return int(select_output(model(inputs, **kwargs), None).reshape(len(inputs), -1).shape[1])
        except Exception:  # noqa: BLE001 - the explain call below reports what is wrong with the model
            return 1


def contribution_rows(local: Any, feature_names: list[str] | None, scaler: Any, top: int) -> list[dict[str, str]]:
    """A single prediction's top contributions for a table: the value in raw units when the
    standardisation is known (the standardised one beside it), else as the model saw it."""
    from diagnose.monitor.artifacts import scaler_arrays
    arrays = scaler_arrays(scaler) if scaler is not None else None
    index = {name: i for i, name in enumerate(feature_names or [])}
    rows = []
    for r in local.contributions.head(top).itertuples():
        value = _fmt(float(r.value))
        j = index.get(r.feature)
        if arrays is not None and j is not None and j < len(arrays[0]):
            value = f"{_fmt(float(r.value) * arrays[1][j] + arrays[0][j])} ({value})"
        rows.append({"feature": str(r.feature), "value": value, "attribution": _fmt(float(r.attribution))})
    return rows


def _completeness(quality: dict[str, Any]) -> dict[str, Any]:
    return quality.get("completeness") or quality.get("additivity") or {}


def highlighted(local: Any, scale: float | None = None) -> list[dict[str, str]]:
    """A token explanation as text: each token shaded by its attribution relative to ``scale``
    (default the row's largest; the report passes the largest over the rows it shows, so a row
    of negligible attributions stays pale). Red raises the explained output, blue lowers it, as in
    shap's text plot."""
    by_position = local.contributions.sort_values("position")
    largest = scale if scale is not None else (float(by_position["attribution"].abs().max())
                                               if len(by_position) else 0.0)
    spans = []
    for r in by_position.itertuples():
        a = float(r.attribution)
        alpha = abs(a) / largest if largest > 0 else 0.0
        rgb = "220,38,38" if a > 0 else "37,99,235"
        spans.append({"text": str(r.feature), "colour": f"rgba({rgb},{alpha:.2f})",
                      "title": f"position {int(r.position)}: {a:+.4g}"})
    return spans


def preflight(result: Any) -> dict[str, Any]:
    """The preflight checks: findings (most severe first), what each check saw, the LR curve."""
    curve = result.lr_curve
    seen = {
        "data": "data: {rows} rows, {features} features read".format(**result.checks["data"])
        if "data" in result.checks else None,
        "init_loss": "loss at initialisation {:.4g} (expected about {})".format(
            result.checks["init_loss"]["loss"], _fmt(result.checks["init_loss"].get("expected", float("nan"))))
        if "init_loss" in result.checks else None,
        "overfit_one_batch": "one batch of {rows} overfit in {steps} steps ({initial:.3g} to {final:.3g})".format(
            **result.checks["overfit_one_batch"]) if result.checks.get("overfit_one_batch", {}).get("reached")
        else None,
        "label_signal": "held-out loss after {steps} steps {held_out_loss:.3g} against {constant_loss:.3g} for the "
                        "label frequencies".format(**result.checks["label_signal"])
        if "label_signal" in result.checks else None,
        "batch_independence": result.checks.get("batch_independence", {}).get("note"),
    }
    return {
        "findings": [{"severity": f.severity, "kind": f.kind, "layer": f.layer, "message": f.message,
                      "remedy": f.remedy} for f in result],
        "seen": [v for v in seen.values() if v],
        "seconds": _fmt(float(result.seconds)),
        "lr_plot": svg.lr_range(curve) if curve and curve.get("suggested") else None,
    }


def consistency(result: Any) -> dict[str, Any]:
    """Explanations of retrained models side by side: the verdict, the pairwise rank agreement,
    the per-row sign agreement, and the importances of the least stable features."""
    s = result.summary()
    names = list(result.rank_agreement.index)
    sign = result.sign_agreement["sign_agreement"].to_numpy(dtype=float)
    unstable = result.importance.set_index("feature").loc[s["least_stable_features"]]
    first = next(iter(result.explanations.values()))
    return {
        "text": s["text"], "consistent": s["consistent"], "models": names,
        "method": first.method, "explained": first.explained, "rows": first.n_rows,
        "rank": [{"name": a, "values": [_fmt(float(result.rank_agreement.loc[a, b])) for b in names]} for a in names],
        "sign": {"mean": _fmt(s["sign_agreement_mean"]), "min": _fmt(s["sign_agreement_min"]),
                 "q10": _fmt(float(np.nanquantile(sign, 0.1))) if np.isfinite(sign).any() else "n/a"},
        "unstable": [{"feature": f, "spread": _fmt(float(result.rank_spread[f])),
                      "values": [_fmt(float(unstable.loc[f, m])) for m in names]} for f in unstable.index],
    }


# Best trials whose recorded run the tuning section reads (its findings' verdict).
TUNING_RUNS_READ = 5


def _trial_health(run_dir: Path, relative_to: Path | None) -> dict[str, Any]:
    """A trial's recorded run: its verdict and findings count, and a link to it."""
    try:
        run = load_run(run_dir)
    except (FileNotFoundError, RunFileError, ValueError) as err:
        return {"verdict": None, "note": f"run unreadable ({err})", "href": None, "path": str(run_dir)}
    data = RunData.from_run(run)
    evaluation = evaluate(data)
    href = os.path.relpath(run_dir, relative_to) if relative_to is not None else str(run_dir)
    return {"verdict": shown_verdict(evaluation.verdict, data.meta), "note": f"{len(evaluation.findings)} finding"
            + ("" if len(evaluation.findings) == 1 else "s"), "href": href, "path": str(run_dir)}


def _trial_history(result: Any, number: int) -> pd.DataFrame | None:
    """A trial's per-epoch metrics: kept in memory by the process that ran it, else read from its
    recorded run (another worker's trial)."""
    history = result.histories.get(number)
    if history is None and number in result.run_dirs:
        try:
            scalars = load_run(result.run_dirs[number]).scalars()
        except (FileNotFoundError, RunFileError, ValueError):
            return None
        history = scalars.dropna(subset=["epoch"]) if "epoch" in scalars else None
    return history


def tuning(result: Any, out_dir: Path | None = None, compare_page: str | None = None) -> dict[str, Any]:
    """The hyperparameter search: trial history, importances, the best trials (with their recorded
    runs' health, linked relative to ``out_dir``), the best's curves."""
    trials = result.trials
    param_cols = result.param_names
    top = result.best_trials(10)
    best_number = int(top.iloc[0]["number"])
    history = _trial_history(result, best_number)
    runs = result.run_dirs
    health = {int(n): _trial_health(runs[int(n)], out_dir) for n in top["number"][:TUNING_RUNS_READ]
              if int(n) in runs}
    return {
        "direction": result.direction, "best_value": _fmt(result.best_value),
        "best_params": {k: _fmt(v) for k, v in result.best_params.items()},
        "counts": trials["state"].value_counts().to_dict(),
        "history": svg.trial_history(trials, result.direction),
        "importances": plots.data_uri(plots.importances(result.importances)) if result.importances else None,
        "columns": param_cols,
        "top": [{"number": int(r["number"]), "value": _fmt(float(r["value"])), "health": health.get(int(r["number"])),
                 **{c: _fmt(r[c]) for c in param_cols}} for _, r in top.iterrows()],
        "with_runs": bool(health),
        "pruned": [{"number": int(r["number"]), "reason": r["prune_reason"] or "pruned by the median rule"}
                   for _, r in trials[trials["state"] == "PRUNED"].head(10).iterrows()],
        "best_curves": svg.training_curves(history, None) if history is not None and len(history) else None,
        "best_number": best_number,
        "compare_page": compare_page,
    }
