"""`make bench`: run every benchmark in this folder, each printing its ratios."""

from benchmarks import (
    compare,
    explain,
    explain_tokens,
    histograms,
    long_run,
    overhead,
    preflight,
    report,
    trainer_overhead,
    tune_storage,
)

if __name__ == "__main__":
    overhead.main([])
    histograms.main([])
    trainer_overhead.main([])
    explain.main([])
    explain_tokens.main([])
    report.main([])
    compare.main([])
    preflight.main([])
    long_run.main([])
    tune_storage.main([])
