"""Explanation speed: dg.explain against the libraries used by hand.

5000 rows x 30 features, a 128-128 ReLU MLP, a 100-row background, CPU. Seconds per method
(median of repeats, our runs without the quality checks unless stated), and the ratios against
shap.DeepExplainer, captum.attr.DeepLiftShap and captum.attr.IntegratedGradients with their
default settings. Also checks that our shap_deep values equal shap.DeepExplainer's.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import shap
import torch
from captum.attr import DeepLiftShap, IntegratedGradients
from torch import nn

import diagnose as dg


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2)).eval()
    g = torch.Generator().manual_seed(0)
    X, background = torch.randn(args.rows, 30, generator=g), torch.randn(100, 30, generator=g)
    target = 1

    print(f"explain speed: {args.rows} rows x 30 features, MLP 30-128-128-2 (ReLU), 100-row background, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    t_shap, shap_values = timed(lambda: np.asarray(shap.DeepExplainer(model, background).shap_values(
        X, check_additivity=False)), 1)
    t_dls, _ = timed(lambda: DeepLiftShap(model).attribute(X.clone(), baselines=background, target=target), 1)
    t_ig, _ = timed(lambda: IntegratedGradients(model).attribute(X.clone(), target=target), 1)
    peers = {"shap.DeepExplainer": t_shap, "captum DeepLiftShap": t_dls, "captum IntegratedGradients": t_ig}
    for name, t in peers.items():
        print(f"  {name:<34} {t:8.2f} s")

    ours = {}
    for method in ("shap_deep", "deeplift", "integrated_gradients", "gradient_shap", "saliency", "input_x_gradient"):
        ours[method], exp = timed(lambda m=method: dg.explain(model, X, m, background=background, target=target,
                                                              checks="none"), args.repeats)
        if method == "shap_deep":
            rel = np.abs(exp.values - shap_values[..., target]).max() / np.abs(shap_values[..., target]).max()
    ours["shap_deep (with quality checks)"], _ = timed(
        lambda: dg.explain(model, X, "shap_deep", background=background, target=target), 1)
    print(f"  {'dg.explain method':<34} {'seconds':>8}   vs DeepExplainer   vs DeepLiftShap   vs IG")
    for name, t in ours.items():
        print(f"  {name:<34} {t:8.2f}   {t_shap / t:12.1f}x   {t_dls / t:12.1f}x   {t_ig / t:6.1f}x")
    print(f"  shap_deep vs shap.DeepExplainer: max relative difference {rel:.1e}")
    small = X[:100]
    for method in ("shap_kernel", "shap_permutation"):
        t, _ = timed(lambda m=method: dg.explain(model, small, m, background=background[:20], target=target,
                                                 checks="none"), 1)
        print(f"  {method} on 100 rows (20-row background): {t:.2f} s (model-agnostic fallbacks)")


if __name__ == "__main__":
    main()
