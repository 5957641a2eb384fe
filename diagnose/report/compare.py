"""``dg.compare``: one self-contained page comparing recorded runs: their curves overlaid, final
and best metrics, the configuration that differs, each run's findings side by side, and the same
layer's statistics across runs. Runs with different layers are compared on the layers they share,
and the page says which are not shared."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diagnose.findings import RunData, evaluate
from diagnose.monitor.run import Run, load_run
from diagnose.report import plots, svg
from diagnose.report.build import _duration, _fmt, recorded_steps, shown_verdict

# Statistics drawn per shared layer (one line per run), and how many shared layers are drawn.
LAYER_STATISTICS = (("grad_norm", "gradient norm"), ("update_ratio", "update / weight ratio"))
SHARED_LAYERS_DRAWN = 3
# Metadata that describes how a run was trained (compared across runs), flattened to "a.b" keys.
CONFIG_KEYS = ("optimizer", "loss", "regularizers", "early_stopping", "grad_clip", "scheduler", "epochs",
               "batch_size", "n_train", "seed", "every", "overhead_budget", "model", "world_size", "source")
HIDDEN_HYPERPARAMETERS = ("foreach", "differentiable", "fused", "capturable", "param_groups")


def _names(run_dirs: list[Path], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(run_dirs) or len(set(names)) != len(names):
            raise ValueError(f"names: expected {len(run_dirs)} distinct names, one per run, got {list(names)}")
        return [str(n) for n in names]
    short = [p.resolve().name for p in run_dirs]
    if len(set(short)) == len(short):
        return short
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in run_dirs]


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in HIDDEN_HYPERPARAMETERS or k == "layers":
                continue
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return  # per-group lists repeat the hyperparameters
    else:
        out[prefix] = _fmt(value) if value is not None else "-"


def configuration(metas: list[dict[str, Any]]) -> pd.DataFrame:
    """Setting x run: the training configuration of each run, and whether the runs differ on it."""
    flat = []
    for meta in metas:
        row: dict[str, str] = {}
        for key in CONFIG_KEYS:
            if key in meta:
                _flatten(meta[key], key, row)
        flat.append(row)
    keys = list(dict.fromkeys(k for row in flat for k in row))
    frame = pd.DataFrame({i: [row.get(k, "n/a") for k in keys] for i, row in enumerate(flat)}, index=keys)
    frame["differs"] = frame.nunique(axis=1) > 1
    return frame


def _metrics(data: RunData, meta: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per epoch metric: the last value, the best (lowest loss, highest accuracy/other) and its epoch."""
    scalars = data.scalars
    if "epoch" not in scalars:
        return {}
    epochs = scalars.dropna(subset=["epoch"])
    out = {}
    for column in [c for c in epochs.columns if c not in ("step", "rank", "epoch", "loss", "lr")]:
        values = epochs[["epoch", column]].dropna()
        if values.empty:
            continue
        lower = "loss" in column
        best = values.loc[values[column].idxmin() if lower else values[column].idxmax()]
        out[column] = {"last": _fmt(float(values[column].iloc[-1])), "best": _fmt(float(best[column])),
                       "best_epoch": str(int(best["epoch"]))}
    return out


def _curves(datas: list[RunData], names: list[str]) -> list[str]:
    """Per-epoch metrics (a chart each) and the smoothed per-step loss, a line per run."""
    frames = [d.scalars.dropna(subset=["epoch"]) if "epoch" in d.scalars else pd.DataFrame() for d in datas]
    charts = []
    for metric in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        series = [svg.Series(name, frame["epoch"].tolist(), frame[metric].tolist())
                  for frame, name in zip(frames, names, strict=True) if metric in frame and frame[metric].notna().any()]
        if series:
            charts.append(svg.render(svg.Chart(series, title=metric.replace("_", " "), xlabel="epoch",
                                               integer_x=True)))
    series = []
    for loss, name in zip((d.loss for d in datas), names, strict=True):
        if loss is not None and len(loss):
            binned, _ = plots.downsample(loss.ewm(alpha=0.05).mean().to_frame("loss"))
            series.append(svg.Series(name, binned.index.tolist(), binned["loss"].tolist()))
    if series:
        charts.append(svg.render(svg.Chart(series, title="training loss per step (smoothed)", xlabel="step")))
    return [c for c in charts if c]


