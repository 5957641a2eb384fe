"""Overhead of dg.watch against a plain training step, on CPU: a matrix of models x optimizers.

Models: an MLP, a CNN with batch norm, a small transformer encoder; optimizers: SGD with momentum
and AdamW. In each cell, interleaved in one run: plain steps, watched steps at the default
cadence (with and without histograms, and with histograms at every sampled step), watched steps
with every statistic every step (every=1), watched steps under an
overhead budget (``overhead=0.03``: the watch sets its own cadence), as a reference a naive hook
that calls ``.item()`` on per-layer statistics every step (what fastai's ActivationStats does),
and a second plain copy whose ratio to plain is the machine's noise floor. Every variant trains
its own copy of the model (same initial weights, same batch) and stays alive for the whole cell;
each round times one block of steps per variant, in shuffled order, and divides by the plain
block of the same round. The machine's drift (a noisy VM moves a block by ±20 %) thus cancels
within a round; we print the median of the per-round ratios and, for the budget, the overhead the
watch measured itself. Blocks are 50 steps: one sampled step at the default cadence per block.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import diagnose as dg

TARGETS = {"watch (default)": 1.05, "watch (every=1)": 1.30}
BUDGET = 0.03


def mlp() -> nn.Module:
    return dg.mlp(784, [512, 512, 512], 10)


def cnn() -> nn.Module:
    return dg.cnn(in_channels=1, image_size=28, num_classes=10, channels=(16, 32), batch_norm=True)


class Encoder(nn.Module):
    """A small transformer encoder classifier: 2 layers, width 128, 4 heads, 32 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 128)
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "MLP 784-512-512-512-10, batch 128": (mlp, (128, 784)),
    "CNN conv16-conv32 + BN, 28x28, batch 128": (cnn, (128, 1, 28, 28)),
    "transformer encoder 2x128, 32 tokens, batch 32": (Encoder, (32, 32, 16)),
}
OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "SGD+momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
    "AdamW": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
}


class NaiveItemHook:
    """The reference: mean, std and zero fraction of every layer's output, read with .item()."""

    def __init__(self, model: nn.Module) -> None:
        self.handles = [m.register_forward_hook(self.hook) for m in model.modules() if not list(m.children())]
        self.values: list[float] = []

    def hook(self, module: nn.Module, args: object, out: object) -> None:
        if not isinstance(out, torch.Tensor):
            return
        with torch.no_grad():
            o = out.detach()
            self.values += [o.mean().item(), o.std().item(), (o == 0).float().mean().item()]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class Variant:
    """One way of training a cell's model: its own copy, optimizer and (for watched variants) run."""

    def __init__(self, name: str, make: Callable[[], nn.Module],
                 make_opt: Callable[[nn.Module], torch.optim.Optimizer], shape: tuple[int, ...], run_dir: Path) -> None:
        torch.manual_seed(0)
        self.name = name
        self.model = make()
        self.opt = make_opt(self.model)
        self.x, self.y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
        self.loss_fn = nn.CrossEntropyLoss()
        self.ctx: dg.Watch | NaiveItemHook | None = None
        if name == "watch (default)":
            self.ctx = dg.watch(self.model, self.opt, run_dir)
        elif name == "watch (default, no histograms)":
            self.ctx = dg.watch(self.model, self.opt, run_dir, histograms=False)
        elif name == "watch (histograms every 50)":
            self.ctx = dg.watch(self.model, self.opt, run_dir, histogram_every=50)
        elif name == "watch (every=1)":
            self.ctx = dg.watch(self.model, self.opt, run_dir, every=1)
        elif name == f"watch (overhead={BUDGET})":
            self.ctx = dg.watch(self.model, self.opt, run_dir, overhead=BUDGET)
        elif name == "naive .item() hook":
            self.ctx = NaiveItemHook(self.model)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        if isinstance(self.ctx, dg.Watch):
            self.ctx.log(loss=loss)

    def block(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps

    def close(self) -> float | None:
        """Stop watching; the overhead the watch measured itself, if it has a budget."""
        measured = self.ctx.measured_overhead if isinstance(self.ctx, dg.Watch) else None
        if self.ctx is not None:
            self.ctx.close()
        return measured


def measure_cell(make: Callable[[], nn.Module], make_opt: Callable[[nn.Module], torch.optim.Optimizer],
                 shape: tuple[int, ...], variants: list[str], rounds: int, steps: int,
                 tmp: Path) -> tuple[float, dict[str, float], float | None]:
    """Plain seconds per step, each variant's median per-round ratio to plain, the budget's own measure."""
    alive = [Variant(v, make, make_opt, shape, tmp / f"{i}") for i, v in enumerate(variants)]
    for variant in alive:  # warm-up: allocator, first-call costs, the first sampled step
        variant.block(5)
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    plain: list[float] = []
    order = random.Random(0)
    for _ in range(rounds):
        shuffled = alive[:]
        order.shuffle(shuffled)
        seconds = {variant.name: variant.block(steps) for variant in shuffled}
        plain.append(seconds["plain"])
        for name, value in seconds.items():
            ratios[name].append(value / seconds["plain"])
    measured = [variant.close() for variant in alive]
    own = next((m for m in measured if m is not None), None)
    return statistics.median(plain), {v: statistics.median(r) for v, r in ratios.items()}, own


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="steps per block")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="a subset of the model titles")
    parser.add_argument("--optimizers", nargs="*", default=list(OPTIMIZERS))
    args = parser.parse_args(argv)
    # "plain (again)": a second unwatched copy, timed like the others: how far apart two identical
    # variants land is the noise floor of this machine
    # histograms come every 200 steps by default, in one block of 50 out of four: the median hides
    # them, so "histograms every 50" (one in every block) measures their cost, a quarter of which
    # is the default's
    variants = ["plain", "plain (again)", "watch (default)", "watch (default, no histograms)",
                "watch (histograms every 50)", "watch (every=1)", f"watch (overhead={BUDGET})", "naive .item() hook"]
    results: dict[str, dict[str, float]] = {}
    print(f"watch overhead on CPU, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps "
          f"per variant, median of per-round ratios to plain (targets: default <= {TARGETS['watch (default)']}x, "
          f"every=1 <= {TARGETS['watch (every=1)']}x, the budget {BUDGET:.0%})")
    with tempfile.TemporaryDirectory() as tmp:
        for title in args.models:
            make, shape = MODELS[title]
            for opt_name in args.optimizers:
                cell = f"{title} / {opt_name}"
                cell_dir = Path(tmp) / str(len(results))
                base, ratios, own = measure_cell(make, OPTIMIZERS[opt_name], shape, variants, args.rounds,
                                                 args.steps, cell_dir)
                results[cell] = {**ratios, "budget measured": own if own is not None else float("nan")}
                print(f"  {cell}: plain {1e3 * base:.2f} ms/step; " + ", ".join(
                    f"{v} {ratios[v]:.3f}x" for v in variants[1:]) +
                    (f"; the budget's own measure {own:.1%}" if own is not None else ""), flush=True)
    return results


if __name__ == "__main__":
    main()
