"""`make bench`: run every benchmark in this folder, each printing its ratios."""

from benchmarks import compare, explain, explain_tokens, long_run, overhead, preflight, report, trainer_overhead

if __name__ == "__main__":
    overhead.main([])
    trainer_overhead.main([])
    explain.main([])
    explain_tokens.main([])
    report.main([])
    compare.main([])
    preflight.main([])
    long_run.main([])
