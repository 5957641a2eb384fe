"""dg.watch under DistributedDataParallel: each rank records its own shard; load_run merges them.

    python examples/ddp_watch.py      # 2 CPU processes, gloo backend
"""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import diagnose as dg

RUN_DIR = "runs/example-ddp"


def worker(rank: int, world: int) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = dg.datasets.digits()
    X, y = data.train
    shard = slice(rank, None, world)  # each rank trains on its own rows
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(dg.mlp(64, [64], 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with dg.watch(model, optimizer, RUN_DIR, every=5, overwrite=True) as run:
        for _ in range(50):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(X[shard]), y[shard])
            loss.backward()
            optimizer.step()
            run.log(loss=loss)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(2,), nprocs=2, join=True)
    run = dg.load_run(RUN_DIR)
    print(run.scalars().groupby("rank")["loss"].agg(["first", "last"]))
