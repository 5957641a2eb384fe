"""Overhead of dg.watch against a plain training step, on CPU.

Interleaved in one run: plain steps, watched steps at the default cadence, watched steps with
every statistic every step (every=1), and, as a reference, a naive hook that calls ``.item()``
on per-layer statistics every step (what fastai's ActivationStats does). Each repeat times a
block of steps per variant, in rotating order; we print the median per-step time and its ratio
to plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import diagnose as dg


def mlp() -> nn.Module:
    return dg.mlp(784, [512, 512, 512], 10)


def cnn() -> nn.Module:
    return dg.cnn(in_channels=1, image_size=28, num_classes=10, channels=(16, 32), batch_norm=True)


class NaiveItemHook:
    """The reference: mean, std and zero fraction of every layer's output, read with .item()."""

    def __init__(self, model: nn.Module) -> None:
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules() if not list(m.children())]
        self.values: list[float] = []

    def hook(self, module: nn.Module, args: object, out: torch.Tensor) -> None:
        with torch.no_grad():
            o = out.detach()
            self.values += [o.mean().item(), o.std().item(), (o == 0).float().mean().item()]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_variant(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], steps: int, tmp: Path,
                counter: list[int]) -> float:
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    counter[0] += 1
    ctx = None
    if name == "watch (default)":
        ctx = dg.watch(model, opt, tmp / f"r{counter[0]}")
    elif name == "watch (every=1)":
        ctx = dg.watch(model, opt, tmp / f"r{counter[0]}", every=1)
    elif name == "naive .item() hook":
        ctx = NaiveItemHook(model)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if isinstance(ctx, dg.Watch):
            ctx.log(loss=loss)

    for _ in range(3):  # warm-up (allocator, first-call costs)
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    if ctx is not None:
        ctx.close()
    return elapsed / steps


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    variants = ["plain", "watch (default)", "watch (every=1)", "naive .item() hook"]
    models = {"MLP 784-512-512-512-10, batch 128": (mlp, (128, 784)),
              "CNN conv16-conv32 (BN) on 28x28, batch 128": (cnn, (128, 1, 28, 28))}
    results = {}
    counter = [0]
    with tempfile.TemporaryDirectory() as tmp:
        for title, (make, shape) in models.items():
            times: dict[str, list[float]] = {v: [] for v in variants}
            for r in range(args.repeats):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for v in order:
                    times[v].append(run_variant(v, make, shape, args.steps, Path(tmp), counter))
            base = statistics.median(times["plain"])
            print(f"watch overhead: {title}, {args.steps} steps x {args.repeats} interleaved repeats, "
                  f"{torch.get_num_threads()} threads")
            results[title] = {}
            for v in variants:
                med = statistics.median(times[v])
                results[title][v] = med / base
                print(f"  {v:<20} {1e3 * med:8.3f} ms/step   ratio {med / base:6.3f}")
    return results


if __name__ == "__main__":
    main()
