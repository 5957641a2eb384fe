"""Quality checks of an explanation: is it complete, faithful, stable, and about the model?

- completeness (Captum methods) / additivity (SHAP methods): |Σ attributions + base - f(x)| per
  row: exactly what an additive method promises (IG's convergence delta; SHAP's local accuracy).
- infidelity (Yeh et al., 2019; captum.metrics.infidelity): how well attributions predict the
  output change under small input perturbations (lower is better).
- sensitivity (captum.metrics.sensitivity_max): how much attributions move when the input moves
  by a small radius (lower is more stable).
- randomization (Adebayo et al., 2018, "Sanity checks for saliency maps"): attributions of a copy
  of the model with re-initialized weights must differ; we report the mean Spearman rank
  correlation of |attributions| between the two (high means the method shows the input, not
  the model).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# Relative completeness gap above which an additive method's attributions are refused (DeepLIFT
# engines) or flagged: the sum misses 1 % of the output difference it claims to explain.
COMPLETENESS_TOLERANCE = 1e-2
# A mean rank correlation above 0.5 with a randomized model: the attributions are more about the
# input than about what the model learned (Adebayo et al., 2018 judged by rank correlation too).
RANDOMIZATION_MAX_CORRELATION = 0.5
# Rows used by the costlier checks (they re-run the model or the method).
INFIDELITY_ROWS, SENSITIVITY_ROWS, RANDOMIZATION_ROWS, SAMPLING_ROWS = 64, 16, 33, 8
# Independently randomized copies of the model for the randomization check (each on a third of its rows).
RANDOMIZATION_COPIES = 3
# A sampling method's estimated error (relative to the rows' largest attribution) above which the
# trust note asks for a larger sample budget.
SAMPLING_MAX_ERROR = 0.05


def completeness(values: np.ndarray, outputs: np.ndarray, base: np.ndarray) -> dict[str, Any]:
    """The additivity gap of attributions: sum + base vs the explained output, per row.

    A row passes when its gap is at most ``COMPLETENESS_TOLERANCE`` of the output difference it
    explains, |f(x) - base|, or of the explanation's typical one (the median over its rows) where
    that row's is smaller: a row whose output sits at the base is judged on the scale of the
    others, and outputs around 1e-3 are judged on their own scale (no absolute floor). Beyond it
    only what float32 arithmetic cannot resolve is forgiven: 64 float32 epsilons of the
    magnitudes summed (|f(x)|, |base| and the attributions' absolute values)."""
    gap, scale, rounding = _gaps(values, outputs, base)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scale > 0, gap / scale, np.where(gap > rounding, np.inf, 0.0))
    return {"applies": True, "mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max()),
            "max_relative_gap": float(relative.max()), "median_relative_gap": float(np.median(relative)),
            "passed": bool((gap <= COMPLETENESS_TOLERANCE * scale + rounding).all())}


def complete_rows(values: np.ndarray, outputs: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per row, whether it passes ``completeness`` (the same tolerance and scale)."""
    gap, scale, rounding = _gaps(values, outputs, base)
    return gap <= COMPLETENESS_TOLERANCE * scale + rounding


def _gaps(values: np.ndarray, outputs: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the gap, the output difference it is judged on, and the float32 rounding forgiven."""
    flat = values.reshape(len(values), -1).astype(float)
    gap = np.abs(flat.sum(axis=1) + base - outputs)
    difference = np.abs(outputs - base)
    scale = np.maximum(difference, float(np.median(difference)))
    rounding = 64 * float(np.finfo(np.float32).eps) * (np.abs(outputs) + np.abs(base) + np.abs(flat).sum(axis=1))
    return gap, scale, rounding


def sampling_error(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """The error of a sampled estimate, from two runs with independent seeds on the same rows: the
    difference of two independent estimates has sqrt(2) times the standard deviation of one, so
    |a - b| / sqrt(2) estimates each value's error. Reported relative to each row's largest
    attribution; 0 when the method enumerated every case (kernel SHAP with few features)."""
    a, b = first.reshape(len(first), -1), second.reshape(len(second), -1)
    error = np.abs(a - b) / np.sqrt(2.0)
    scale = np.abs(a).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scale > 0, error.max(axis=1) / scale, 0.0)
    return {"rows": len(a), "max_abs": float(error.max()), "median_relative": float(np.median(relative)),
            "max_relative": float(relative.max()), "passed": bool(np.median(relative) <= SAMPLING_MAX_ERROR)}


def not_additive(method: str) -> dict[str, Any]:
    return {"applies": False, "note": f"{method} attributions are not additive: they need not sum to the "
                                      "output difference"}


def infidelity_check(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attributions: torch.Tensor,
                     targets: torch.Tensor, seed: int) -> dict[str, Any]:
    rows = slice(0, INFIDELITY_ROWS)
    x, attributions, targets = x[rows], attributions[rows], targets[rows]
    sigma = 0.1 * float(x.std()) if x.numel() > 1 else 0.1

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (perturbation, perturbed input)
        noise = torch.randn_like(inputs) * sigma
        return noise, inputs - noise
    from captum.metrics import infidelity  # here, not at import: import diagnose stays light
    torch.manual_seed(seed)
    with torch.no_grad():
        score = infidelity(forward, perturb, x, attributions, target=targets, n_perturb_samples=10)
    return {"mean": float(score.mean()), "rows": len(x), "noise_std": sigma}


def sensitivity_check(explain_rows: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor]], x: torch.Tensor,
                      targets: torch.Tensor, seed: int) -> dict[str, Any]:
    from captum.metrics import sensitivity_max
    rows = slice(0, SENSITIVITY_ROWS)
    torch.manual_seed(seed)
    score = sensitivity_max(lambda inputs, target: explain_rows(inputs, target), x[rows], target=targets[rows],
                            perturb_radius=0.02 * max(float(x.std()), 1e-3), n_perturb_samples=5)
    return {"mean": float(score.mean()), "rows": min(len(x), SENSITIVITY_ROWS)}


