"""The run store across processes: a SIGKILLed writer, and DDP ranks (gloo, CPU)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import diagnose as dg

CHILD = textwrap.dedent("""
    import sys, torch, diagnose as dg
    from torch import nn
    torch.manual_seed(0)
    model = dg.mlp(10, [32], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 10), torch.randint(0, 2, (64,))
    with dg.watch(model, opt, sys.argv[1], every=5, flush_every=10, flush_seconds=3600) as run:
        step = 0
        while True:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            run.log(loss=loss)
            step += 1
            if step % 10 == 0:
                run.flush()
                run.writer.flush()  # wait for the commit, then tell the parent how far it got
                print(step, flush=True)
""")


@pytest.mark.slow
def test_a_sigkilled_run_holds_every_step_up_to_its_last_flush(tmp_path, read_line):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        flushed = 0
        deadline = time.monotonic() + 120
        while flushed < 50:
            line = read_line(proc, deadline)
            if not line:  # deadline passed, or the child ended
                break
            flushed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert flushed >= 50
    run = dg.load_run(run_dir)
    assert run.meta["complete"] is False
    steps = run.scalars()["step"].tolist()
    # every step up to the last confirmed flush, with nothing missing in between
    assert steps[: flushed] == list(range(flushed))
    assert steps == list(range(len(steps)))
    stats = run.layer_stats()
    assert set(range(0, flushed, 5)) <= set(stats["step"])


def _ddp_worker(rank: int, world: int, run_dir: str, rendezvous: str) -> None:
    # a file rendezvous: no port to pick, so no clash with another test run on the machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(dg.mlp(6, [8], 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(rank)
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 2, (16,), generator=g)
        with dg.watch(model, opt, run_dir, every=1) as run:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                run.log(loss=loss)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_record_their_own_shard(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "run"), str(tmp_path / "rendezvous")), nprocs=2, join=True)
    tmp_path = tmp_path / "run"
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == ["run.rank0.sqlite", "run.rank1.sqlite"]
    run = dg.load_run(tmp_path)
    meta = run.meta
    assert meta["complete"] is True and meta["world_size"] == 2 and set(meta["ranks"]) == {0, 1}
    scalars = run.scalars()
    assert sorted(scalars["rank"].unique()) == [0, 1] and len(scalars) == 6
    # different data per rank: different losses; DDP averages gradients: identical gradient norms
    by_rank = scalars.pivot(index="step", columns="rank", values="loss")
    assert (by_rank[0] != by_rank[1]).all()
    stats = run.layer_stats().query("layer == 'module.fc1'").pivot(index="step", columns="rank", values="grad_norm")
    pd.testing.assert_series_equal(stats[0], stats[1], check_names=False, rtol=1e-6)
