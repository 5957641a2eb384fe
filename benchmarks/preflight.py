"""Preflight speed: the whole of ``dg.preflight`` on the demo model (MLP 10-64-32-2 with batch norm
and dropout, Adadelta, 3200 training and 800 validation rows of the cart data), and on a CNN on
digits images; seconds, median of repeats (the issue's target: under 10 s for the demo model)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import diagnose as dg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cart = dg.datasets.cart_abandonment(n=4000, seed=0)
    digits = dg.datasets.digits(images=True)
    cases = {
        "demo MLP (Adadelta)": lambda: dg.preflight(
            dg.mlp(cart.n_features, [64, 32], 2, batch_norm=True, dropout=0.2), cart.train, val_data=cart.val,
            optimizer="adadelta"),
        "CNN on digits (Adam)": lambda: dg.preflight(dg.cnn(1, 8, 10, channels=(8, 16), batch_norm=True),
                                                     digits.train, val_data=digits.val),
    }
    print(f"preflight speed: {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, run in cases.items():
        times, found = [], None
        for _ in range(args.repeats):
            torch.manual_seed(0)
            start = time.perf_counter()
            found = run()
            times.append(time.perf_counter() - start)
        kinds = sorted({f.kind for f in found if f.severity != "info"}) if found is not None else []
        print(f"  {name:<24} {statistics.median(times):6.2f} s  (problems found: {kinds or 'none'})")


if __name__ == "__main__":
    main()
