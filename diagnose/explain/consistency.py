"""Consistency of explanations across retrained models: the same method on the same rows for
models that differ only by their fold or seed. An explanation that changes with the seed says
more about the training run than about the data (the third of fidelity, stability, consistency).

- rank agreement: Spearman's rank correlation of the global importances (mean |attribution| per
  feature) for every pair of models, each feature weighted by its share of the pair's importance:
  with 5 informative features among 100, plain Spearman is decided by the order of 95 features no
  model uses (noise), the weighted one by the features the models rely on. Plain Spearman is kept
  as ``spearman``;
- sign agreement per row: the share of model pairs whose attributions have the same sign, over
  the row's features, weighted by the features' mean |attribution| (a feature no model uses does
  not count against them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from diagnose.explain.api import explain
from diagnose.explain.explanation import Explanation
from diagnose.explain.quality import weighted_rank_correlation

# Mean rank agreement below which the summary says the importances depend on the training run.
RANK_AGREEMENT_LOW = 0.7
# Mean sign agreement below which the summary says the directions of the effects do.
SIGN_AGREEMENT_LOW = 0.8


@dataclass
class ExplanationConsistency:
    """Explanations of several models on the same rows, and how far they agree.

    Attributes:
        explanations: one per model, by name.
        importance: feature x model mean |attribution| (features every model has).
        rank_agreement: model x model importance-weighted Spearman correlation (1 on the diagonal).
        spearman: the same, unweighted.
        sign_agreement: one row per explained row (``row``, ``target``, ``sign_agreement`` in [0, 1]).
        rank_spread: per feature, the standard deviation of its rank across the models.
        feature_sign_agreement: per feature, the share of model pairs whose signs agree, over the
            rows, weighted by the attribution.
    """

    explanations: dict[str, Explanation]
    importance: pd.DataFrame
    rank_agreement: pd.DataFrame
    sign_agreement: pd.DataFrame
    rank_spread: pd.Series
    spearman: pd.DataFrame
    feature_sign_agreement: pd.Series

    def summary(self) -> dict[str, Any]:
        """The headline numbers and a sentence: mean and lowest pairwise rank agreement, mean and
        lowest per-row sign agreement, the least stable features."""
        names = list(self.rank_agreement.index)
        pairs = [float(self.rank_agreement.loc[a, b]) for a, b in itertools.combinations(names, 2)]
        rank_mean, rank_min = float(np.mean(pairs)), float(np.min(pairs))
        sign = self.sign_agreement["sign_agreement"].to_numpy(dtype=float)
        sign_mean = float(np.nanmean(sign)) if np.isfinite(sign).any() else float("nan")
        # unstable: a rank that moves (relative to the feature count) or signs that disagree
        score = self.rank_spread / max(1, len(self.rank_spread)) + (1 - self.feature_sign_agreement.fillna(1.0))
        unstable = list(score[score > 1e-9].sort_values(ascending=False, kind="stable").head(3).index)
        verdict = []
        if rank_mean < RANK_AGREEMENT_LOW:
            verdict.append(f"the feature ranking depends on the training run (mean Spearman {rank_mean:.2f} "
                           f"across {len(names)} models)")
        if np.isfinite(sign_mean) and sign_mean < SIGN_AGREEMENT_LOW:
            verdict.append(f"the direction of the effects depends on it (signs agree for {100 * sign_mean:.0f}% "
                           "of the attribution mass)")
        text = ("Consistent: " + f"the {len(names)} models rank the features alike (mean Spearman {rank_mean:.2f}) "
                f"and agree on the signs ({100 * sign_mean:.0f}% of the attribution mass)." if not verdict
                else "Not consistent: " + "; ".join(verdict) + f". Least stable features: {', '.join(unstable)}.")
        if not verdict and unstable:
            text += f" Least stable features: {', '.join(unstable)}."
        return {"models": len(names), "rank_agreement_mean": rank_mean, "rank_agreement_min": rank_min,
                "sign_agreement_mean": sign_mean,
                "sign_agreement_min": float(np.nanmin(sign)) if np.isfinite(sign).any() else float("nan"),
                "least_stable_features": unstable, "consistent": not verdict, "text": text}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"ExplanationConsistency({s['models']} models: rank agreement {s['rank_agreement_mean']:.2f} "
                f"(min {s['rank_agreement_min']:.2f}), sign agreement {s['sign_agreement_mean']:.2f})")


def _named_models(models: Any) -> dict[str, nn.Module]:
    if hasattr(models, "models") and not isinstance(models, nn.Module):  # a dg.cross_validate result
        if not models.models:
            raise ValueError("models: this cross-validation kept no models (run it with keep_models=True)")
        return {f"fold{i}": m for i, m in enumerate(models.models)}
    if isinstance(models, Mapping):
        named = {str(k): v for k, v in models.items()}
    elif isinstance(models, Sequence) and not isinstance(models, str | nn.Module):
        named = {f"model{i}": m for i, m in enumerate(models)}
    else:
        raise TypeError(f"models: expected a list or dict of models, or a dg.cross_validate result, "
                        f"got {type(models).__name__}")
    bad = [k for k, m in named.items() if not isinstance(m, nn.Module) and not callable(m)]
    if bad:
        raise TypeError(f"models: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not an nn.Module or callable")
    if len(named) < 2:
        raise ValueError(f"models: consistency needs at least two models, got {len(named)}")
    return named


def explanation_consistency(models: Any, X: Any, method: str = "integrated_gradients",
                            **explain_kwargs: Any) -> ExplanationConsistency:
    """Explain ``X`` with each model (same method, references, target and seed) and measure how
    far their explanations agree. ``models``: a list or dict of models (seeds, folds), or the
    result of ``dg.cross_validate(..., keep_models=True)``; ``explain_kwargs`` go to ``dg.explain``.

    A target of ``"predicted"`` is refused: the models would explain different classes."""
    named = _named_models(models)
    if isinstance(explain_kwargs.get("target"), str) and explain_kwargs["target"] == "predicted":
        raise ValueError("target: 'predicted' lets each model explain its own class; pass a class (or None)")
    explain_kwargs.setdefault("checks", "none")
    explanations = {name: explain(model, X, method, **explain_kwargs) for name, model in named.items()}
    first = next(iter(explanations.values()))
    for name, exp in explanations.items():
        if exp.values.shape != first.values.shape or not np.array_equal(exp.targets, first.targets):
            raise ValueError(f"models: {name} explains outputs shaped {exp.values.shape} for classes "
                             f"{sorted(set(exp.targets.tolist()))[:5]}, the first model {first.values.shape} for "
                             f"{sorted(set(first.targets.tolist()))[:5]}; the models must have the same outputs")
    importance = pd.concat({name: exp.global_importance().set_index("feature")["mean_abs"]
                            for name, exp in explanations.items()}, axis=1, join="inner")
    ranks = importance.rank(ascending=False)
    spearman = ranks.corr(method="pearson")  # Pearson of ranks: Spearman's, ties averaged
    rank_agreement = pd.DataFrame(np.eye(len(named)), index=list(named), columns=list(named))
    for a, b in itertools.combinations(named, 2):
        rank_agreement.loc[a, b] = rank_agreement.loc[b, a] = weighted_rank_correlation(
            importance[a].to_numpy(), importance[b].to_numpy())
    stack = np.stack([e.flat_values for e in explanations.values()]).astype(float)  # (models, rows, features)
    sign = np.sign(stack)
    pairs = list(itertools.combinations(range(len(stack)), 2))
    agree = np.mean([sign[a] == sign[b] for a, b in pairs], axis=0)  # (rows, features)
    weight = np.abs(stack).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_row = (agree * weight).sum(axis=1) / weight.sum(axis=1)
        per_feature = (agree * weight).sum(axis=0) / weight.sum(axis=0)
    feature_sign = (pd.Series(per_feature, index=first.feature_names) if first.tokens is None
                    else pd.Series(np.nan, index=importance.index))  # token positions are not the features
    rows = first.rows if first.rows is not None else np.arange(len(first))
    sign_agreement = pd.DataFrame({"row": rows, "target": first.targets, "sign_agreement": per_row})
    return ExplanationConsistency(explanations, importance.reset_index(), rank_agreement, sign_agreement,
                                  ranks.std(axis=1, ddof=0).rename("rank_spread"), spearman,
                                  feature_sign.reindex(importance.index).rename("sign_agreement"))


__all__ = ["ExplanationConsistency", "explanation_consistency"]
