"""Cost of the built-in Trainer, and of recording diagnostics, against a plain PyTorch loop.

Same model, data, optimizer, batch size and epochs; the three variants run interleaved
(plain, trainer, trainer + run_dir) in each repeat, and we report the median time of each and
their ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import diagnose as dg


def plain_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            opt.step()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    args = parser.parse_args(argv)

    data = dg.datasets.cart_abandonment(n=8000)
    X, y = data.train

    def model() -> nn.Module:
        torch.manual_seed(0)
        return dg.mlp(data.n_features, args.hidden, 2)

    times: dict[str, list[float]] = {"plain loop": [], "Trainer": [], "Trainer + run_dir": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in times:
                m = model()
                start = time.perf_counter()
                if name == "plain loop":
                    plain_loop(m, X, y, args.epochs, args.batch_size)
                else:
                    run_dir = str(Path(tmp) / f"run{r}") if name.endswith("run_dir") else None
                    dg.Trainer(m, "adam", run_dir=run_dir, seed=0, progress=False).fit(
                        (X, y), epochs=args.epochs, batch_size=args.batch_size)
                times[name].append(time.perf_counter() - start)
    steps = args.epochs * -(-len(X) // args.batch_size)
    base = statistics.median(times["plain loop"])
    print(f"trainer overhead: MLP 10-{'-'.join(map(str, args.hidden))}-2, Adam, {steps} steps, "
          f"median of {args.repeats} interleaved repeats, {torch.get_num_threads()} threads")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<20} {med:7.3f} s   ratio {med / base:5.3f}   ({1e3 * med / steps:.3f} ms/step)")


if __name__ == "__main__":
    main()
