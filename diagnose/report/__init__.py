"""The HTML report: one self-contained page (inline CSS, embedded images, no external URL) on a
run's training health and, given a model and data, its explanations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import torch
from torch import nn

from diagnose.explain.api import explain
from diagnose.explain.tokens import is_token_input
from diagnose.findings import RunData
from diagnose.monitor import artifacts
from diagnose.monitor.run import Run, load_run
from diagnose.report import build

log = logging.getLogger(__name__)

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("diagnose", "report/templates"),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _inputs(run: Run, model: nn.Module | None, data: Any, labels: Any, feature_names: Any,
            class_names: Any, scaler: Any = None) -> tuple[nn.Module | None, Any, Any, Any, Any, list[str], Any]:
    """Model and data for the explanations: given, or saved with the run; and what is missing."""
    missing = []
    try:
        sample = artifacts.load_sample(run.run_dir)
    except ValueError as err:  # a damaged sample costs the explanations, not the report
        sample = None
        missing.append(f"The data sample saved with the run cannot be used: {err}")
    if model is None and artifacts.has_model(run.run_dir):
        try:
            model = artifacts.load_model(run.run_dir)
        except ValueError as err:
            missing.append(f"The model saved with the run cannot be rebuilt: {err}")
    if data is None and sample is not None:
        data, labels = sample["X"], sample["y"] if labels is None else labels
        scaler = scaler if scaler is not None else sample.get("feature_scaler")
    if sample is not None:
        feature_names = feature_names or sample["feature_names"]
        class_names = class_names or sample["class_names"]
    if model is None or data is None:
        missing.append("No model and data were given or saved with the run, so there are no explanations "
                       "(pass model= and data=, or record with save_model=True).")
        return None, None, None, feature_names, class_names, missing, None
    return model, data, labels, feature_names, class_names, missing, scaler


def _version() -> str:
    from diagnose import __version__
    return __version__


def report(run_dir: str | Path, model: nn.Module | None = None, data: Any = None, feature_names: Any = None,
           class_names: Any = None, out: str | Path | None = None, labels: Any = None,
           methods: list[str] | None = None, tuning: Any = None, forward_kwargs: dict[str, Any] | None = None,
           tokens: Any = None, consistency: Any = None, preflight: Any = None,
           feature_scaler: Any = None) -> Path:
    """Write the HTML report of a recorded run; returns its path.

    Args:
        run_dir: the run directory (``dg.watch`` / ``dg.Trainer`` wrote it).
        model, data: explain the model on these inputs (default: what was saved with the run).
        labels: true targets of ``data``, to pick correct and misclassified examples.
        feature_names, class_names: names to show (default: saved with the run).
        out: the HTML file (default ``reports/<run name>.html``).
        methods: attribution methods to compare (default: two that suit the model).
        tuning: a ``dg.TuneResult`` to add as a hyperparameter-search section.
        forward_kwargs, tokens: for token-id ``data``, as in ``dg.explain`` (an attention mask per
            row; the token strings or tokenizer): single predictions are then shown as highlighted text.
        consistency: a ``dg.explanation_consistency`` result to add as a section (retrained models'
            explanations compared).
        feature_scaler: how ``data``'s features were standardised (a fitted StandardScaler or a
            (mean, scale) pair; default: saved with the run): single predictions show raw values.
        preflight: a ``dg.preflight`` result to show first (default: the one saved in ``run_dir``
            by ``dg.preflight(..., run_dir=)``, if any).
    """
    run = load_run(run_dir)
    if preflight is None:
        from diagnose.preflight import load as load_preflight
        preflight = load_preflight(run_dir)
    out = Path(out) if out is not None else Path("reports") / f"{Path(run_dir).resolve().name}.html"
    model, data, labels, feature_names, class_names, missing, scaler = _inputs(
        run, model, data, labels, feature_names, class_names, feature_scaler)
    recorded = RunData.from_run(run)  # read once: findings, summary and curves share it
    summary = build.summary(run, recorded)
    training = build.training(run, recorded)
    distributions = build.distributions(run, recorded, [f["layer"] for f in summary["findings"] if f["layer"]])
    if not summary["meta"]["complete"]:
        missing.insert(0, f"The run is {summary['meta']['state']}: the report shows what was recorded up to "
                          "its last flush.")
    explanations = None
    if model is not None:
        with torch.random.fork_rng():
            explanations = build.explanations(model, data, labels, feature_names, class_names, methods,
                                              forward_kwargs, tokens, scaler)
    html = _ENV.get_template("report.html.j2").render(
        title=f"diagnose report: {Path(run_dir).resolve().name}", run_dir=str(run_dir), summary=summary,
        training=training, distributions=distributions, explanations=explanations,
        missing=missing + training["missing"],
        tuning=build.tuning(tuning, out.parent, _best_trials_page(tuning, out)) if tuning is not None else None,
        consistency=build.consistency(consistency) if consistency is not None else None,
        preflight=build.preflight(preflight) if preflight is not None else None,
        version=_version())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    log.info("report written to %s (%d bytes)", out, len(html))
    return out


def _best_trials_page(tuning: Any, out: Path) -> str | None:
    """Where the tuned trials recorded their runs: the best three's comparison page beside the
    report (``<report>-best-trials.html``), its name for the link; None without two such runs."""
    try:
        from diagnose.report.compare import compare_trials
        page = compare_trials(tuning, 3, out=out.with_name(out.stem + "-best-trials.html"))
    except ValueError:
        return None
    return page.name


def prediction_page(run_dir: str | Path, index: int, out: str | Path | None = None, model: nn.Module | None = None,
                    method: str | None = None) -> tuple[Path, Any]:
    """Explain one saved row of a run: write a single-prediction HTML page; returns (path, LocalExplanation)."""
    run = load_run(run_dir)
    model, data, labels, feature_names, class_names, missing, scaler = _inputs(run, model, None, None, None, None)
    if model is None:
        raise ValueError("run_dir: " + " ".join(missing))
    x = torch.as_tensor(data)
    if not 0 <= index < len(x):
        raise ValueError(f"index: expected a row in [0, {len(x) - 1}] of the saved sample, got {index}")
    method = method or build.default_methods(model, x)[0]
    local = explain(model, x[index:index + 1], method, background=None if is_token_input(model, x) else x[:100],
                    feature_names=feature_names, class_names=class_names, target="predicted").local(0)
    truth = None if labels is None else int(np.asarray(labels)[index])
    def label(i: int) -> str:
        return class_names[i] if class_names and 0 <= i < len(class_names) else str(i)
    out = Path(out) if out is not None else Path("reports") / f"{Path(run_dir).resolve().name}-row{index}.html"
    html = _ENV.get_template("prediction.html.j2").render(
        title=f"prediction {index} of {Path(run_dir).resolve().name}", index=index, method=method,
        prediction=label(int(local.prediction)) if local.probabilities is not None else f"{local.prediction:.4g}",
        truth=label(truth) if truth is not None else "-",
        probabilities=([(label(k), f"{p:.3f}") for k, p in enumerate(local.probabilities)]
                       if local.probabilities is not None else []),
        output=f"{local.output:.4g}", base=f"{local.base_value:.4g}", output_kind=local.output_kind,
        contributions=build.contribution_rows(local, feature_names, scaler, 20),
        raw=scaler is not None,
        plot=None if x.ndim == 4 or local.tokens is not None
        else build.plots.data_uri(build.plots.contributions(local.contributions)),
        tokens=build.highlighted(local) if local.tokens is not None else None,
        image=build.plots.data_uri(build.plots.image_maps(x[index:index + 1].numpy(), local.attribution_map[None],
                                                          [f"row {index}"])) if x.ndim == 4 else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out, local
