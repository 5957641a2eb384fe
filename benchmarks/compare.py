"""Comparison page time and size: 10 synthetic runs x 5 000 steps x 30 layers (every statistic at
every step, written straight into the stores), ``dg.compare`` timed (median of repeats); the
issue's target: under 15 s."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import diagnose as dg
from benchmarks.report import synthetic_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"run{i}" for i in range(args.runs)]
        start = time.perf_counter()
        for i, d in enumerate(dirs):
            synthetic_run(d, args.steps, args.layers, seed=i)
        written = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = dg.compare(dirs, out=Path(tmp) / "compare.html")
            times.append(time.perf_counter() - start)
        size = out.stat().st_size
    print(f"compare: {args.runs} runs x {args.steps} steps x {args.layers} layers (written in {written:.1f} s)")
    print(f"  dg.compare  {statistics.median(times):6.2f} s (median of {args.repeats}), page {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