def _shared_layers(runs: list[Run], metas: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """The layers every run recorded (in the first run's forward order), and per run the others."""
    def ordered(recorded: list[str], meta: dict[str, Any]) -> list[str]:
        forward = [n for n in meta.get("forward_order") or [] if n in set(recorded)]
        return forward + [n for n in recorded if n not in set(forward)]
    layer_sets = [ordered(r.layer_names(), m) for r, m in zip(runs, metas, strict=True)]
    first = layer_sets[0]
    shared = [n for n in first if all(n in set(s) for s in layer_sets[1:])]
    others = {i: [n for n in s if n not in set(shared)] for i, s in enumerate(layer_sets)}
    return shared, {str(i): v for i, v in others.items()}


def _layer_charts(runs: list[Run], names: list[str], layers: list[str]) -> list[str]:
    """For each drawn shared layer, each statistic over the steps, a line per run (log scale)."""
    if not layers:
        return []
    columns = [c for c, _ in LAYER_STATISTICS]
    tables = [r.binned_layer_stats(columns, plots.MAX_POINTS, order=layers)[0] for r in runs]
    charts = []
    for layer in layers:
        for column, title in LAYER_STATISTICS:
            series = []
            for table, name in zip(tables, names, strict=True):
                frame = table.get(column)
                if frame is not None and layer in frame and (frame[layer] > 0).any():
                    series.append(svg.Series(name, frame.index.tolist(), frame[layer].tolist()))
            if series:
                band = plots.HEALTHY_UPDATE_RATIO if column == "update_ratio" else None
                charts.append(svg.render(svg.Chart(series, title=f"{layer}: {title}", xlabel="step", log_y=True,
                                                   band=band, band_label="healthy band" if band else "")))
    return [c for c in charts if c]


def _pick(layers: list[str], count: int) -> list[str]:
    """First, middle and last (evenly spaced) of the shared layers."""
    if len(layers) <= count:
        return layers
    return [layers[i] for i in np.unique(np.linspace(0, len(layers) - 1, count).round().astype(int))]


def compare(run_dirs: Sequence[str | Path], out: str | Path | None = None,
            names: Sequence[str] | None = None) -> Path:
    """Write one self-contained HTML page comparing two or more recorded runs; returns its path.

    Args:
        run_dirs: the run directories (``dg.watch`` / ``dg.Trainer`` wrote them).
        out: the HTML file (default ``reports/compare.html``).
        names: a label per run (default: the directories' names).
    """
    from diagnose.report import _ENV, _version
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        raise ValueError(f"run_dirs: a comparison needs at least two runs, got {len(paths)}")
    labels = _names(paths, names)
    runs = [load_run(p) for p in paths]
    datas = [RunData.from_run(r) for r in runs]
    metas = [d.meta for d in datas]
    evaluations = [evaluate(d) for d in datas]
    config = configuration(metas)
    metrics = [_metrics(d, m) for d, m in zip(datas, metas, strict=True)]
    metric_names = list(dict.fromkeys(k for m in metrics for k in m))
    shared, others = _shared_layers(runs, metas)
    drawn = _pick(shared, SHARED_LAYERS_DRAWN)
    curves = _curves(datas, labels)
    layer_charts = _layer_charts(runs, labels, drawn)
    page = _ENV.get_template("compare.html.j2").render(
        title=f"diagnose comparison of {len(runs)} runs", names=labels, dirs=[str(p) for p in paths],
        runs=[{"name": n, "state": r.state(m), "steps": recorded_steps(m, d), "duration": _duration(m, r),
               "verdict": shown_verdict(e.verdict, m),
               "findings": [{"severity": f.severity, "kind": f.kind, "layer": f.layer, "message": f.message,
                             "remedy": f.remedy} for f in e.findings]}
              for n, r, m, d, e in zip(labels, runs, metas, datas, evaluations, strict=True)],
        metric_names=metric_names, metrics=metrics,
        config=[{"key": key, "values": [row[i] for i in range(len(runs))], "differs": bool(row["differs"])}
                for key, row in config.iterrows()],
        curves=curves, layers=layer_charts, drawn=drawn, shared=len(shared),
        not_shared=[{"name": labels[int(i)], "layers": v} for i, v in others.items() if v],
        version=_version())
    out = Path(out) if out is not None else Path("reports") / "compare.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def compare_trials(result: Any, k: int = 3, out: str | Path | None = None) -> Path:
    """The comparison page of a tuning study's ``k`` best trials' recorded runs
    (``tune_trainer(run_dir=...)``); a ValueError when fewer than two have one."""
    dirs = result.best_run_dirs(k)
    if len(dirs) < 2:
        raise ValueError("result: a comparison needs two complete trials with a recorded run; pass run_dir= to "
                         f"tune_trainer (this study has {len(dirs)})")
    return compare(dirs, out=out)


def compare_optimizers(model_fn: Any, train: Any, val: Any = None, *, run_dir: str | Path | None = None,
                       out: str | Path | None = None, **kwargs: Any) -> Any:
    """``dg.compare_optimizers``: train the model under each optimizer from the same start (see
    ``diagnose.trainer.compare.compare_optimizers``); with ``run_dir``, each run is recorded there
    and the comparison page written (``out``, default ``run_dir/compare.html``): ``result.page``."""
    from diagnose.trainer.compare import RecordedComparison
    from diagnose.trainer.compare import compare_optimizers as train_each
    result = train_each(model_fn, train, val, run_dir=run_dir, **kwargs)
    if run_dir is not None and isinstance(result, RecordedComparison):
        result.page = compare(list(result.run_dirs.values()), out=out or Path(run_dir) / "compare.html",
                              names=list(result.run_dirs))
    elif out is not None:
        raise ValueError("out: the comparison page needs the runs recorded; pass run_dir= too")
    return result


__all__ = ["compare", "compare_optimizers", "configuration"]
