"""Reading a long run: 100 000 steps x 30 layers (every statistic at every step, a 310 MB store).

Times ``dg.findings`` and ``dg.report`` and their peak memory, each in a fresh process (peak RSS
is per process), interleaved with the baselines and repeated (median). The baselines are how the
first release read a run: the whole ``layer_stats()`` table into pandas, then the rules on it (and
for the report its pivots, without the plotting: a lower bound of what it cost).
A second copy of the store without the ``layers`` table and the NaN/Inf index stands for a run
written by that release.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.report import synthetic_run

CHILD = r"""
import json, resource, sys, time
import diagnose as dg
from diagnose.findings import evaluate
from diagnose.findings.base import RunData
what, run_dir, out = sys.argv[1:4]
dg.load_run, dg.findings, dg.report  # import what each case needs before the clock starts (lazy names)
start = time.perf_counter()
if what == "full_read_findings":   # the first release: everything into pandas, then the rules
    run = dg.load_run(run_dir)
    n = len(evaluate(RunData(run.layer_stats(), run.scalars(), run.meta, run.scalar("loss"))).findings)
elif what == "full_read_report":   # the reads of the first release's report (no plotting: a lower bound)
    run = dg.load_run(run_dir)
    stats, scalars = run.layer_stats(), run.scalars()
    n = len(evaluate(RunData(stats, scalars, run.meta, run.scalar("loss"))).findings)
    for column in ("grad_norm", "update_ratio", "act_std", "dead_frac", "saturated_frac"):
        stats.pivot_table(index="step", columns="layer", values=column, aggfunc="last")
    stats.groupby("layer").last()
elif what == "findings":
    n = len(dg.findings(run_dir))
elif what == "report":
    n = dg.report(run_dir, out=out).stat().st_size
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb()}))
"""

# Peak RSS of this process: VmHWM (reset by exec; ru_maxrss on Linux keeps the parent's peak
# across fork + exec, which would report the benchmark's own memory).
PEAK = r"""
import resource
def peak_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
CHILD = PEAK + CHILD
# what the libraries a report loads take before any run is read
IMPORT_ONLY = PEAK + "import json, diagnose as dg\ndg.report, dg.findings\nprint(json.dumps({'peak_mb': peak_mb()}))"


def _measure(what: str, run_dir: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(run_dir), str(out)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def legacy_copy(run_dir: Path, target: Path) -> Path:
    """The store as the first release wrote it: no ``layers`` table, no NaN/Inf index."""
    shutil.copytree(run_dir, target)
    with sqlite3.connect(target / "run.sqlite") as conn:
        conn.execute("DROP TABLE layers")
        conn.execute("DROP INDEX layer_stats_nonfinite")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "long"
        synthetic_run(run_dir, args.steps, args.layers)
        legacy = legacy_copy(run_dir, Path(tmp) / "legacy")
        size = (run_dir / "run.sqlite").stat().st_size / 1e6
        cases = [("full_read_findings", run_dir), ("full_read_report", run_dir), ("findings", run_dir),
                 ("report", run_dir), ("findings", legacy), ("report", legacy)]
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.repeats):  # interleaved: machine noise hits every case alike
            for what, path in cases:
                results.setdefault((what, path.name), []).append(_measure(what, path, Path(tmp) / "r.html"))
        imports = json.loads(subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True,
                                            check=True).stdout)["peak_mb"]
    med = {k: (statistics.median(r["seconds"] for r in v), max(r["peak_mb"] for r in v)) for k, v in results.items()}
    print(f"long run: {args.steps} steps x {args.layers} layers, {size:.0f} MB store; median of {args.repeats}, "
          f"peak RSS per process (the libraries alone: {imports:.0f} MB)")
    for what in ("findings", "report"):
        base_s, base_mb = med[(f"full_read_{what}", "long")]
        reads = "" if what == "findings" else ", reads only"
        print(f"  {what}: the first release's way (whole table into pandas){reads}: {base_s:.2f} s, {base_mb:.0f} MB")
        for store, label in (("long", "this release"), ("legacy", "a store the first release wrote")):
            seconds, mb = med[(what, store)]
            print(f"    {label:34s} {seconds:6.2f} s  {mb:6.0f} MB   {base_s / seconds:4.1f}x faster "
                  "(targets: < 1024 MB and >= 3x)")

if __name__ == "__main__":
    main()
