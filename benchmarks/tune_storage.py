"""Trials per minute of a trivial objective with 1, 2 and 4 worker processes on PostgreSQL (a
throw-away local server) and on SQLite: what the storage and the sampler cost per trial.

Each cell starts its workers together on a fresh study of ``--trials`` trials (``dg.tune`` with a
storage: the budget is queued once and each worker takes queued trials, with heartbeats). The
rate is measured from the storage's own timestamps, first trial start to last trial end, so the
workers' start-up (importing torch) is not in it. The objective is x^2 + y^2: the time is all the
storage's and the sampler's (random search, and TPE, whose cost grows with the trials it reads).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import optuna

from diagnose.tune.pg_server import PostgresServer, PostgresUnavailable

WORKER = r"""
import os, sys
import diagnose as dg
storage, study, n, strategy = sys.argv[1:5]
dg.tune({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, lambda p: p["x"] ** 2 + p["y"] ** 2, strategy=strategy,
        n_trials=int(n), storage=storage, study_name=study, seed=os.getpid())
"""


def cell(storage: str, workers: int, trials: int, strategy: str) -> float:
    """Trials per minute of one study run by ``workers`` processes started together."""
    study = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage, study, str(trials), strategy],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"a worker failed: {err[-2000:]}")
    done = optuna.load_study(study_name=study, storage=storage).trials
    assert len(done) == trials, (len(done), trials)
    start = min(t.datetime_start for t in done if t.datetime_start is not None)
    end = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return 60.0 * trials / (end - start).total_seconds()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=120, help="trials per study")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--strategies", nargs="*", default=["random", "bayes"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"SQLite": f"sqlite:///{Path(tmp) / 'tune.db'}"}
        server = None
        try:
            server = PostgresServer().start()
            storages = {"PostgreSQL": server.url, **storages}
        except PostgresUnavailable as err:
            print(f"(no PostgreSQL: {err})")
        try:
            print(f"trials per minute of a trivial objective, {args.trials} trials per study, workers started "
                  f"together (median of {args.repeats})")
            for name, url in storages.items():
                for strategy in args.strategies:
                    rates = []
                    for workers in args.workers:
                        rate = statistics.median(cell(url, workers, args.trials, strategy) for _ in range(args.repeats))
                        results[f"{name} {strategy} {workers}"] = rate
                        rates.append(f"{workers} worker{'s' if workers > 1 else ''}: {rate:.0f}/min")
                    print(f"  {name}, {strategy}: " + ", ".join(rates), flush=True)
        finally:
            if server is not None:
                server.stop()
    return results


if __name__ == "__main__":
    main()
