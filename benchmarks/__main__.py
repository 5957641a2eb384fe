"""`make bench`: run every benchmark in this folder, each printing its ratios."""

from benchmarks import explain, long_run, overhead, report, trainer_overhead

if __name__ == "__main__":
    overhead.main([])
    trainer_overhead.main([])
    explain.main([])
    report.main([])
    long_run.main([])
