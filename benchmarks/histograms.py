"""What the watch's per-layer histograms cost: time per histogram step and extra peak memory.

Per model (an MLP, a CNN with batch norm, a transformer encoder, and BERT / GPT-2 built from tiny
``transformers`` configs when that package is installed), AdamW:

- time: interleaved blocks of steps of three copies (plain; watched at every step without
  histograms; watched at every step with histograms at every step), median of per-round ratios.
  What one histogram step adds, over a plain step, is (with - without); at the default cadence
  (every 200 steps) that is amortized 200 times.
- peak memory of 10 steps and the closing flush, at the default cadence (step 0 records histograms)
  and with everything at every step: the same three variants, each in a fresh process on the CPU
  (peak RSS, VmHWM; the training's own memory is the plain run's peak minus its RSS before the
  first step) and, on CUDA, ``torch.cuda.max_memory_allocated``. The target: histograms add under
  5 % to the watched training's peak.
- CUDA only: every histogram step runs under ``torch.cuda.set_sync_debug_mode("error")`` (flushes
  and the NaN/Inf counts, which do sync, switched off): the counting never waits for the device.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import diagnose as dg
from benchmarks.overhead import Encoder, cnn, mlp
from diagnose.monitor import watch as watch_module

VARIANTS = ("plain", "no histograms", "histograms")
# Peak memory, at the default cadence (every=50, a histogram every 200 steps: step 0 has one) and
# with everything at every step (every=1, histogram_every=1, flushed every 100 steps or 8 MB).
CADENCES = {"default": {}, "every step": {"every": 1, "histogram_every": 1}}


def bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=128, num_labels=10)
    return Logits(BertForSequenceClassification(config))


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, n_positions=128)
    return LastToken(GPT2LMHeadModel(config))


class Logits(nn.Module):
    """A transformers classifier as a tensor -> logits module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits


class LastToken(Logits):
    """GPT-2's next-token logits at the last position (a 1000-way classification)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits[:, -1]


# name -> (builder, input shape, token inputs, classes)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool, int]] = {
    "MLP 784-512-512-512-10, batch 128": (mlp, (128, 784), False, 10),
    "CNN conv16-conv32 + BN, 28x28, batch 128": (cnn, (128, 1, 28, 28), False, 10),
    "transformer encoder 2x128, 32 tokens, batch 32": (Encoder, (32, 32, 16), False, 10),
    "BERT 2x128 (transformers), 64 tokens, batch 32": (bert, (32, 64), True, 10),
    "GPT-2 2x128 (transformers), 64 tokens, batch 16": (gpt2, (16, 64), True, 1000),
}


class Variant:
    """One copy of a model with its optimizer and, for the watched variants, its watch."""

    def __init__(self, title: str, variant: str, device: torch.device, run_dir: Path, sync_check: bool = False,
                 cadence: str = "every step") -> None:
        make, shape, tokens, classes = MODELS[title]
        torch.manual_seed(0)
        self.model = make().to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randint(0, 1000, shape, device=device) if tokens else torch.randn(*shape, device=device)
        self.y = torch.randint(0, classes, (shape[0],), device=device)
        self.device, self.debug = device, False  # debug: steps under torch.cuda.set_sync_debug_mode("error")
        self.watch: dg.Watch | None = None
        if variant != "plain":
            # timing: every=1, every step is a sampled step, so (with - without) is the histograms alone
            # the sync check: no flushes and no NaN/Inf counts (both sync by design)
            self.watch = dg.watch(self.model, self.opt, run_dir, histograms=variant == "histograms",
                                  **CADENCES[cadence], track_nonfinite=not sync_check,
                                  flush_every=10**9 if sync_check else 100, flush_seconds=1e9 if sync_check else 5.0)

    def step(self) -> None:
        if self.debug:
            torch.cuda.set_sync_debug_mode("error")  # the watch's hooks run in the step: any sync raises
        try:
            self.opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
        finally:
            if self.debug:
                torch.cuda.set_sync_debug_mode("default")

    def block(self, steps: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


def timing(title: str, device: torch.device, rounds: int, steps: int, tmp: Path) -> dict[str, float]:
    """Plain seconds per step and each watched variant's median per-round ratio to it."""
    alive = {v: Variant(title, v, device, tmp / f"time-{i}") for i, v in enumerate(VARIANTS)}
    for variant in alive.values():
        variant.block(3)
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
    plain = []
    order = list(alive)
    for r in range(rounds):
        seconds = {name: alive[name].block(steps) for name in order[r % 3:] + order[:r % 3]}
        plain.append(seconds["plain"])
        for name in VARIANTS[1:]:
            ratios[name].append(seconds[name] / seconds["plain"])
    for variant in alive.values():
        variant.close()
    out = {"plain_ms": 1e3 * statistics.median(plain), **{v: statistics.median(r) for v, r in ratios.items()}}
    out["histogram_step"] = out["histograms"] - out["no histograms"]  # in plain steps
    out["amortized_default"] = out["histogram_step"] / 200
    return out


