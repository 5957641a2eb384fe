"""Report generation time and size for a long run (20 000 steps x 30 layers) and a deep model (2 000
steps x 223 layers).

Writes a synthetic run straight into the store (every statistic at every step, with a trend and
noise, and histograms every 200 steps), then times ``dg.report`` on it (median of repeats) and prints the HTML size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import diagnose as dg
from diagnose.monitor.statistics import histogram
from diagnose.monitor.store import RunWriter


def synthetic_run(run_dir: Path, steps: int, layers: int, seed: int = 0) -> None:
    """A recorded run of ``steps`` x ``layers`` with every statistic at every step and histograms
    every 200 steps, written straight into the store."""
    rng = np.random.default_rng(seed)
    names = [f"block{i // 2}.{'fc' if i % 2 == 0 else 'act'}" for i in range(layers)]
    writer = RunWriter(run_dir, {"source": "benchmark", "steps": steps, "every": 1,
                                 "model": {"class": "Synthetic", "params": 0, "layers": []}})
    chunk = 2000
    for start in range(0, steps, chunk):
        step = np.arange(start, min(start + chunk, steps))
        decay = np.exp(-step / steps)
        writer.write_scalars([(int(s), "loss", float(2.3 * d + 0.05 * rng.random())) for s, d in zip(step, decay)])
        rows = []
        for j, name in enumerate(names):
            scale = 10.0 ** (-j / 10)
            for s, d in zip(step, decay):
                rows.append({"step": int(s), "layer": name, "grad_norm": scale * d * (1 + 0.1 * rng.random()),
                             "weight_norm": 5.0 + j, "update_ratio": 1e-3 * d, "act_mean": 0.1,
                             "act_std": 1.0 + 0.1 * d,
                             "act_zero_frac": 0.5, "dead_frac": 0.05 if j % 2 else float("nan"),
                             "saturated_frac": float("nan"), "nonfinite": 0.0})
        writer.write_layer_stats(rows)
        writer.flush()  # bounds the queue: the writer thread commits as fast as rows are made
    # histograms at the default cadence (every 200 steps): outputs of every layer, gradients and
    # weights of the layers with parameters
    histograms = []
    for s in range(0, steps, 200):
        for j, name in enumerate(names):
            for kind in ("act", "grad", "weight") if j % 2 == 0 else ("act",):
                values = torch.randn(4096) * 10.0 ** (-j / 10) * (1e-3 if kind == "grad" else 1.0)
                first, counts = histogram.trim(histogram.canonical(histogram.device_counts(values).numpy()))
                histograms.append((s, name, kind, first, histogram.encode(counts)))
    writer.write_histograms(histograms)
    writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    # the long run (issue 10's targets) and a deep model: 223 layers, as a ViT/ResNet records
    # (issue 16's targets)
    for steps, layers, targets in ((args.steps, args.layers, "< 15 s, < 10 MB"), (2000, 223, "< 10 s, < 2 MB")):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "long"
            synthetic_run(run_dir, steps, layers)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = dg.report(run_dir, out=Path(tmp) / "long.html")
                times.append(time.perf_counter() - start)
            size = out.stat().st_size
        print(f"report: {steps} steps x {layers} layers (every statistic every step): "
              f"{statistics.median(times):.2f} s (median of {args.repeats}), {size / 1e6:.2f} MB "
              f"(targets: {targets})")


if __name__ == "__main__":
    main()
