"""Token explanations: dg.explain on token ids against Captum's LayerIntegratedGradients called by hand.

A tiny BERT built from a transformers config (random init, no download): hidden 64, 2 layers,
4 heads, 32 positions, 256 rows of varying length with an attention mask; 50 steps, the pad token
as the reference. The three runs alternate in every round (median of the rounds): Captum
directly, ``dg.explain`` without checks (the same attribution plus the token bookkeeping), and
``dg.explain`` with the default quality checks (completeness, and the randomization check on three
randomized copies of the model). Also checks that the values are Captum's.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients

import diagnose as dg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=32, num_labels=2, pad_token_id=0)).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (args.rows, 32), generator=g)
    lengths = torch.randint(8, 33, (args.rows,), generator=g)
    mask = (torch.arange(32)[None] < lengths[:, None]).long()
    ids[mask == 0] = 0
    reference = torch.zeros_like(ids)  # the pad token; padded positions are pad already

    def captum() -> np.ndarray:
        lig = LayerIntegratedGradients(lambda i, a: model(i, attention_mask=a).logits, model.get_input_embeddings())
        return lig.attribute(ids, baselines=reference, target=1, additional_forward_args=(mask,),
                             n_steps=50).sum(-1).detach().numpy()

    def ours(checks: str) -> np.ndarray:
        return dg.explain(model, ids, "integrated_gradients", forward_kwargs={"attention_mask": mask}, target=1,
                          checks=checks).values

    runs = {"captum LayerIntegratedGradients": captum, "dg.explain checks='none'": lambda: ours("none"),
            "dg.explain checks='fast'": lambda: ours("fast")}
    times: dict[str, list[float]] = {name: [] for name in runs}
    values: dict[str, np.ndarray] = {}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:  # each run takes each place in the round in turn
            fn = runs[name]
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["captum LayerIntegratedGradients"])
    print(f"token explanations: tiny BERT (64 hidden, 2 layers), {args.rows} rows x 32 positions, IG 50 steps, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for name, t in times.items():
        print(f"  {name:<34} {statistics.median(t):7.3f} s   {statistics.median(t) / base:5.2f}x")
    diff = float(np.abs(values["dg.explain checks='none'"] - values["captum LayerIntegratedGradients"]).max())
    print(f"  max |ours - captum| = {diff:.2e}")


if __name__ == "__main__":
    main()