def randomized_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every parameter randomized: each layer re-initialized by its own
    ``reset_parameters``, and every parameter that left unchanged (a module without one, a custom
    layer's own ``nn.Parameter``) redrawn from a normal with its own mean and standard deviation,
    which keeps its scale and erases what training put in it."""
    clone = copy.deepcopy(model)
    before = {id(p): p.detach().clone() for p in clone.parameters()}
    torch.manual_seed(seed)
    for module in clone.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and next(iter(module.parameters(recurse=False)), None) is not None:
            reset()
    with torch.no_grad():
        for p in clone.parameters():
            if torch.equal(p, before[id(p)]) and p.numel() > 0:
                mean, std = float(p.float().mean()), float(p.float().std()) if p.numel() > 1 else 0.0
                p.normal_(mean, std if std > 0 else max(abs(mean), 1e-2))
    return clone


def randomization_check(original: np.ndarray, randomized: np.ndarray,
                        mask: np.ndarray | None = None) -> dict[str, Any]:
    """Mean Spearman correlation of |attributions| per row, original vs randomized model; ``mask``
    (rows, features) limits each row to its real features (token padding, 0 in both, would tie)."""
    from scipy.stats import spearmanr
    a = np.abs(original.reshape(len(original), -1))
    b = np.abs(randomized.reshape(len(randomized), -1))
    keep = np.ones(a.shape, dtype=bool) if mask is None else mask.reshape(len(a), -1).astype(bool)
    rhos = [spearmanr(x[k], y[k]).statistic for x, y, k in zip(a, b, keep)
            if k.sum() > 1 and np.ptp(x[k]) > 0 and np.ptp(y[k]) > 0]
    rho = float(np.nanmean(rhos)) if rhos else float("nan")
    return {"mean_rank_correlation": rho, "rows": len(a),
            "passed": bool(rho < RANDOMIZATION_MAX_CORRELATION) if np.isfinite(rho) else None}


def weighted_rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's correlation of two importance vectors, each feature weighted by its mean share
    of the two: features neither uses (whose order is noise) barely count. NaN where undefined."""
    from scipy.stats import rankdata
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    w = (a / a.sum() + b / b.sum()) / 2
    ra, rb = rankdata(-a), rankdata(-b)
    da, db = ra - (w * ra).sum(), rb - (w * rb).sum()
    denominator = np.sqrt((w * da * da).sum() * (w * db * db).sum())
    return float((w * da * db).sum() / denominator) if denominator > 0 else float("nan")


def trust_note(quality: dict[str, Any]) -> str:
    """One plain-words sentence on how far to trust the explanation."""
    notes = []
    comp = quality.get("completeness") or quality.get("additivity") or {}
    if comp.get("applies"):
        notes.append("attributions add up to the output" if comp.get("passed")
                     else f"attributions miss up to {100 * comp['max_relative_gap']:.1f}% of the output they explain"
                     + (f" (the path integral has not converged at {comp['n_steps_max']} steps: raise n_steps)"
                        if "n_steps_max" in comp else ""))
    sampled = quality.get("sampling_error") or {}
    if sampled.get("passed") is False:
        notes.append(f"a second sample moves the values by about {100 * sampled['median_relative']:.0f}% of the "
                     "largest attribution: raise the sample budget (nsamples, max_evals or n_samples)")
    if quality.get("constant_output"):
        notes.append("the model's output is the same for every row explained: there is nothing to attribute "
                     "(check that the model uses its input)")
    rnd = quality.get("randomization") or {}
    if rnd.get("passed") is True:
        notes.append("they change when the model's weights are randomized (they reflect the model)")
    elif rnd.get("passed") is False:
        notes.append("they barely change when the weights are randomized: they may show the input more than "
                     "the model")
    return ("Trust: " + "; ".join(notes) + ".") if notes else "Trust: no check applies to this method."