CHILD = r"""
import json, sys, tempfile
from pathlib import Path
import torch
from benchmarks.histograms import Variant
def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
title, variant, cadence = sys.argv[1:4]
torch.set_num_threads(2)
with tempfile.TemporaryDirectory() as tmp:
    v = Variant(title, variant, torch.device("cpu"), Path(tmp) / "run", cadence=cadence)
    before = rss_mb("VmRSS:")
    v.block(10)
    v.close()
    print(json.dumps({"before": before, "peak": rss_mb("VmHWM:")}))
"""


# glibc keeps freed memory in its arenas, so a process's peak RSS lags its live memory by
# megabytes at random: blocks of 64 KB and up are mapped and unmapped one by one instead, and the
# heap is trimmed at once, so the peak follows what is allocated.
MALLOC_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "2"}


def cpu_memory(title: str, repeats: int, cadence: str) -> dict[str, float]:
    """Median peak RSS (MB) per variant, each in a fresh process, and the training's own memory."""
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    own: list[float] = []
    for _ in range(repeats):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, "-c", CHILD, title, variant, cadence], capture_output=True,
                                 text=True, check=True, cwd=Path(__file__).resolve().parents[1], env=MALLOC_ENV)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[variant].append(result["peak"])
            if variant == "plain":
                own.append(result["peak"] - result["before"])
    return {**{v: statistics.median(p) for v, p in peaks.items()}, "own": statistics.median(own)}


def cuda_memory(title: str, tmp: Path, cadence: str) -> dict[str, float]:
    """Peak allocated MB of 10 steps per variant (one at a time, stats reset), and the sync check."""
    out: dict[str, float] = {}
    for i, variant in enumerate(VARIANTS):
        gc.collect()  # a closed watch's hooks referred to it: the last variant's model waits for the collector
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        v = Variant(title, variant, torch.device("cuda"), tmp / f"mem-{cadence}-{i}", cadence=cadence)
        v.block(10)
        v.close()  # the last flush included
        out[variant] = torch.cuda.max_memory_allocated() / 2**20
        del v
    # flushes sync by design: none during the check (also not the early flush of a full buffer)
    limit, watch_module.HISTOGRAM_FLUSH_BYTES = watch_module.HISTOGRAM_FLUSH_BYTES, 1 << 40
    checked = Variant(title, "histograms", torch.device("cuda"), tmp / f"sync-{cadence}", sync_check=True)
    checked.block(2)  # the first steps' one-time set-up (constants copied to the device) may sync
    checked.debug = True
    checked.block(5)  # any sync in the watch's hooks raises inside them: the watch records it
    assert checked.watch is not None
    errors = dict(checked.watch._errors)
    checked.close()
    watch_module.HISTOGRAM_FLUSH_BYTES = limit
    if errors:
        raise RuntimeError(f"{title}: a histogram step synchronised with the device: {errors}")
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant (CPU memory)")
    parser.add_argument("--models", nargs="*", default=None, help="a subset of the model titles")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    titles = args.models or list(MODELS)
    try:
        import transformers  # noqa: F401
    except ImportError:
        titles = [t for t in titles if "transformers" not in t]
    results: dict[str, dict[str, float]] = {}
    print(f"histograms on {device} ({torch.get_num_threads()} threads): one histogram step's extra time in plain "
          "steps (every=1 with vs without histograms), amortized at the default 200 steps; extra peak memory")
    with tempfile.TemporaryDirectory() as tmp:
        for title in titles:
            t = timing(title, device, args.rounds, args.steps, Path(tmp) / str(len(results)))
            line = (f"  {title}: plain {t['plain_ms']:.2f} ms/step; watch every=1 {t['no histograms']:.3f}x, with "
                    f"histograms every step {t['histograms']:.3f}x: a histogram step costs {t['histogram_step']:.2f} "
                    f"plain steps, {t['amortized_default']:.2%} at the default cadence; extra peak memory")
            results[title] = dict(t)
            for cadence in CADENCES:
                memory = cpu_memory(title, args.repeats, cadence) if device.type == "cpu" \
                    else cuda_memory(title, Path(tmp) / f"memory-{len(results)}", cadence)
                extra = memory["histograms"] - memory["no histograms"]
                # the watched training's own memory: on the CPU without the runtime's (python, torch)
                base = memory["no histograms"] - (memory["plain"] - memory["own"]) if device.type == "cpu" \
                    else memory["no histograms"]
                results[title].update({f"{cadence} mem_{k}": v for k, v in memory.items()})
                results[title][f"{cadence} mem_extra_share"] = extra / base
                line += (f" {cadence}: {memory['no histograms']:.1f} -> {memory['histograms']:.1f} MB "
                         f"({extra:+.1f} MB, "
                         f"{extra / base:+.1%} of the watched training's own);")
            print(line + (" no host sync in a histogram step" if device.type == "cuda" else ""), flush=True)
    return results


if __name__ == "__main__":
    main()
